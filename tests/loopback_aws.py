"""AWS on loopback, for the tests and scripts/bench alike: moto's server, the environment that points every AWS
client at it and nowhere else, and which AWS call an HTTP request is (for the proxies that count or break them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
DEFAULT_BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"  # the SDK's and cloudtrain's default bucket
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key-do-not-print"  # tests check that no output shows it

_SIGV4_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
_MOTO_MAIN = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()  # serve until the parent closes this pipe (or dies)
server.stop()
"""


class MotoServer:
    """moto's server on 127.0.0.1 and a free port, in a child process (its GIL is not the caller's); it exits
    when `close` is called or the parent goes away."""

    def __init__(self, env: Mapping[str, str] | None = None, python: str | os.PathLike[str] = sys.executable) -> None:
        self._proc = subprocess.Popen(
            [str(python), "-c", _MOTO_MAIN],
            env=dict(os.environ if env is None else env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C reaches the parent, which ends it
            text=True,
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.close()
            raise RuntimeError(f"moto's server did not start (exit code {self._proc.returncode})")

    def reset(self) -> None:
        """Empty every service (moto's own API)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=30)

    def close(self) -> None:
        stdin: IO[str] | None = self._proc.stdin
        if stdin is not None:
            with suppress(OSError):
                stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def aws_env(endpoint: str, nowhere: Path) -> dict[str, str]:
    """The AWS_* settings that aim every AWS client (boto3, the AWS CLI, the SDK) at `endpoint` only: dummy keys,
    one region, no instance-metadata look-ups (that address is off loopback), and config files that do not
    exist (in the folder `nowhere`), so a developer's ~/.aws never leaks in."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(nowhere / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere / "credentials"),
    }


def client(service: str, endpoint: str, region: str = REGION) -> Any:
    """A boto3 client straight to `endpoint`, whatever the environment says (traffic that is not under test)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


# --- which AWS call a request is ------------------------------------------------------------------------------


def service_of(authorization: str) -> str:
    """The service a request is signed for (`s3`, `sagemaker`, `sts`, `logs` ...), from its SigV4 credential
    scope; '' if unsigned."""
    m = _SIGV4_SCOPE.search(authorization)
    return m.group(1) if m else ""


def operation_of(service: str, method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> str:
    """The API operation of a request: X-Amz-Target for JSON services, the path for rpc-v2-cbor ones, Action
    for query ones (STS, IAM) where the query or `body` holds it, and S3's inferred from method, path and
    query. `headers` has lower-case names; `target` is the path and query."""
    if amz_target := headers.get("x-amz-target"):
        return amz_target.rsplit(".", 1)[-1]
    parts = urlsplit(target)
    if parts.path.startswith("/service/") and "/operation/" in parts.path:  # smithy rpc-v2-cbor
        return parts.path.rsplit("/", 1)[-1]
    if service != "s3":
        action = parse_qs(body.decode("utf-8", "replace")).get("Action") or parse_qs(parts.query).get("Action")
        return action[0] if action else method
    query = parse_qs(parts.query, keep_blank_values=True)
    key = parts.path.strip("/").partition("/")[2]
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        if not key:
            return "CreateBucket"
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "POST" and key:
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "GET":
        return ("ListParts" if "uploadId" in query else "GetObject") if key else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    return "AbortMultipartUpload" if method == "DELETE" and "uploadId" in query else method

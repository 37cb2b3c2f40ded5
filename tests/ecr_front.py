"""ECR in front of a real registry on loopback: moto's ECR API, whose repositories live in a `docker-registry`.

moto answers ECR's API (CreateRepository, GetAuthorizationToken, ...) but names every repository
`<account>.dkr.ecr.<region>.amazonaws.com/<name>`, a host that is not on this machine, and knows nothing of
what is pushed. This front, an HTTP endpoint on 127.0.0.1 that passes every request to moto, makes the pair
behave as ECR does:

- ECR's answers name the loopback registry (`127.0.0.1:<port>/<name>`) where moto names its made-up host;
- DescribeImages first copies into moto every tag the registry holds for that repository (with its digest),
  so "is this tag in ECR?" is answered by what was really pushed.

The registry's password is the one moto's GetAuthorizationToken hands out, so `docker login` with ECR's
token is checked by the registry itself.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.docker_engine import Registry

ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921."
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class EcrFront:
    """`url` is the endpoint to give cloudtrain (AWS_ENDPOINT_URL); everything not ECR passes unchanged."""

    def __init__(self, moto_url: str, registry: Registry) -> None:
        self.moto_url = moto_url.rstrip("/")
        self.registry = registry
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue`, as S3 uploads send it

            def do_GET(self) -> None:
                front.forward(self)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> EcrFront:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        target = handler.headers.get("X-Amz-Target") or ""
        if target == ECR_TARGET + "DescribeImages":
            self._sync_tags(json.loads(body or b"{}").get("repositoryName", ""), handler.headers)
        # http.client, not urllib: urllib would add a form Content-Type to a body sent without one.
        moto = urlsplit(self.moto_url)
        conn = http.client.HTTPConnection(moto.hostname or "127.0.0.1", moto.port, timeout=120)
        try:
            skip = ("host", "content-length", "connection", "transfer-encoding", "expect")
            sent = {k: v for k, v in handler.headers.items() if k.lower() not in skip}
            conn.request(handler.command, handler.path, body=body or None, headers=sent)
            response = conn.getresponse()
            status, headers, data = response.status, response.headers, response.read()
        finally:
            conn.close()
        if target.startswith(ECR_TARGET):
            data = re.sub(rb"[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com", self.registry.host.encode(), data)
        handler.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                handler.send_header(name, value)
        head = handler.command == "HEAD"  # no body; its Content-Length is the object's
        handler.send_header("Content-Length", headers.get("Content-Length", "0") if head else str(len(data)))
        handler.end_headers()
        if not head:
            handler.wfile.write(data)

    def _sync_tags(self, repository: str, headers: Any) -> None:
        """Put every tag the registry has for `repository` into moto's ECR, as a push to ECR would have."""
        import boto3

        if not repository:
            return
        ecr = boto3.client("ecr", endpoint_url=self.moto_url, region_name=_region(headers))
        for tag in self.registry.tags(repository):
            manifest = self.registry.manifest(repository, tag)
            if manifest is None:
                continue
            try:
                ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)
            except ecr.exceptions.ImageAlreadyExistsException:
                pass
            except ecr.exceptions.RepositoryNotFoundException:
                return


def _region(headers: Any) -> str:
    """The region of a SigV4-signed request (its credential scope)."""
    found = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", headers.get("Authorization") or "")
    return found.group(1) if found else "us-east-1"


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request's body, sent with a Content-Length or chunked (botocore's streaming uploads)."""
    if "chunked" not in (handler.headers.get("Transfer-Encoding") or "").lower():
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    chunks = []
    while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()  # the CRLF after each chunk
    while handler.rfile.readline().strip():  # trailers, up to the blank line
        pass
    return b"".join(chunks)

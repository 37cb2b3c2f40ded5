"""boto3 sessions and clients for cloudtrain, and the translation of AWS failures into cloudtrain errors.

boto3 is imported inside functions only: `cloudtrain --help` must not pay its ~0.6 s import. Settings
come, strongest first, from the CLI, the spec's `aws:` section, then whatever boto3 itself reads
(`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, config files), which we leave to boto3 rather than
re-implement. Every client has adaptive retries and botocore's parameter validation (never disabled).

Failures to reach AWS at all (no credentials, no region, endpoint unreachable, credentials rejected)
become one-line `BackendUnavailable` errors (exit 3); other AWS errors become one-line
`CloudtrainError`s. Messages never carry secrets: they are built from error codes and endpoint hosts,
and scrubbed of the credential values found in the environment.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cloudtrain import __version__
from cloudtrain.errors import BackendUnavailable, CloudtrainError, UserError

if TYPE_CHECKING:
    from botocore.config import Config

    from cloudtrain.spec import AwsSpec

RETRIES = {"mode": "adaptive", "max_attempts": 10}
# The reachability probe fails fast: with adaptive retries a closed port would take about a minute
# of backoff to report, which is no way to tell a user the endpoint is wrong.
PROBE_RETRIES = {"mode": "standard", "max_attempts": 2}

_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AuthFailure",
        "RequestExpired",
        "InvalidToken",
    }
)
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@dataclass(frozen=True)
class AwsSettings:
    """Where and as whom to talk to AWS; None means "let boto3 decide" (env vars, config files)."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None

    def over(self, weaker: AwsSettings) -> AwsSettings:
        """These settings, with gaps filled from weaker ones (CLI over spec over environment)."""
        return AwsSettings(
            region=self.region or weaker.region,
            profile=self.profile or weaker.profile,
            endpoint_url=self.endpoint_url or weaker.endpoint_url,
        )

    @classmethod
    def from_spec(cls, aws: AwsSpec | None) -> AwsSettings:
        if aws is None:
            return cls()
        return cls(region=aws.region, profile=aws.profile, endpoint_url=aws.endpoint_url)


def client_config(*, probe: bool = False, max_pool_connections: int = 16) -> Config:
    """The botocore Config of every cloudtrain client (parameter validation stays on)."""
    from botocore.config import Config

    return Config(
        retries=dict(PROBE_RETRIES if probe else RETRIES),  # type: ignore[arg-type]
        connect_timeout=5 if probe else 10,
        read_timeout=20 if probe else 60,
        max_pool_connections=max_pool_connections,
        user_agent_extra=f"cloudtrain/{__version__}",
        parameter_validation=True,
    )


@dataclass
class AwsSession:
    """One boto3 session with its clients; probes reachability (STS GetCallerIdentity) once, on first use.

    Instances hold their own clients and caller identity: there is no module-level state.
    """

    settings: AwsSettings = field(default_factory=AwsSettings)
    _session: Any = field(default=None, init=False, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _account: str | None = field(default=None, init=False, repr=False)

    @property
    def boto_session(self) -> Any:
        if self._session is None:
            import boto3
            from botocore.exceptions import ProfileNotFound

            try:
                self._session = boto3.Session(region_name=self.settings.region, profile_name=self.settings.profile)
            except ProfileNotFound:
                raise UserError(f"AWS profile {self.settings.profile!r} not found in the AWS config files") from None
        return self._session

    @property
    def region(self) -> str:
        region = self.boto_session.region_name
        if not region:
            raise BackendUnavailable("no AWS region: set aws.region in the spec, --region, or AWS_REGION")
        return region

    @property
    def where(self) -> str:
        """Where requests go, for messages: "AWS at <custom endpoint>" or "AWS in <region>"."""
        url = self.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if url:
            return f"AWS at {_display_url(url)}"
        try:
            region = self.boto_session.region_name
        except CloudtrainError:
            region = None
        return f"AWS in {region}" if region else "AWS"

    def _make_client(self, service: str, config: Config) -> Any:
        with translate_errors(self.where):
            return self.boto_session.client(
                service, region_name=self.region, endpoint_url=self.settings.endpoint_url, config=config
            )

    def client(self, service: str) -> Any:
        """A cached client of the service; the first one probes that AWS is reachable at all."""
        if service not in self._clients:
            self.account_id()
            self._clients[service] = self._make_client(service, client_config())
        return self._clients[service]

    def account_id(self) -> str:
        """The caller's account, from STS with a fail-fast client; also the reachability probe."""
        if self._account is None:
            sts = self._make_client("sts", client_config(probe=True))
            with translate_errors(self.where, "STS GetCallerIdentity"):
                self._account = str(sts.get_caller_identity()["Account"])
        return self._account


def aws_configured(environ: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """Whether AWS looks configured here (credentials or profile in env, or AWS config files); no network.

    Cheap on purpose: it only chooses the default backend, so it must not import boto3.
    """
    env = os.environ if environ is None else environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if any(
        env.get(name)
        for name in (
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
    ):
        return True
    base = home if home is not None else Path(env.get("HOME") or Path.home())
    files = [
        Path(env["AWS_SHARED_CREDENTIALS_FILE"])
        if env.get("AWS_SHARED_CREDENTIALS_FILE")
        else base / ".aws/credentials",
        Path(env["AWS_CONFIG_FILE"]) if env.get("AWS_CONFIG_FILE") else base / ".aws/config",
    ]
    return any(f.is_file() and f.stat().st_size > 0 for f in files)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace, drop secrets, shorten: error text shown to users is one line."""
    text = " ".join(str(text).split())
    for name in _SECRET_ENV:
        secret = os.environ.get(name)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    text = re.sub(r"(https?://)[^/@\s]+@", r"\1", text)  # userinfo in URLs
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _display_url(url: str) -> str:
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", ""))


def translate(exc: BaseException, where: str = "AWS", what: str | None = None) -> CloudtrainError | None:
    """The cloudtrain error for a botocore/boto3 exception, or None if it is not one of theirs."""
    from botocore import exceptions as bx

    if isinstance(exc, CloudtrainError):
        return exc
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return BackendUnavailable(
            "no AWS credentials found: configure them (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY) or use the local backend"
        )
    if isinstance(exc, (bx.CredentialRetrievalError, bx.TokenRetrievalError, bx.SSOError)):
        return BackendUnavailable(f"AWS credentials could not be loaded ({type(exc).__name__}); log in again")
    if isinstance(exc, bx.NoRegionError):
        return BackendUnavailable("no AWS region: set aws.region in the spec, --region, or AWS_REGION")
    if isinstance(exc, bx.ProfileNotFound):
        return UserError(one_line(f"AWS profile not found: {exc}"))
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ProxyConnectionError)):
        return BackendUnavailable(f"cannot reach {where}: {_reason(exc)}")
    if isinstance(exc, (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.SSLError, bx.HTTPClientError)):
        return BackendUnavailable(f"lost the connection to {where}: {_reason(exc)}")
    if isinstance(exc, bx.ParamValidationError):
        return UserError(one_line(f"invalid AWS request{' for ' + what if what else ''}: {exc}"))
    if isinstance(exc, bx.ClientError):
        code, message = error_code(exc), error_message(exc)
        operation = getattr(exc, "operation_name", None) or what or "request"
        if code in _CREDENTIAL_CODES:
            return BackendUnavailable(f"{where} rejected the credentials ({code})")
        if code in ("AccessDenied", "AccessDeniedException", "403"):
            return CloudtrainError(one_line(f"AWS denied {operation}: {message or code}"))
        return CloudtrainError(
            one_line(f"AWS {operation} failed: {code}: {message}" if message else f"AWS {operation} failed: {code}")
        )
    if isinstance(exc, bx.BotoCoreError):
        return CloudtrainError(one_line(f"AWS {what or 'request'} failed: {exc}"))
    return None


def _reason(exc: BaseException) -> str:
    """A short cause ("connection refused") without the full URL and stack of botocore's message."""
    text = str(getattr(exc, "kwargs", {}).get("error", "") or exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("timed out", "timed out"),
        ("Network is unreachable", "network unreachable"),
        ("No route to host", "no route to host"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ):
        if needle in text:
            return reason
    return one_line(type(exc).__name__)


@contextlib.contextmanager
def translate_errors(where: str = "AWS", what: str | None = None) -> Iterator[None]:
    """Re-raise botocore failures as cloudtrain errors (one line, no traceback chain)."""
    try:
        yield
    except CloudtrainError:
        raise
    except Exception as exc:
        mapped = translate(exc, where, what)
        if mapped is None:
            raise
        raise mapped from None

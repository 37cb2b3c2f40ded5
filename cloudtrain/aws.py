"""botocore sessions and clients for cloudtrain, and AWS's failures as cloudtrain's one-line errors.

botocore is imported inside functions only (`cloudtrain --help` must not pay for it); whatever a `Settings`
leaves unset is botocore's own chain. Not reaching AWS is `BackendUnavailable` (exit 3), a refusal `AwsRefused`
(exit 5); messages never carry secrets. Why there is no reachability probe, and how retries are split:
docs/architecture.md, "Talking to AWS".
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cloudtrain import __version__
from cloudtrain.errors import AwsBusy, AwsRefused, BackendUnavailable, CloudtrainError, UserError, one_line, quoted
from cloudtrain.runtime.buckets import default_bucket_owner
from cloudtrain.settings import Settings

if TYPE_CHECKING:
    from botocore.config import Config

# botocore reads AWS_DEFAULT_REGION (or the profile's region), not AWS_REGION (that is the aws CLI v2's).
NO_REGION = "no AWS region: pass --region, set CLOUDTRAIN_REGION, aws.region in the spec, or AWS_DEFAULT_REGION"
RETRIES = {"mode": "adaptive", "max_attempts": 10}
# Before a session's first answer, a connection failure is tried this often in all: with adaptive retries
# a closed port would take about a minute of backoff to report, no way to tell a user the endpoint is wrong.
CONNECT_ATTEMPTS = 2
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
# An answer cut short (connection dropped mid-way) is tried this many times in all, with full-jitter
# backoff from BACKOFF_S doubling up to BACKOFF_MAX_S, then reported as a lost connection (exit 3).
BODY_ATTEMPTS = 5
BACKOFF_S = 0.25
BACKOFF_MAX_S = 4.0

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
        "InvalidSignatureException",
    }
)
# Throttling (botocore's own list, S3's SlowDown) and AWS failing inside: transient, a wait asks again later.
BUSY_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
    }
)
# A request signed with a clock more than 5 minutes off AWS's is refused with one of these (SigV4's window).
SKEW_CODES = frozenset({"RequestTimeTooSkewed", "InvalidSignatureException", "SignatureDoesNotMatch", "RequestExpired"})
SKEW_WINDOW_S = 300
_SIGV4_TIME = r"(\d{8}T\d{6}Z)"
# SigV4's messages: "Signature expired: <request time> is now earlier than <AWS's time - 5 min> (... - 5 min.)"
# and "Signature not yet current: <request time> is still later than <AWS's time + 15 min> (... + 15 min.)"
_EXPIRED = re.compile(rf"{_SIGV4_TIME} is now earlier than {_SIGV4_TIME}")
_NOT_YET = re.compile(rf"{_SIGV4_TIME} is still later than {_SIGV4_TIME}")


# AWS's request quotas per account and Region for the calls a follower repeats (CloudWatch Logs quotas page,
# docs/quotas.md): every stream, host, job and follower of the account shares them. A cloudtrain process keeps
# to BUDGET_SHARE of each, leaving the rest to the other processes and people of the account.
ACCOUNT_TPS = {"GetLogEvents": 10.0, "DescribeLogStreams": 5.0, "FilterLogEvents": 5.0}
BUDGET_SHARE = 0.5
THROTTLED_MAX_S = 30.0  # the longest pause of a budget after AWS throttled it (it doubles from BACKOFF_S)


@dataclass
class RateBudget:
    """A token bucket for one API of one account and Region: `take()` blocks until a call fits under `rate`
    (calls a second, `burst` at once). Shared by every thread of a process; `throttled()` pauses it (AWS said
    slow down: exponential backoff, full jitter), `answered()` ends the backoff. Counts the calls it let through."""

    rate: float
    burst: float = 1.0
    calls: int = 0
    _tokens: float = field(default=1.0, init=False, repr=False)
    _stamp: float = field(default_factory=time.monotonic, init=False, repr=False)
    _paused_until: float = field(default=0.0, init=False, repr=False)
    _strikes: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def take(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                wait = max(self._paused_until - now, (1.0 - self._tokens) / self.rate)
                if wait <= 0:
                    self._tokens -= 1.0
                    self.calls += 1
                    return
            time.sleep(wait)

    def throttled(self) -> float:
        """AWS throttled a call: pause every caller for a backoff that doubles with each throttle in a row."""
        with self._lock:
            self._strikes += 1
            pause = random.uniform(BACKOFF_S, min(THROTTLED_MAX_S, BACKOFF_S * 2**self._strikes))
            self._paused_until = max(self._paused_until, time.monotonic() + pause)
            return pause

    def answered(self) -> None:
        with self._lock:
            self._strikes = 0


def client_config(*, max_pool_connections: int = 16) -> Config:
    """The botocore Config of every cloudtrain client (parameter validation stays on)."""
    from botocore.config import Config

    retries = dict(RETRIES)
    if (attempts := os.environ.get("AWS_MAX_ATTEMPTS", "")).isdigit() and int(attempts) > 0:
        retries["max_attempts"] = int(attempts)  # botocore's own setting, which an explicit Config would override
    return Config(
        retries=retries,  # type: ignore[arg-type]
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_pool_connections=max_pool_connections,
        user_agent_extra=f"cloudtrain/{__version__}",
        parameter_validation=True,
    )


@dataclass
class AwsSession:
    """One botocore session with its clients (cached by service) and the caller's account (asked once).

    Instances hold their own clients, account and "has AWS answered yet": there is no module-level state.
    """

    settings: Settings = field(default_factory=lambda: Settings())
    _session: Any = field(default=None, init=False, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _account: str | None = field(default=None, init=False, repr=False)
    _answered: bool = field(default=False, init=False, repr=False)
    _budgets: dict[str, RateBudget] = field(default_factory=dict, init=False, repr=False)

    @property
    def boto_session(self) -> Any:
        if self._session is None:
            import botocore.session
            from botocore.exceptions import ProfileNotFound

            session = botocore.session.Session(profile=self.settings.aws_profile)
            try:
                if self.settings.aws_profile:
                    session.get_scoped_config()  # an unknown profile: said here, as one line
                if self.settings.region:
                    session.set_config_variable("region", self.settings.region)
            except ProfileNotFound:
                raise UserError(
                    f"AWS profile {quoted(self.settings.aws_profile)} not found in the AWS config files"
                ) from None
            session.register(
                "before-parameter-build.s3", expect_default_bucket_owner, unique_id="cloudtrain-expected-owner"
            )
            session.register("before-parse", _parse_cut_short_as_unavailable, unique_id="cloudtrain-parse-cut-short")
            session.register("needs-retry", _retry_cut_short, unique_id="cloudtrain-retry-cut-short")
            session.register("needs-retry", self._fail_fast, unique_id="cloudtrain-connect-fail-fast")
            self._session = session
        return self._session

    def _fail_fast(
        self, response: Any = None, caught_exception: BaseException | None = None, attempts: int = 1, **_: Any
    ) -> None:
        """A botocore `needs-retry` handler: give up on a connection failure before AWS ever answered.

        Raising ends the retries whatever the retry handler decided; once any answer came back, connection
        failures are taken as a flaky network and retried as usual.
        """
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if response is not None:
            self._answered = True
        elif isinstance(caught_exception, BotoConnectionError) and not self._answered and attempts >= CONNECT_ATTEMPTS:
            raise caught_exception

    @property
    def region(self) -> str:
        region = self.boto_session.get_config_variable("region")
        if not region:
            raise BackendUnavailable(NO_REGION)
        return region

    @property
    def where(self) -> str:
        """Where requests go, for messages: "AWS at <custom endpoint>" or "AWS in <region>"."""
        url = self.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if url:
            return f"AWS at {_display_url(url)}"
        try:
            region = self.boto_session.get_config_variable("region")
        except CloudtrainError:
            region = None
        return f"AWS in {region}" if region else "AWS"

    def client(self, service: str) -> Any:
        """A cached client of the service (no request is made to create it)."""
        if service not in self._clients:
            with translate_errors(self.where):
                self._clients[service] = self.boto_session.create_client(
                    service, region_name=self.region, endpoint_url=self.settings.endpoint_url, config=client_config()
                )
        return self._clients[service]

    def budget(self, operation: str) -> RateBudget:
        """The session's share of AWS's per-account quota for `operation` (see ACCOUNT_TPS): one per process
        whatever the number of jobs, hosts and streams it reads, since every one of them counts against it."""
        return self._budgets.setdefault(operation, RateBudget(ACCOUNT_TPS[operation] * BUDGET_SHARE))

    def account_id(self) -> str:
        """The caller's account (STS GetCallerIdentity, once per session)."""
        if self._account is None:
            sts = self.client("sts")
            with translate_errors(self.where, "STS GetCallerIdentity"):
                self._account = str(sts.get_caller_identity()["Account"])
        return self._account


def expect_default_bucket_owner(params: dict[str, Any], model: Any = None, **_: Any) -> None:
    """A botocore `before-parameter-build.s3` handler: every S3 request to a default-named bucket carries
    `ExpectedBucketOwner` (and a copy from one `ExpectedSourceBucketOwner`), as the sagemaker SDK sends it;
    S3 answers 403 when another account owns the bucket."""
    members = model.input_shape.members if model is not None and model.input_shape is not None else {}
    owner = default_bucket_owner(str(params.get("Bucket", "")))
    if owner and "ExpectedBucketOwner" in members:
        params.setdefault("ExpectedBucketOwner", owner)
    source = params.get("CopySource")
    source_bucket = source.get("Bucket", "") if isinstance(source, dict) else str(source or "").lstrip("/")
    source_owner = default_bucket_owner(source_bucket.split("/", 1)[0])
    if source_owner and "ExpectedSourceBucketOwner" in members:
        params.setdefault("ExpectedSourceBucketOwner", source_owner)


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt + 1: full jitter under an exponential cap."""
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt))


def _whole_body_read(operation: Any) -> bool:
    """Whether botocore reads this operation's response body whole (not GetObject's stream, nor a HEAD's none)."""
    return not (
        operation is None
        or operation.has_streaming_output
        or operation.has_event_stream_output
        or operation.http.get("method") == "HEAD"
    )


def _cut_short(headers: Mapping[str, str], body: bytes) -> bool:
    expected = headers.get("content-length", "")
    return expected.isdigit() and len(body) < int(expected)


def _parse_cut_short_as_unavailable(response_dict: dict[str, Any], operation_model: Any = None, **_: Any) -> None:
    """A botocore `before-parse` handler: a body cut short is not parsed (as invalid XML it fails, as partial
    JSON it passes for a result without its fields) but taken as a bodiless 503, for `_retry_cut_short`."""
    body = response_dict.get("body")
    if _whole_body_read(operation_model) and isinstance(body, bytes) and _cut_short(response_dict["headers"], body):
        response_dict["status_code"], response_dict["body"] = 503, b""


def _retry_cut_short(response: Any = None, operation: Any = None, attempts: int = 1, **_: Any) -> float | None:
    """A botocore `needs-retry` handler: retry a response whose body was cut short, then call it a lost connection.

    botocore reads bodies with urllib3's length check off, so a connection dropped mid-response (a FIN, or
    TLS closed without close_notify) is otherwise taken for a whole response. (GetObject's streamed body is
    not touched here: the SageMaker backend's downloader checks it as it reads.)
    """
    if response is None or not _whole_body_read(operation) or not _cut_short(response[0].headers, response[0].content):
        return None
    if attempts >= BODY_ATTEMPTS:
        from botocore.exceptions import ConnectionClosedError

        raise ConnectionClosedError(endpoint_url=response[0].url)
    return backoff(attempts)


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
        return BackendUnavailable(NO_REGION)
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
        if code in SKEW_CODES and (skew := clock_skew(exc)) is not None:
            return BackendUnavailable(skew)
        if code in _CREDENTIAL_CODES:
            return BackendUnavailable(f"{where} rejected the credentials ({code})")
        status = int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in BUSY_CODES or status >= 500:
            return AwsBusy(
                one_line(f"AWS {operation} failed: {code}: {message}" if message else f"AWS {operation} failed: {code}")
            )
        if code in ("AccessDenied", "AccessDeniedException", "403"):
            return AwsRefused(one_line(f"AWS denied {operation}: {message or code}"))
        return AwsRefused(
            one_line(f"AWS {operation} failed: {code}: {message}" if message else f"AWS {operation} failed: {code}")
        )
    if isinstance(exc, bx.BotoCoreError):
        return CloudtrainError(one_line(f"AWS {what or 'request'} failed: {exc}"))
    return None


def clock_offset(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds this machine's clock is ahead of AWS's (negative: behind), as an AWS refusal shows it: from the
    times SigV4's message quotes, else from the answer's Date header against the local clock; None if neither."""
    from calendar import timegm
    from email.utils import parsedate_to_datetime

    def epoch(stamp: str) -> float:
        return float(timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))

    message = error_message(exc)
    if m := _EXPIRED.search(message):  # the second time is AWS's now minus 5 minutes
        return epoch(m.group(1)) - (epoch(m.group(2)) + SKEW_WINDOW_S)
    if m := _NOT_YET.search(message):  # the second time is AWS's now plus 15 minutes
        return epoch(m.group(1)) - (epoch(m.group(2)) - 3 * SKEW_WINDOW_S)
    headers = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    try:
        if error.get("RequestTime") and error.get("ServerTime"):  # S3's RequestTimeTooSkewed carries both
            request, server = (parsedate_to_datetime(error[k]) for k in ("RequestTime", "ServerTime"))
            return (request - server).total_seconds()
        if headers.get("date"):
            return (time.time() if now is None else now) - parsedate_to_datetime(headers["date"]).timestamp()
    except (TypeError, ValueError):
        return None
    return None


def clock_skew(exc: BaseException) -> str | None:
    """The one line for a request refused because this machine's clock is off AWS's, with the offset measured;
    None when the refusal is not about time (a wrong secret key also gives SignatureDoesNotMatch)."""
    offset = clock_offset(exc)
    code = error_code(exc)
    if offset is None or abs(offset) < SKEW_WINDOW_S - 60:
        if code != "RequestTimeTooSkewed":
            return None
        return (
            "this machine's clock is more than 5 minutes off AWS's (RequestTimeTooSkewed): AWS refuses requests "
            "signed that far off; sync the clock (timedatectl set-ntp true, or chrony) and try again"
        )
    minutes, seconds = divmod(round(abs(offset)), 60)
    side = "ahead of" if offset > 0 else "behind"
    return (
        f"this machine's clock is {minutes}m{seconds:02d}s {side} AWS's ({code}): AWS refuses requests signed more "
        "than 5 minutes off; sync the clock (timedatectl set-ntp true, or chrony) and try again"
    )


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

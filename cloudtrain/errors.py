"""The few error types a user sees, and every exit code cloudtrain gives; the CLI renders each error as one
line and exits with its code (docs/ci.md: what a pipeline may rely on)."""

from __future__ import annotations

import re
from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code of `cloudtrain`, in one place."""

    OK = 0
    FAILED = 1  # a waited-for job failed or stopped, or anything else went wrong
    USER_ERROR = 2  # bad input: a spec, an argument, a file (and usage errors)
    UNAVAILABLE = 3  # the backend could not be reached
    TIMED_OUT = 4  # `--timeout` passed with the job still running
    REFUSED = 5  # AWS answered and refused
    INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C during a wait
    TERMINATED = 143  # 128 + SIGTERM: a cancelled CI run


class CloudtrainError(Exception):
    """Base of every error cloudtrain reports to a user (never with a traceback)."""

    exit_code: int = ExitCode.FAILED


class UserError(CloudtrainError):
    """Bad input: a spec, an argument, a file. Exit code 2."""

    exit_code = ExitCode.USER_ERROR


class SpecError(UserError):
    """A job spec is invalid; names the file, the line and the field."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str) -> None:
        self.file, self.line, self.field, self.message = file, line, field, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class JobNotFound(UserError):
    """No job of that name on the backend."""


class BackendUnavailable(CloudtrainError):
    """The backend (AWS endpoint, Docker engine, local store) could not be reached. Exit code 3."""

    exit_code = ExitCode.UNAVAILABLE


class AwsRefused(CloudtrainError):
    """AWS answered and refused a request (ValidationException, AccessDenied, ResourceLimitExceeded,
    throttling past every retry, a default bucket owned by another account). Exit code 5: a pipeline tells
    it apart from a job that ran and failed (1)."""

    exit_code = ExitCode.REFUSED


class AwsBusy(AwsRefused):
    """AWS throttled the request, or failed inside (5xx), past every retry: transient. A wait backs off and asks
    again instead of ending; elsewhere it is exit code 5 like any refusal."""


class JobFailed(CloudtrainError):
    """A waited-for job ended Failed or Stopped. Exit code 1."""

    exit_code = ExitCode.FAILED


class WaitTimeout(CloudtrainError):
    """`--timeout` passed with the job still running (it is not the user's mistake). Exit code 4."""

    exit_code = ExitCode.TIMED_OUT


class JobExists(UserError):
    """A job of that name exists already (SageMaker's ResourceInUse)."""

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        super().__init__(f"a job named {quoted(job_name)} exists already")


def quoted(text: str, limit: int = 60) -> str:
    """`text` in quotes as Python writes it, cut to `limit` characters with its escapes counted.

    A user's value is shown this way in an error: one line of a terminal, however long the value is
    or however many control characters (each four to ten characters once escaped) it holds.
    """
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "..." + r[-1]


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace, drop secrets (the environment's AWS credentials, URL userinfo), shorten: error text
    shown to users is one line."""
    from cloudtrain.redact import scrub

    text = scrub(" ".join(str(text).split()))
    text = re.sub(r"(https?://)[^/@\s]+@", r"\1", text)  # userinfo in URLs
    return text if len(text) <= limit else text[: limit - 1] + "…"

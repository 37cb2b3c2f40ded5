"""What a secret looks like, and how it is kept out of everything cloudtrain shows or stores.

Two kinds of secret:

- the values of a job's environment variables and hyperparameters whose names look secret (`*_KEY`,
  `*token*`, `*secret*`, `*password*`, `*passwd*`, `*credential*`), and the password in any URL value
  (`postgres://user:PASSWORD@host/db`): wherever such a mapping is shown or stored (the spec's
  `environment` and `hyperparameters`, CreateTrainingJob's `Environment` and `HyperParameters`), those
  values become `***`; in text from a job (its log lines, its failure reason) they are masked too, a value
  under 8 characters only where it stands as a word of its own (shorter ones would blank out words);
- the AWS credentials in this process's environment: their values are scrubbed from any text shown.

Only what is shown or stored is redacted; what is sent (the request to AWS, the workers' environment)
keeps the real values. Stdlib only: `cloudtrain --help` imports nothing heavy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
# `max_tokens` or TOKENIZERS_PARALLELISM are not secrets: "token" counts as a word of the name only.
SECRET_NAME = re.compile(r"_KEY$|(^|[_-])TOKEN($|[_-])|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
ENVIRONMENT_FIELDS = frozenset({"environment", "Environment"})  # the spec's, and CreateTrainingJob's
SECRET_FIELDS = ENVIRONMENT_FIELDS | {"hyperparameters", "HyperParameters"}
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# A scheme starts only where a run of scheme characters starts (the look-behind): tried at every position of a
# long run, the pattern was quadratic, and it runs on every value cloudtrain stores.
URL_PASSWORD = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@/\s]+)(?=@)"
)
_MIN_SCRUBBED = 8  # shorter values are masked only as words of their own
_MIN_WORD_SCRUBBED = 4  # and still shorter ones not at all: `1` or `abc` would blank out ordinary text


def is_secret_name(name: str) -> bool:
    """Whether an environment variable (or hyperparameter) of this name holds a secret."""
    return bool(SECRET_NAME.search(name))


def redact_environment(environment: Mapping[str, Any]) -> dict[str, Any]:
    """A copy whose secret-looking entries' values are `***`, and URL values without their password."""
    return {k: REDACTED if is_secret_name(str(k)) else without_url_password(v) for k, v in environment.items()}


def without_url_password(value: Any) -> Any:
    """A string value with the password of any URL in it as `***` (`http://bob:***@host`); others as they are."""
    return URL_PASSWORD.sub(rf"\g<head>{REDACTED}", value) if isinstance(value, str) else value


def secrets_of(mapping: Mapping[str, Any]) -> set[str]:
    """The secret values of an environment or hyperparameters mapping: secret-named entries', URL passwords."""
    values = {str(v) for k, v in mapping.items() if is_secret_name(str(k)) and v not in (None, "")}
    values.update(m.group("password") for v in mapping.values() for m in URL_PASSWORD.finditer(str(v)))
    return values


def mask(text: str, secrets: list[str]) -> str:
    """text with each secret (longest first) as `***`; one under 8 characters only where it is a word of its own."""
    for value in secrets:
        if len(value) >= _MIN_SCRUBBED:
            text = text.replace(value, REDACTED)
        elif len(value) >= _MIN_WORD_SCRUBBED and value in text:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", REDACTED, text)
    return text


def credentials(environ: Mapping[str, str] | None = None) -> list[str]:
    """The AWS credential values in the environment, longest first."""
    env = os.environ if environ is None else environ
    values = {env[name] for name in CREDENTIAL_VARIABLES if len(env.get(name) or "") >= _MIN_SCRUBBED}
    return sorted(values, key=len, reverse=True)


def secret_values(environ: Mapping[str, str] | None = None, *more: Mapping[str, Any]) -> list[str]:
    """The AWS credentials and the secrets (`secrets_of`) of the environment and of `more` mappings, longest first."""
    env = os.environ if environ is None else environ
    values = set(credentials(env))
    for mapping in (env, *more):
        values.update(v for v in secrets_of(mapping) if len(v) >= _MIN_WORD_SCRUBBED)
    return sorted(values, key=len, reverse=True)


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """text without the AWS credentials of the environment."""
    for value in credentials(environ):
        text = text.replace(value, REDACTED)
    return text


def redact(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of a JSON-like document fit to show: environment mappings redacted, credentials scrubbed from text."""
    secrets = credentials(environ)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            for value in secrets:
                node = node.replace(value, REDACTED)
            return node
        if isinstance(node, Mapping):
            return {
                k: walk(redact_environment(v) if k in SECRET_FIELDS and isinstance(v, Mapping) else v)
                for k, v in node.items()
            }
        if isinstance(node, (list, tuple)):
            return [walk(item) for item in node]
        return node

    return walk(data)

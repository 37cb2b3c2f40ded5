"""What a secret looks like, and how it is kept out of everything cloudtrain shows or stores.

Two kinds of secret:

- the values of a job's environment variables whose names look secret (`*_KEY`, `*_SECRET`, `*_TOKEN`,
  `*PASSWORD*`): wherever an environment mapping is shown or stored (the spec's `environment`,
  CreateTrainingJob's `Environment`), those values become `***`;
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
SECRET_NAME = re.compile(r"(_KEY|_SECRET|_TOKEN)$|PASSWORD", re.IGNORECASE)
ENVIRONMENT_FIELDS = frozenset({"environment", "Environment"})  # the spec's, and CreateTrainingJob's
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_MIN_SCRUBBED = 8  # shorter values would blank out ordinary words


def is_secret_name(name: str) -> bool:
    """Whether an environment variable of this name holds a secret."""
    return bool(SECRET_NAME.search(name))


def redact_environment(environment: Mapping[str, Any]) -> dict[str, Any]:
    """A copy whose secret-looking variables' values are `***`."""
    return {k: REDACTED if is_secret_name(str(k)) else v for k, v in environment.items()}


def credentials(environ: Mapping[str, str] | None = None) -> list[str]:
    """The AWS credential values in the environment, longest first."""
    env = os.environ if environ is None else environ
    values = {env[name] for name in CREDENTIAL_VARIABLES if len(env.get(name) or "") >= _MIN_SCRUBBED}
    return sorted(values, key=len, reverse=True)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The AWS credentials and every secret-looking variable's value in the environment, longest first."""
    env = os.environ if environ is None else environ
    values = set(credentials(env))
    values.update(v for k, v in env.items() if is_secret_name(k) and len(v) >= _MIN_SCRUBBED)
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
                k: walk(redact_environment(v) if k in ENVIRONMENT_FIELDS and isinstance(v, Mapping) else v)
                for k, v in node.items()
            }
        if isinstance(node, (list, tuple)):
            return [walk(item) for item in node]
        return node

    return walk(data)

"""Warnings about a valid spec: where AWS's own container code treats it other than its author would expect.

Each is one line naming the field; `validate` and `submit` print them and carry on (the job can still run).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cloudtrain.errors import quoted

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

# What a POSIX shell passes through as one word unchanged (shlex.quote's safe characters); "" is dropped.
_SHELL_SAFE = re.compile(r"^[\w@%+=:,./-]+$", re.ASCII)
FORCED_LOG_LEVEL = "1"


def spec_warnings(spec: JobSpec) -> list[str]:
    """The spec's traps on AWS's TensorFlow images, each one line starting with the field."""
    warnings = []
    if spec.image.kind != "build" and not spec.code.entry_point.endswith(".sh"):
        for name, value in spec.hyperparameters.items():
            if isinstance(value, str) and not _SHELL_SAFE.match(value):
                warnings.append(
                    f"hyperparameters.{name}: {quoted(value)} has spaces or shell characters; AWS's TensorFlow images "
                    "(sagemaker-training 4.8.3) run the command line through a shell, so the script gets it split "
                    "or interpreted"
                )
    level = spec.environment.get("TF_CPP_MIN_LOG_LEVEL")
    if level is not None and level.strip() != FORCED_LOG_LEVEL:
        warnings.append(
            f"environment.TF_CPP_MIN_LOG_LEVEL: AWS's TensorFlow toolkit (and cloudtrain's launcher, to match it) sets "
            f"it to {FORCED_LOG_LEVEL} whatever the spec says; set it in the script before importing TensorFlow"
        )
    return warnings

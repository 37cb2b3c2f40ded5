"""Backends behind one interface (`base.Backend`), and how a command picks one.

Imports are lazy: choosing the local backend never imports boto3, and `cloudtrain --help` imports
no backend at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloudtrain.errors import UserError, quoted

if TYPE_CHECKING:
    from cloudtrain.backends.base import Backend
    from cloudtrain.spec import JobSpec

BACKENDS = ("local", "sagemaker")


def cloudtrain_home() -> Path:
    """Where the local backend keeps job folders and the job record database."""
    return Path(os.environ.get("CLOUDTRAIN_HOME") or Path.home() / ".cloudtrain").expanduser()


@dataclass(frozen=True)
class AwsOptions:
    """AWS settings from the command line; each falls back to the spec, then to boto3's own chain."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None


def resolve_backend_name(explicit: str | None, spec: JobSpec | None = None, job: str | None = None) -> str:
    """Command line, then the spec, then the job's record, then sagemaker where AWS is configured, else local."""
    if explicit:
        if explicit not in BACKENDS:
            raise UserError(f"--backend: {quoted(explicit)} is not one of {', '.join(BACKENDS)}")
        return explicit
    if spec is not None and spec.backend:
        return spec.backend
    if job is not None:
        from cloudtrain.store import JobStore

        recorded = JobStore(cloudtrain_home()).backend_of(job)
        if recorded:
            return recorded
    from cloudtrain.aws import aws_configured

    return "sagemaker" if aws_configured() else "local"


def open_backend(
    name: str, *, spec: JobSpec | None = None, aws: AwsOptions = AwsOptions(), container: bool = False
) -> Backend:
    """The backend `name`; `container` (submit --container) runs local jobs inside their image."""
    if container and name != "local":
        raise UserError(f"--container runs the hosts in Docker on this machine: it needs --backend local, not {name}")
    if name == "local":
        from cloudtrain.backends.local import LocalBackend

        return LocalBackend(cloudtrain_home(), container=container)
    from cloudtrain.backends.sagemaker import SageMakerBackend

    section = spec.aws if spec is not None else None
    return SageMakerBackend(
        region=aws.region or (section.region if section else None),
        profile=aws.profile or (section.profile if section else None),
        endpoint_url=aws.endpoint_url or (section.endpoint_url if section else None),
        role_arn=aws.role_arn or (section.role_arn if section else None),
    )

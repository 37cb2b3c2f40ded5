"""Backends behind one interface (`base.Backend`); `open_backend` is the only place that names one.

Imports are lazy: the local backend never imports boto3, and `cloudtrain --help` imports no backend at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudtrain.errors import UserError

if TYPE_CHECKING:
    from cloudtrain.backends.base import Backend
    from cloudtrain.settings import Settings


def open_backend(settings: Settings) -> Backend:
    """The backend the settings name, holding them; `container` (submit --container) runs local jobs in their image."""
    if settings.container and settings.backend != "local":
        raise UserError(
            f"--container runs the hosts in Docker on this machine: it needs --backend local, not {settings.backend}"
        )
    if settings.backend == "local":
        from cloudtrain.backends.local.backend import LocalBackend

        return LocalBackend(settings.home, container=settings.container, settings=settings)
    from cloudtrain.backends.sagemaker.backend import SageMakerBackend

    return SageMakerBackend(settings)

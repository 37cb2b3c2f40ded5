"""The test SageMaker control plane's custom-image jobs, run in their image where a Docker engine is present.

tests/sagemaker_control_plane.py runs every job under this Python with the local runner. Given an
`ImageJobs` (`plane.images = ImageJobs(engine_env)`), a job whose TrainingImage the engine holds (an image
`cloudtrain build --push` made: `image.build` or `image.uri`) runs as SageMaker runs it instead: one
container per host from that image, command `train`, through cloudtrain's container runner. AWS's stock
images are never in a test engine, so those jobs keep running as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtrain.backends.local.container_runner import MODULE
from cloudtrain.backends.local.containers import ContainerPlan, remove_all


@dataclass(frozen=True)
class ImageJobs:
    """The engine the control plane runs custom images on: `env` reaches it (DOCKER_HOST, DOCKER_CONFIG)."""

    env: Mapping[str, str]
    docker: str = "docker"

    def prepare(self, folder: Path, job: str, request: dict[str, Any], channels: list[Path]) -> None:
        """Mark the job folder as a container job when the engine holds its TrainingImage."""
        image = request["AlgorithmSpecification"]["TrainingImage"]
        docker = shutil.which(self.docker) or self.docker
        found = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Id}}", image],
            env={**os.environ, **self.env},
            capture_output=True,
            check=False,
        )
        if found.returncode != 0:
            return
        ContainerPlan(
            docker=docker,
            image=image,
            network=f"cloudtrain-{job}",
            gpus=False,
            user=None,
            read_only=tuple(str(c) for c in channels),
            environment=tuple(request.get("Environment", {})),
        ).save(folder)

    def runner_module(self, folder: Path) -> str | None:
        """The container runner's module for a container job, else None (the process runner)."""
        return MODULE if ContainerPlan.load(folder) is not None else None

    def remove(self, folder: Path, job: str) -> None:
        """After the runner was killed (a spot interruption, the plane closing): its containers and network go."""
        plan = ContainerPlan.load(folder)
        if plan is not None:
            remove_all(plan, job)

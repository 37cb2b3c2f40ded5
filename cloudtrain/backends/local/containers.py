"""Local jobs inside the job's image (`submit --backend local --container`): one container per host.

As SageMaker runs a training job: `docker run IMAGE train` per host, the host's folder mounted on /opt/ml,
and every host on a user-defined network of the job's own where it is reachable as `algo-N` (so TF_CONFIG's
`algo-N:8890` resolves, as on SageMaker). No docker compose: plain `docker` commands, which Docker's own
CLI and Debian's docker.io both have. The image is `image.uri`, or `image.build` built into the local engine
under its content-hash tag (`build.build_local`). `container.json` in the job folder marks a container job
and holds what the runner needs; everything it starts carries the label `cloudtrain.job=<job>`, so
`remove_all` finds it after any ending, even a killed runner.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloudtrain.backends.local.layout import MODEL_DIR
from cloudtrain.errors import UserError
from cloudtrain.files import atomic_path

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

CONTAINER_FILE = "container.json"
JOB_LABEL = "cloudtrain.job"
DOCKER_TIMEOUT_S = 60.0
REMOVE_WAIT_S = 60.0  # how long remove_all waits for another caller's removal of the same containers
LineCallback = Callable[[str], None]


@dataclass(frozen=True)
class ContainerPlan:
    """How the runner starts a job's containers (no secret here: environment values stay in its environment)."""

    docker: str  # the Docker CLI's path
    image: str
    network: str  # the job's own network, removed with the job
    gpus: bool  # `--gpus all`: GPU instance type and an engine with the NVIDIA runtime
    user: str | None  # "uid:gid" when cloudtrain does not run as root, so the job folder stays the user's
    read_only: tuple[str, ...]  # host paths mounted at the same path, read-only: data channels, the code tarball
    environment: tuple[str, ...]  # names of the spec's variables, passed by name (`-e NAME`)
    notes: tuple[str, ...] = ()  # said at the top of every host's log

    def save(self, job_dir: Path) -> None:
        with atomic_path(job_dir / CONTAINER_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, job_dir: Path) -> ContainerPlan | None:
        """The job's plan, or None for a job of processes."""
        try:
            data = json.loads((job_dir / CONTAINER_FILE).read_text())
        except FileNotFoundError:
            return None
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def container(self, host: str) -> str:
        return f"{self.network}-{host}"

    def run_argv(self, job_name: str, host: str, host_dir: Path, variables: Mapping[str, str]) -> list[str]:
        """`docker run` for one host: attached (its output is the host's log), removed when it ends."""
        argv = [self.docker, "run", "--rm", "--name", self.container(host), "--hostname", host]
        argv += ["--network", self.network, "--network-alias", host, "--label", f"{JOB_LABEL}={job_name}"]
        argv += ["-v", f"{host_dir}:/opt/ml"]
        shared = host_dir.parent.parent / MODEL_DIR  # --model_dir: every host's, at the path the argv names
        if shared.is_dir():
            argv += ["-v", f"{shared}:{shared}"]
        for path in self.read_only:
            argv += ["-v", f"{path}:{path}:ro"]
        if self.gpus:
            argv += ["--gpus", "all"]
        if self.user:
            argv += ["--user", self.user, "-e", "HOME=/tmp"]
        for name, value in variables.items():
            argv += ["-e", f"{name}={value}"]
        for name in self.environment:
            argv += ["-e", name]  # the value comes from the runner's environment, never a command line
        return [*argv, self.image, "train"]


def prepare(
    spec: JobSpec,
    job_name: str,
    read_only: list[Path],
    *,
    on_line: LineCallback | None = None,
    docker: str = "docker",
    env: Mapping[str, str] | None = None,
) -> ContainerPlan:
    """Check the engine and make the job's image ready (built when `image.build`); nothing is started.

    Raises BackendUnavailable (no engine), UserError (no image to run) or CloudtrainError (a build failed).
    """
    from cloudtrain.image.build import build_local, engine

    environ: Mapping[str, str] = os.environ if env is None else env
    kind = spec.image.kind
    if kind == "framework":
        raise UserError(
            "--container runs the job's own image: give image.build (a Dockerfile, e.g. docker/Dockerfile) "
            "or image.uri; AWS's stock images are not built here"
        )
    cli = engine(docker, environ)
    if spec.image.build is not None:
        image = build_local(spec, on_line=on_line, docker=cli.exe, env=environ).image
    else:
        assert spec.image.uri is not None
        image = spec.image.uri
    gpus, notes = _gpus(spec.resources.instance_type, cli.probe("info", "--format", "{{json .Runtimes}}").stdout)
    return ContainerPlan(
        docker=cli.exe,
        image=image,
        network=f"cloudtrain-{job_name}",
        gpus=gpus,
        user=None if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}",
        read_only=tuple(str(p) for p in read_only),
        environment=tuple(spec.environment),
        notes=tuple(notes),
    )


def _gpus(instance_type: str, runtimes: str) -> tuple[bool, list[str]]:
    """`--gpus all` for a GPU instance type where the engine has the NVIDIA runtime; else CPU, and a note why."""
    from cloudtrain.image.stock import processor

    try:
        wants = processor(instance_type) == "gpu"
    except UserError:
        wants = False
    if not wants:
        return False, []
    if "nvidia" in runtimes:
        return True, []
    return False, [
        f"{instance_type} has GPUs but this Docker engine has no NVIDIA runtime (NVIDIA Container Toolkit): "
        "the containers train on CPU"
    ]


def docker_quiet(plan: ContainerPlan, *args: str) -> subprocess.CompletedProcess[str]:
    """A docker command whose output only matters for its exit code; never raises."""
    try:
        return subprocess.run(
            [plan.docker, *args],
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=DOCKER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess([plan.docker, *args], 1, "", str(e))


def create_network(plan: ContainerPlan, job_name: str) -> None:
    """The job's own bridge network: Docker's DNS answers the hosts' aliases (algo-N) only on such networks."""
    done = docker_quiet(plan, "network", "create", "--label", f"{JOB_LABEL}={job_name}", plan.network)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"docker network create {plan.network} failed: {last}")


def remove_all(plan: ContainerPlan, job_name: str) -> None:
    """Remove every container of the job (running or not) and its network; quiet when they are gone.

    Two callers may race (the runner's guard and a command that finds the runner dead): each returns only once
    the containers are gone, so the network can go too, whoever removed them.
    """
    deadline = time.monotonic() + REMOVE_WAIT_S
    while ids := docker_quiet(plan, "ps", "-aq", "--filter", f"label={JOB_LABEL}={job_name}").stdout.split():
        docker_quiet(plan, "rm", "-f", *ids)
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    docker_quiet(plan, "network", "rm", plan.network)

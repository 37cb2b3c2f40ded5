"""Every cloudtrain command as a Python function; the CLI only parses arguments and renders these.

from cloudtrain import api
job = api.submit("job_specs/digits.yaml", backend="local")
final = api.wait(job.name)
api.fetch_model(job.name, to="out")
"""

from __future__ import annotations

import hashlib
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backends import AwsOptions, open_backend, resolve_backend_name
from cloudtrain.config import Config, Settings
from cloudtrain.errors import JobExists, SpecError, UserError

if TYPE_CHECKING:
    from cloudtrain.backends.base import Artifacts, Backend, JobInfo, LogEvent
    from cloudtrain.build import BuildResult
    from cloudtrain.compare import Comparison
    from cloudtrain.scaffold import Scaffold
    from cloudtrain.spec import JobSpec

SUFFIX_LEN = 12


def job_name_for(base: str, idempotency_key: str | None = None) -> str:
    """`<base>-<12 chars>`: from the idempotency key when given (so a retry names the same job), else unique."""
    if idempotency_key:
        suffix = hashlib.sha256(idempotency_key.encode()).hexdigest()[:SUFFIX_LEN]
    else:
        suffix = time.strftime("%m%d%H%M%S", time.gmtime()) + secrets.token_hex(1)
    return f"{base}-{suffix}"


def validate(paths: Sequence[str | Path], overrides: Sequence[str] = ()) -> list[JobSpec]:
    """Load and check each spec; the first bad one raises its SpecError."""
    from cloudtrain.spec import load_spec

    if not paths:
        raise UserError("validate: give at least one spec file")
    return [load_spec(p, overrides) for p in paths]


@dataclass(frozen=True)
class SpecCheck:
    """One spec's verdict from `check_specs`: the spec, or the error."""

    file: str
    spec: JobSpec | None = None
    error: SpecError | None = None

    def to_json(self) -> dict[str, Any]:
        if self.spec is not None:
            return {"file": self.file, "name": self.spec.name, "valid": True}
        assert self.error is not None
        return {
            "file": self.file,
            "valid": False,
            "error": str(self.error),
            "line": self.error.line,
            "field": self.error.field,
        }


def check_specs(paths: Sequence[str | Path], overrides: Sequence[str] = ()) -> list[SpecCheck]:
    """Load and check every spec, each one's first problem kept rather than raised (an override's is raised)."""
    from cloudtrain.spec import load_spec

    if not paths:
        raise UserError("validate: give at least one spec file")
    checks = []
    for path in paths:
        try:
            checks.append(SpecCheck(str(path), spec=load_spec(path, overrides)))
        except SpecError as e:
            if e.file == "--set":
                raise
            checks.append(SpecCheck(str(path), error=e))
    return checks


def schema() -> dict[str, Any]:
    from cloudtrain.spec import json_schema

    return json_schema()


@dataclass(frozen=True)
class Submitted:
    """The outcome of `submit`: the job, and whether this call created it (False: it existed already)."""

    job: JobInfo
    created: bool
    plan: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job": self.job.to_json(), "created": self.created}
        if self.plan is not None:
            out["plan"] = self.plan
        return out


def submit(
    spec_path: str | Path,
    *,
    backend: str | None = None,
    overrides: Sequence[str] = (),
    name: str | None = None,
    idempotency_key: str | None = None,
    resume: str | None = None,
    aws: AwsOptions = AwsOptions(),
    dry_run: bool = False,
    config: Config | None = None,
    container: bool = False,
) -> Submitted:
    """Validate the spec and start the job; with an idempotency key an existing job is reported, not doubled.

    `container` runs a local job's hosts in containers of the job's image (needs a Docker engine).
    `backend` and `aws` are the command line's; `config` (default: the environment and the config file) fills
    in the rest, in the order command line, environment, spec, config file.
    """
    from cloudtrain.spec import load_spec

    if name is not None:
        overrides = [*overrides, f"name={name}"]
    cfg = config if config is not None else Config.load()
    cli = Settings(backend=backend, region=aws.region, role_arn=aws.role_arn, endpoint_url=aws.endpoint_url)
    if backend:
        resolve_backend_name(backend)  # an unknown --backend is reported as such
    spec = cfg.apply_to_spec(load_spec(spec_path, overrides), cli, overrides)
    key = idempotency_key or os.environ.get("CLOUDTRAIN_IDEMPOTENCY_KEY") or None
    job_name = job_name_for(spec.name, key)
    backend_name = resolve_backend_name(backend, spec)
    be = open_backend(backend_name, spec=spec, aws=aws, container=container)
    if dry_run:
        return _dry_run(be, spec, job_name)
    if key:
        existing = _find(be, job_name)
        if existing is not None:
            return Submitted(existing, created=False, notes=[f"idempotency key matches existing job {job_name}"])
    try:
        info = be.submit(spec, job_name, resume_from=resume)
    except JobExists:
        if not key:
            raise
        return Submitted(be.describe(job_name), created=False)
    _remember(backend_name, info, spec)
    return Submitted(info, created=True)


def build(
    spec_path: str | Path,
    *,
    overrides: Sequence[str] = (),
    push: bool = False,
    dry_run: bool = False,
    platform: str = "linux/amd64",
    context_out: str | Path | None = None,
    aws: AwsOptions = AwsOptions(),
    config: Config | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build (and push) the spec's `image.build` unless ECR holds its content-hash tag already."""
    from cloudtrain.aws import AwsSettings
    from cloudtrain.build import build_image
    from cloudtrain.spec import load_spec

    cfg = config if config is not None else Config.load()
    cli = Settings(region=aws.region, endpoint_url=aws.endpoint_url)
    spec = cfg.apply_to_spec(load_spec(spec_path, overrides), cli, overrides)
    settings = AwsSettings(region=aws.region, endpoint_url=aws.endpoint_url)
    return build_image(
        spec, push=push, dry_run=dry_run, platform=platform, context_out=context_out, aws=settings, on_line=on_line
    )


def _dry_run(be: Backend, spec: JobSpec, job_name: str) -> Submitted:
    from cloudtrain.backends.base import JobInfo

    plan_fn = getattr(be, "plan", None)
    plan = plan_fn(spec, job_name) if plan_fn else {"job_name": job_name, "spec": spec.model_dump(mode="json")}
    pending = JobInfo(name=job_name, backend=be.name, status="NotCreated")
    return Submitted(pending, created=False, plan=plan)


def _find(be: Backend, job_name: str) -> JobInfo | None:
    from cloudtrain.errors import JobNotFound

    try:
        return be.describe(job_name)
    except JobNotFound:
        return None


def _remember(backend_name: str, info: JobInfo, spec: JobSpec) -> None:
    """Record remote jobs locally too, so later commands find their backend without --backend."""
    if backend_name == "local":
        return  # the local backend's own records are the store
    from cloudtrain.backends import cloudtrain_home
    from cloudtrain.store import JobStore

    JobStore(cloudtrain_home()).remember(info.name, backend_name, spec)


def backend_name_for(job: str | None, backend: str | None = None, config: Config | None = None) -> str:
    """The command line's backend, else the one the job was recorded with, else the environment's, else the
    config file's, else sagemaker where AWS is configured, else local."""
    if backend:
        return resolve_backend_name(backend)
    if job is not None:
        from cloudtrain.backends import cloudtrain_home
        from cloudtrain.store import JobStore

        recorded = JobStore(cloudtrain_home()).backend_of(job)
        if recorded:
            return recorded
    cfg = config if config is not None else Config.load()
    return resolve_backend_name(cfg.fallback_backend())


def _backend_for(job: str | None, backend: str | None, aws: AwsOptions, config: Config | None) -> Backend:
    cfg = config if config is not None else Config.load()
    name = backend_name_for(job, backend, cfg)
    return open_backend(name, aws=cfg.aws_options(aws, _recorded_settings(name, job)))


def _recorded_settings(backend: str, job: str | None) -> Settings:
    """The AWS settings of the spec a job was submitted with, so `status JOB` reaches the region it runs in."""
    if job is None or backend == "local":
        return Settings()
    from cloudtrain.backends import cloudtrain_home
    from cloudtrain.errors import JobNotFound
    from cloudtrain.store import JobStore

    try:
        aws = JobStore(cloudtrain_home()).get(backend, job).spec.get("aws") or {}
    except JobNotFound:
        return Settings()
    return Settings(region=aws.get("region"), role_arn=aws.get("role_arn"), endpoint_url=aws.get("endpoint_url"))


def status(
    job: str, *, backend: str | None = None, aws: AwsOptions = AwsOptions(), config: Config | None = None
) -> JobInfo:
    return _backend_for(job, backend, aws, config).describe(job)


def list_jobs(
    *, backend: str | None = None, limit: int = 20, aws: AwsOptions = AwsOptions(), config: Config | None = None
) -> list[JobInfo]:
    return _backend_for(None, backend, aws, config).list_jobs(limit)


def logs(
    job: str,
    *,
    backend: str | None = None,
    host: str | None = None,
    follow: bool = False,
    aws: AwsOptions = AwsOptions(),
    config: Config | None = None,
) -> Iterator[LogEvent]:
    return _backend_for(job, backend, aws, config).logs(job, host=host, follow=follow)


def stop(
    job: str, *, backend: str | None = None, aws: AwsOptions = AwsOptions(), config: Config | None = None
) -> JobInfo:
    return _backend_for(job, backend, aws, config).stop(job)


def fetch_model(
    job: str,
    *,
    to: str | Path | None = None,
    backend: str | None = None,
    aws: AwsOptions = AwsOptions(),
    on_progress: Callable[[int, int], None] | None = None,
    config: Config | None = None,
) -> Artifacts:
    """Download and extract the model, output (evaluation report) and checkpoints into `to` (default ./<job>)."""
    dest = Path(to) if to is not None else Path.cwd() / job
    be = _backend_for(job, backend, aws, config)
    if on_progress is not None and be.name == "sagemaker":
        return be.fetch_artifacts(job, dest, on_progress=on_progress)  # type: ignore[call-arg]
    return be.fetch_artifacts(job, dest)


class WaitTimeout(UserError):
    """`--timeout` passed with the job still running. Exit code 4."""

    exit_code = 4


def watch(
    job: str,
    *,
    backend: str | None = None,
    aws: AwsOptions = AwsOptions(),
    with_logs: bool = True,
    timeout: float | None = None,
    poll: float | None = None,
    config: Config | None = None,
) -> Iterator[JobInfo | LogEvent]:
    """Yield status changes and (optionally) log lines until the job ends; the last item is the final JobInfo."""
    be = _backend_for(job, backend, aws, config)
    interval = poll if poll is not None else (0.5 if be.name == "local" else 5.0)
    deadline = None if timeout is None else time.monotonic() + timeout
    lines: queue.Queue[LogEvent | None] = queue.Queue(maxsize=10_000)
    stop_flag = threading.Event()
    if with_logs:
        threading.Thread(target=_pump_logs, args=(be, job, lines, stop_flag), daemon=True).start()
    last: tuple[str, str] | None = None
    try:
        while True:
            info = be.describe(job)
            if (info.status, info.secondary_status) != last:
                last = (info.status, info.secondary_status)
                yield info
            if info.done:
                break
            yield from _drain(lines, until=time.monotonic() + interval)
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"timed out after {timeout:g}s; job {job} is still {info.status}")
        if with_logs:
            yield from _drain(lines, until=time.monotonic() + 30)
        yield info
    finally:
        stop_flag.set()


def _pump_logs(be: Backend, job: str, out: queue.Queue[LogEvent | None], stop_flag: threading.Event) -> None:
    try:
        for event in be.logs(job, follow=True):
            if stop_flag.is_set():
                return
            out.put(event)
    finally:
        out.put(None)


def _drain(lines: queue.Queue[LogEvent | None], until: float) -> Iterator[LogEvent]:
    """Log lines until the deadline or the end of the stream, whichever comes first."""
    while (left := until - time.monotonic()) > 0:
        try:
            event = lines.get(timeout=left)
        except queue.Empty:
            return
        if event is None:
            lines.put(None)  # keep the end marker for the next drain
            return
        yield event


def wait(
    job: str,
    *,
    backend: str | None = None,
    aws: AwsOptions = AwsOptions(),
    timeout: float | None = None,
    config: Config | None = None,
) -> JobInfo:
    """Block until the job ends and return its final state."""
    final: Any = None
    for item in watch(job, backend=backend, aws=aws, with_logs=False, timeout=timeout, config=config):
        final = item
    return final


def compare(
    jobs: Sequence[str],
    *,
    backend: str | None = None,
    aws: AwsOptions = AwsOptions(),
    config: Config | None = None,
    fetched_root: str | Path | None = None,
) -> Comparison:
    """Jobs side by side: differing spec fields, code hashes, metrics and evaluation.

    An evaluation report already fetched to `<fetched_root>/<job>/output/` (default: the current folder, where
    fetch-model puts it) is read from there, else from the job's output archive.
    """
    from cloudtrain import compare as comparing

    if len(jobs) < 2:
        raise UserError("compare: give at least two jobs")
    cfg = config if config is not None else Config.load()
    root = Path(fetched_root) if fetched_root is not None else Path.cwd()
    notes: list[str] = []
    sides = []
    for job in jobs:
        be = _backend_for(job, backend, aws, cfg)
        sides.append(comparing.side(be, job, aws=cfg.aws_options(aws), fetched=root / job, notes=notes))
    return comparing.compare(sides, notes)


def init(folder: str | Path = ".", *, name: str | None = None, force: bool = False) -> Scaffold:
    """Write a job spec, a training script and a small data set under `folder` (existing files: only with force)."""
    from cloudtrain.scaffold import init as scaffold

    return scaffold(folder, name=name, force=force)

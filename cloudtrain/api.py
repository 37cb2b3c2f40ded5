"""Every cloudtrain command as a Python function; the CLI only parses arguments and renders these.

from cloudtrain import api
job = api.submit("job_specs/digits.yaml", backend="local")
final = api.wait(job.name)
api.fetch_model(job.name, to="out")
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backends import AwsOptions, open_backend, resolve_backend_name
from cloudtrain.config import Config, Settings
from cloudtrain.errors import JobExists, SpecError, UserError

if TYPE_CHECKING:
    from cloudtrain.backends.base import Artifacts, Backend, JobInfo, LogEvent, LogsStopped
    from cloudtrain.build import BuildResult
    from cloudtrain.compare import Comparison
    from cloudtrain.doctor import Diagnosis
    from cloudtrain.scaffold import Scaffold
    from cloudtrain.spec import JobSpec

SUFFIX_LEN = 12
NAME_ATTEMPTS = 5  # names drawn for one submit when submits in the same second draw the same
LARGE_FOLDER_FILES = 10_000  # a folder with this many files gets a note before it is packed
AWAIT_RECORD_S = 300.0  # how long a submit whose idempotency key is taken waits for that job's record
DRAIN_IDLE_S = 30.0  # after the job ends, --wait shows log lines until its log stream is this quiet


BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
NAME_EPOCH = 1_577_836_800  # 2020-01-01 UTC


def _base36(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 36)
        digits.append(BASE36[digit])
    return "".join(reversed(digits))


def job_name_for(base: str, idempotency_key: str | None = None) -> str:
    """`<base>-<12 chars>`: from the idempotency key when given (so a retry names the same job), else unique.

    Unique: the seconds since 2020 in 6 base-36 digits (names sort by time until 2089), then 6 random ones:
    two submits in the same second collide once in 2 billion. SageMaker keeps a name forever in an account
    and region, so it must never come round again.
    """
    if idempotency_key:
        suffix = hashlib.sha256(idempotency_key.encode()).hexdigest()[:SUFFIX_LEN]
    else:
        seconds = int(time.time()) - NAME_EPOCH
        suffix = _base36(seconds, 6) + "".join(secrets.choice(BASE36) for _ in range(6))
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
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.spec is not None:
            out: dict[str, Any] = {"file": self.file, "name": self.spec.name, "valid": True}
            return {**out, "warnings": list(self.warnings)} if self.warnings else out
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
    from cloudtrain.spec_warnings import spec_warnings

    if not paths:
        raise UserError("validate: give at least one spec file")
    checks = []
    for path in paths:
        try:
            spec = load_spec(path, overrides)
            checks.append(SpecCheck(str(path), spec=spec, warnings=tuple(spec_warnings(spec))))
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
    warnings: list[str] = field(default_factory=list)  # the spec's traps (spec_warnings), for stderr

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
    on_note: Callable[[str], None] | None = None,
    container: bool = False,
) -> Submitted:
    """Validate the spec and start the job; with an idempotency key an existing job is reported, not doubled.

    `container` runs a local job's hosts in containers of the job's image (needs a Docker engine).
    `backend` and `aws` are the command line's; `config` (default: the environment and the config file) fills
    in the rest, in the order command line, environment, spec, config file. `on_note` hears each note (a
    secret-looking hyperparameter, what packing leaves out, a large code folder) as soon as it is known,
    before the packing; they are in `Submitted.notes` too.
    """
    from cloudtrain.spec import load_spec
    from cloudtrain.spec_warnings import spec_warnings

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
    warnings = spec_warnings(spec)
    notes = [*secret_hyperparameters(spec), *left_out_notes(spec, backend_name)]
    for note in notes:
        if on_note is not None:
            on_note(note)
    if dry_run:
        return replace(_dry_run(be, spec, job_name, notes), warnings=warnings)
    if key:
        existing = _find(be, job_name)
        if existing is not None:
            notes = [f"idempotency key matches existing job {job_name}", *notes]
            return Submitted(existing, created=False, notes=notes, warnings=warnings)
    for attempt in range(NAME_ATTEMPTS):
        try:
            info = be.submit(spec, job_name, resume_from=resume)
            break
        except JobExists:
            if key:
                return Submitted(_await_record(be, job_name), created=False, notes=notes, warnings=warnings)
            if attempt == NAME_ATTEMPTS - 1:
                raise
            job_name = job_name_for(spec.name)  # another submit took this second's name: draw again
    _remember(backend_name, info, spec)
    return Submitted(info, created=True, notes=notes, warnings=warnings)


def _await_record(be: Backend, job_name: str) -> JobInfo:
    """The job another submit with the same idempotency key is creating: it holds the name and records the
    job once its code is packed, so this waits for that record rather than calling the job unknown."""
    deadline = time.monotonic() + AWAIT_RECORD_S
    while (found := _find(be, job_name)) is None:
        if time.monotonic() > deadline:
            raise UserError(
                f"job {job_name} (same idempotency key) is being submitted by another cloudtrain and has not "
                f"appeared in {AWAIT_RECORD_S:g}s: try again"
            )
        time.sleep(0.1)
    return found


def left_out_notes(spec: JobSpec, backend_name: str) -> list[str]:
    """What packing leaves out of the code folder and (uploaded to S3) the local data folders, one line each;
    and, for a folder large enough to take a while, how large it is (so a long pause says what it is)."""
    from cloudtrain.archive import left_out_note, tree_entries

    folders = {"code.source_dir": Path(spec.code.source_dir)}
    if backend_name != "local":  # the local backend links data folders as they are
        folders.update({f"data.{ch}": Path(loc) for ch, loc in spec.data.items() if not loc.startswith("s3://")})
    notes = []
    for what, path in folders.items():
        if not path.is_dir():
            continue
        files, left_out = tree_entries(path)
        notes.append(left_out_note(what, left_out))
        if len(files) >= LARGE_FOLDER_FILES:
            notes.append(f"{what}: packing {len(files):,} files: this takes a while (about 2,500 files a second)")
    return [note for note in notes if note]


def secret_hyperparameters(spec: JobSpec) -> list[str]:
    """A warning per hyperparameter whose name looks secret: its value is masked where cloudtrain shows it,
    but SageMaker shows hyperparameters in its console and the script gets them on its command line."""
    from cloudtrain.redact import is_secret_name

    return [
        f"hyperparameters.{name} looks like a secret: it is shown as *** here, but SageMaker's console shows "
        "hyperparameters and the script gets them in its argv; pass secrets in environment: instead"
        for name in spec.hyperparameters
        if is_secret_name(name)
    ]


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


def _dry_run(be: Backend, spec: JobSpec, job_name: str, notes: list[str]) -> Submitted:
    from cloudtrain.backends.base import JobInfo

    plan_fn = getattr(be, "plan", None)
    plan = plan_fn(spec, job_name) if plan_fn else {"job_name": job_name, "spec": spec.model_dump(mode="json")}
    pending = JobInfo(name=job_name, backend=be.name, status="NotCreated")
    return Submitted(pending, created=False, plan=plan, notes=notes)


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
    """The job now. A finished SageMaker job never changes: once a call has seen it end, it is recorded in the
    job store and answered from there, without AWS (and without importing boto3), sparing the API quota."""
    from cloudtrain.backends import cloudtrain_home
    from cloudtrain.store import JobRecord, JobStore

    cfg = config if config is not None else Config.load()
    name = backend_name_for(job, backend, cfg)
    store = JobStore(cloudtrain_home()) if name != "local" else None
    recorded = _recorded(store, name, job)
    if recorded is not None and recorded.done:
        return recorded.info
    info = _backend_for(job, name, aws, cfg).describe(job)
    if store is not None and info.done:
        spec = recorded.spec if recorded is not None else {}
        store.save(JobRecord(info, spec=spec))
    return info


def _recorded(store: Any, backend: str, job: str) -> Any:
    """The store's record of a remote job, or None."""
    from cloudtrain.errors import JobNotFound

    if store is None:
        return None
    try:
        return store.get(backend, job)
    except JobNotFound:
        return None


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
    info = be.describe(job)
    if not info.done:
        raise UserError(f"job {job} is {info.status}: its model can be fetched once it ends (cloudtrain logs {job} -f)")
    _refuse_foreign_files(dest)
    created = not dest.exists()
    try:
        if on_progress is not None and be.name == "sagemaker":
            found = be.fetch_artifacts(job, dest, on_progress=on_progress)  # type: ignore[call-arg]
        else:
            found = be.fetch_artifacts(job, dest)
        fetched_files(dest, write=True)
    finally:
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if empty (nothing fetched, or a failure): no empty DIR is left behind
    return found


FETCHED = (
    "model",
    "output",
    "checkpoints",
    "tensorboard",
    "model.tar.gz",
    "output.tar.gz",
)  # what fetch-model writes in DIR
FETCH_MANIFEST = ".cloudtrain-fetch.json"  # in DIR: the files the last fetch-model put there


def fetched_files(dest: Path, *, write: bool = False) -> dict[str, list[int]]:
    """The files fetch-model would replace in DIR as they are now ({path: [size, mtime_ns]}); with `write`,
    recorded as fetch-model's own, which the next fetch into DIR may replace."""
    import json

    files = {}
    for name in FETCHED:
        top = dest / name
        below = sorted(top.rglob("*")) if top.is_dir() and not top.is_symlink() else []
        for path in [top, *below] if top.exists() or top.is_symlink() else []:
            info = path.lstat()
            if path.is_symlink() or not path.is_dir():
                files[path.relative_to(dest).as_posix()] = [info.st_size, info.st_mtime_ns]
    if write and files:
        from cloudtrain.archive import atomic_path

        with atomic_path(dest / FETCH_MANIFEST) as tmp:
            tmp.write_text(json.dumps(files))
    return files


def _refuse_foreign_files(dest: Path) -> None:
    """fetch-model never deletes a user's file: it replaces model/, output/ and checkpoints/ only where they
    hold nothing, or exactly what the last fetch-model into DIR left there."""
    import json

    try:
        ours = json.loads((dest / FETCH_MANIFEST).read_text())
    except (OSError, ValueError):
        ours = {}
    for name, seen in fetched_files(dest).items():
        if ours.get(name) != seen:
            raise UserError(
                f"{dest / name} was not put there by fetch-model: it never replaces your files; "
                "choose another --to, or move it away"
            )


def tensorboard(
    jobs: Sequence[str],
    *,
    port: int | None = None,
    backend: str | None = None,
    aws: AwsOptions = AwsOptions(),
    config: Config | None = None,
    on_ready: Callable[[str], None] = lambda url: None,
    on_note: Callable[[str], None] = lambda line: None,
) -> None:
    """Serve TensorBoard on the jobs' event files, each job a run named after it, downloading new ones while a job
    runs; `on_ready(url)` once it answers. Returns only by an exception: KeyboardInterrupt (Ctrl-C) stops it and
    leaves nothing running; a CloudtrainError if TensorBoard exits by itself."""
    from cloudtrain import board

    if not jobs:
        raise UserError("tensorboard: give at least one job")
    command = board.tensorboard_command()  # before reaching any backend: a missing TensorBoard is one line
    cfg = config if config is not None else Config.load()
    watched = []
    for job in dict.fromkeys(jobs):
        be = _backend_for(job, backend, aws, cfg)
        be.describe(job)  # JobNotFound now, before anything starts
        watched.append((job, be))
    board.serve(command, watched, port=port, on_ready=on_ready, on_note=on_note)


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
) -> Iterator[JobInfo | LogEvent | LogsStopped]:
    """Yield status changes and (optionally) log lines until the job ends; the last item is the final JobInfo.

    Logs come from a thread of their own: if they fail (throttled, denied, credentials expired), a
    `LogsStopped` is yielded once and the wait goes on with the status alone.
    """
    be = _backend_for(job, backend, aws, config)
    interval = poll if poll is not None else (0.5 if be.name == "local" else 5.0)
    deadline = None if timeout is None else time.monotonic() + timeout
    lines: queue.Queue[LogEvent | LogsStopped | None] = queue.Queue(maxsize=10_000)
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
            yield from _drain_to_end(lines, job)
        yield info
    finally:
        stop_flag.set()


def _pump_logs(
    be: Backend, job: str, out: queue.Queue[LogEvent | LogsStopped | None], stop_flag: threading.Event
) -> None:
    from cloudtrain.aws import one_line
    from cloudtrain.backends.base import LogsStopped
    from cloudtrain.errors import CloudtrainError

    try:
        for event in be.logs(job, follow=True):
            if stop_flag.is_set():
                return
            out.put(event)
    except Exception as e:  # whatever it is, the wait goes on: one line, never a traceback from this thread
        out.put(LogsStopped(str(e) if isinstance(e, CloudtrainError) else one_line(f"{type(e).__name__}: {e}")))
    finally:
        out.put(None)


def _drain(lines: queue.Queue[LogEvent | LogsStopped | None], until: float) -> Iterator[LogEvent | LogsStopped]:
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


def _drain_to_end(lines: queue.Queue[LogEvent | LogsStopped | None], job: str) -> Iterator[LogEvent | LogsStopped]:
    """Every line left once the job has ended, however many; a stream silent for DRAIN_IDLE_S ends with a note."""
    from cloudtrain.backends.base import LogEvent

    while True:
        try:
            event = lines.get(timeout=DRAIN_IDLE_S)
        except queue.Empty:
            note = f"no log line for {DRAIN_IDLE_S:g}s after the job ended: any later ones: cloudtrain logs {job}"
            yield LogEvent(time.time(), "cloudtrain", note)
            return
        if event is None:
            lines.put(None)
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


def doctor(*, aws: AwsOptions = AwsOptions(), config: Config | None = None) -> Diagnosis:
    """Check the AWS set-up a submit needs: region, credentials, SageMaker's role, the output bucket (reads only)."""
    from cloudtrain.doctor import diagnose

    cfg = config if config is not None else Config.load()
    cli = Settings(region=aws.region, role_arn=aws.role_arn, endpoint_url=aws.endpoint_url)
    return diagnose(cfg.defaults(cli))


def init(folder: str | Path = ".", *, name: str | None = None, force: bool = False) -> Scaffold:
    """Write a job spec, a training script and a small data set under `folder` (existing files: only with force)."""
    from cloudtrain.scaffold import init as scaffold

    return scaffold(folder, name=name, force=force)

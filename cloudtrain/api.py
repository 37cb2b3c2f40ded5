"""Every cloudtrain command as a Python function; the CLI only parses arguments and renders what these return.

    from cloudtrain import api

    local = api.Options(backend="local")
    job = api.submit("job_specs/digits.yaml", options=local).job
    final = api.wait(job.name, options=local)
    api.fetch_model(job.name, to="out", options=local)

`Options` is what a command line says (backend, region, role, endpoint, config profile); each function resolves
it once, with the environment, the spec and the config file, into the `Settings` its backend receives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain import records
from cloudtrain.backends import open_backend
from cloudtrain.errors import AwsBusy, JobExists, SpecError, UserError, WaitTimeout, quoted
from cloudtrain.records import for_job
from cloudtrain.settings import Config as Config  # for the command line, which imports nothing else of settings
from cloudtrain.settings import Options, for_spec

if TYPE_CHECKING:
    from cloudtrain.backends.base import Backend
    from cloudtrain.compare import Comparison as Comparison  # what the command line renders, named through api
    from cloudtrain.doctor import Diagnosis as Diagnosis
    from cloudtrain.image.build import BuildResult as BuildResult
    from cloudtrain.jobs import Artifacts, JobInfo, LogEvent, LogsStopped
    from cloudtrain.scaffold import Scaffold as Scaffold
    from cloudtrain.spec.models import JobSpec
    from cloudtrain.sweep.trials import SweepInfo as SweepInfo  # what the command line renders, named through api
    from cloudtrain.sweep.trials import Trial

SUFFIX_LEN = 12
SWEEP_NAME_MAX = 32  # SageMaker's HyperParameterTuningJobName
NAME_ATTEMPTS = 5  # names drawn for one submit when submits in the same second draw the same
LARGE_FOLDER_FILES = 10_000  # a folder with this many files gets a note before it is packed
AWAIT_RECORD_S = 300.0  # how long a submit whose idempotency key is taken waits for that job's record
DRAIN_IDLE_S = 30.0  # after the job ends, --wait shows log lines until its log stream is this quiet
BUSY_MAX_S = 60.0  # the longest a wait backs off while AWS throttles or fails inside (it never ends for that)


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


def sweep_name_for(base: str, idempotency_key: str | None = None) -> str:
    """A sweep's name as `job_name_for` makes a job's, its base cut so the whole fits a tuning job's 32 characters."""
    return job_name_for(base[: SWEEP_NAME_MAX - SUFFIX_LEN - 1].rstrip("-"), idempotency_key)


def validate(paths: Sequence[str | Path], overrides: Sequence[str] = ()) -> list[JobSpec]:
    """Load and check each spec; the first bad one raises its SpecError."""
    from cloudtrain.spec.load import load_spec

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
    from cloudtrain.spec.lint import spec_warnings
    from cloudtrain.spec.load import load_spec

    if not paths:
        raise UserError("validate: give at least one spec file")
    checks = []
    for path in paths:
        try:
            spec = load_spec(path, overrides)
            warnings = spec_warnings(spec, spec_path=path, overrides=overrides)
            checks.append(SpecCheck(str(path), spec=spec, warnings=tuple(warnings)))
        except SpecError as e:
            if e.file == "--set":
                raise
            checks.append(SpecCheck(str(path), error=e))
    return checks


def schema(*, output_of: str | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """The job spec's JSON Schema, or that of a command's `--json` output; written atomically to `out` if given."""
    if output_of is None:
        from cloudtrain.spec.models import json_schema

        document = json_schema()
    else:
        from cloudtrain.output_schemas import names, output_schema

        if output_of not in names():
            raise UserError(f"--output-of: {quoted(output_of)} is not one of {', '.join(names())}")
        document = output_schema(output_of)
    if out is not None:
        import json

        from cloudtrain.files import atomic_path, writing_to

        with writing_to(Path(out)), atomic_path(Path(out)) as tmp:
            tmp.write_text(json.dumps(document, indent=2) + "\n")
    return document


@dataclass(frozen=True)
class Submitted:
    """The outcome of `submit`: the job, and whether this call created it (False: it existed already)."""

    job: JobInfo
    created: bool
    plan: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the spec's traps (spec_warnings), for stderr
    sweep: SweepInfo | None = None  # when the spec has a sweep: section (`job` is then the sweep's row)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job": self.job.to_json(), "created": self.created}
        if self.sweep is not None:
            out["sweep"] = self.sweep.to_json()
        if self.plan is not None:
            out["plan"] = self.plan
        return out


def submit(
    spec_path: str | Path,
    *,
    options: Options = Options(),
    overrides: Sequence[str] = (),
    name: str | None = None,
    idempotency_key: str | None = None,
    resume: str | None = None,
    dry_run: bool = False,
    on_note: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Submitted:
    """Validate the spec and start the job; with an idempotency key an existing job is reported, not doubled.

    `options` are the command line's: each setting comes from them, else the environment, the spec, the config
    file. `on_note` hears each note (a secret-looking hyperparameter, what packing leaves out, a large code
    folder) as soon as it is known, before the packing; they are in `Submitted.notes` too. `on_progress` hears
    (bytes done, bytes in all) of the data moved before the job starts (uploads, or s3:// channels fetched).
    """
    from cloudtrain.spec.lint import spec_warnings
    from cloudtrain.spec.load import load_spec

    if name is not None:
        overrides = [*overrides, f"name={name}"]
    settings, spec = for_spec(options, load_spec(spec_path, overrides), overrides)
    key = idempotency_key or os.environ.get("CLOUDTRAIN_IDEMPOTENCY_KEY") or None
    job_name = job_name_for(spec.name, key)
    be = open_backend(settings)
    warnings = spec_warnings(spec, spec_path=spec_path, overrides=overrides)
    if be.trains_here:  # worker processes here train with this machine's TensorFlow, not the image's
        from cloudtrain.spec.lint import tensorflow_here, tensorflow_mismatch

        if (mismatch := tensorflow_mismatch(spec, tensorflow_here())) is not None:
            warnings.append(mismatch)
    notes = [*secret_hyperparameters(spec), *left_out_notes(spec, uploads_data=be.uploads_data)]
    if spec.backend is None:  # no --backend, CLOUDTRAIN_BACKEND, spec or config file named one
        from cloudtrain.settings import default_backend_reason

        notes.insert(0, f"no backend named: {default_backend_reason()}")
    for note in notes:
        if on_note is not None:
            on_note(note)
    if spec.sweep is not None:
        return _submit_sweep(
            be, spec, settings.home, Path(spec_path), key, dry_run=dry_run, notes=notes, warnings=warnings
        )
    if dry_run:
        from cloudtrain.jobs import JobInfo

        pending = JobInfo(name=job_name, backend=be.name, status="NotCreated")
        return Submitted(pending, created=False, plan=be.plan(spec, job_name), notes=notes, warnings=warnings)
    if key:
        existing = _find(be, job_name)
        if existing is not None:
            notes = [f"idempotency key matches existing job {job_name}", *notes]
            return Submitted(existing, created=False, notes=notes, warnings=warnings)
    for attempt in range(NAME_ATTEMPTS):
        try:
            info = be.submit(spec, job_name, resume_from=resume, on_progress=on_progress)
            break
        except JobExists:
            if key:
                return Submitted(_await_record(be, job_name), created=False, notes=notes, warnings=warnings)
            if attempt == NAME_ATTEMPTS - 1:
                raise
            job_name = job_name_for(spec.name)  # another submit took this second's name: draw again
    if be.record_at_submit:  # so later commands find its backend (and its region) without options
        records.remember(settings.home, info.name, be.name, spec)
    return Submitted(info, created=True, notes=notes, warnings=warnings)


def _submit_sweep(
    be: Backend,
    spec: JobSpec,
    home: Path,
    spec_path: Path,
    key: str | None,
    *,
    dry_run: bool,
    notes: list[str],
    warnings: list[str],
) -> Submitted:
    """A spec with a `sweep:` section: one sweep (a tuning job, or local trials), named within 32 characters."""
    from cloudtrain.jobs import JobInfo

    name = sweep_name_for(spec.name, key)
    parents = _warm_start_parents(be, spec, spec_path)
    if dry_run:
        pending = JobInfo(name=name, backend=be.name, status="NotCreated", kind="sweep")
        return Submitted(pending, created=False, plan=be.plan(spec, name), notes=notes, warnings=warnings)
    if key and (existing := _find_sweep(be, name)) is not None:
        notes = [f"idempotency key matches existing sweep {name}", *notes]
        return Submitted(existing.job, created=False, notes=notes, warnings=warnings, sweep=existing)
    for attempt in range(NAME_ATTEMPTS):
        try:
            info = be.submit_sweep(spec, name, parents=parents)
            break
        except JobExists:
            if key or attempt == NAME_ATTEMPTS - 1:
                raise
            name = sweep_name_for(spec.name)
    if be.record_at_submit:
        records.remember(home, name, be.name, spec, kind="sweep")
    return Submitted(info.job, created=True, notes=notes, warnings=warnings, sweep=info)


def _find_sweep(be: Backend, name: str) -> SweepInfo | None:
    from cloudtrain.errors import JobNotFound

    try:
        return be.sweep(name)
    except JobNotFound:
        return None


def _warm_start_parents(be: Backend, spec: JobSpec, spec_path: Path) -> list[SweepInfo]:
    """The parent sweeps of `warm_start`, each checked as SageMaker checks them (before anything is uploaded):
    the same objective, and the same names of static plus tuned hyperparameters."""
    assert spec.sweep is not None
    warm = spec.sweep.warm_start
    if warm is None:
        return []
    names = set(spec.hyperparameters) | set(spec.sweep.parameters)
    parents = []
    for parent in warm.from_:
        info = _find_sweep(be, parent)
        field_name = "sweep.warm_start.from"
        if info is None:
            raise SpecError(str(spec_path), None, field_name, f"no {be.name} sweep named {quoted(parent)}")
        if info.metric != spec.sweep.objective.metric:
            raise SpecError(
                str(spec_path),
                None,
                field_name,
                f"{parent} optimised {info.metric}, this sweep {spec.sweep.objective.metric}: a warm start "
                "keeps the objective",
            )
        theirs = set(info.hyperparameter_names)
        if theirs != names:
            added, dropped = sorted(names - theirs), sorted(theirs - names)
            change = "; ".join(
                part
                for part in (
                    f"added {', '.join(added)}" if added else "",
                    f"dropped {', '.join(dropped)}" if dropped else "",
                )
                if part
            )
            raise SpecError(
                str(spec_path),
                None,
                field_name,
                f"{parent} had other hyperparameters ({change}): a warm start keeps the same static and tuned names",
            )
        parents.append(info)
    return parents


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


def left_out_notes(spec: JobSpec, *, uploads_data: bool) -> list[str]:
    """What packing leaves out of the code folder and (where they are uploaded) the local data folders, one
    line each; and, for a folder large enough to take a while, how large it is (so a long pause says what it is)."""
    from cloudtrain.transfer.tarballs import left_out_note, tree_entries

    folders = {"code.source_dir": Path(spec.code.source_dir)}
    if uploads_data:
        folders.update({f"data.{ch}": Path(c.uri) for ch, c in spec.data.items() if c.is_local and c.uri})
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
    options: Options = Options(),
    overrides: Sequence[str] = (),
    push: bool = False,
    dry_run: bool = False,
    platform: str = "linux/amd64",
    context_out: str | Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build (and push) the spec's `image.build` unless ECR holds its content-hash tag already."""
    from cloudtrain.image.build import build_image
    from cloudtrain.spec.load import load_spec

    settings, spec = for_spec(options, load_spec(spec_path, overrides), overrides)
    return build_image(
        spec, push=push, dry_run=dry_run, platform=platform, context_out=context_out, settings=settings, on_line=on_line
    )


def _find(be: Backend, job_name: str) -> JobInfo | None:
    from cloudtrain.errors import JobNotFound

    try:
        return be.describe(job_name)
    except JobNotFound:
        return None


def _backend_for(job: str | None, options: Options) -> Backend:
    return open_backend(for_job(options, job))


def is_sweep(name: str, *, options: Options = Options()) -> bool:
    """Whether `name` is a sweep cloudtrain started (its record says so), rather than a training job."""
    return records.kind_of(for_job(options, name).home, name) == "sweep"


def sweep_status(sweep: str, *, options: Options = Options()) -> SweepInfo:
    """A sweep now: its counters, its trials with their values, objectives and cost, the best one."""
    return _backend_for(sweep, options).sweep(sweep)


def sweep_trial(sweep: str, trial: str | None = None, *, options: Options = Options()) -> Trial:
    """One trial of a sweep: by number (1 is the first started) or job name; the best one by default."""
    return _pick_trial(sweep_status(sweep, options=options), trial)


def _pick_trial(info: SweepInfo, trial: str | None) -> Trial:
    sweep = info.name
    if trial is None:
        found = info.best
        if found is None:
            raise UserError(f"sweep {sweep} has no completed trial with an objective yet: give --trial N")
        return found
    found = info.trial(trial)
    if found is None:
        raise UserError(f"sweep {sweep} has no trial {quoted(trial)} (1-{len(info.trials)}, or a trial's job name)")
    return found


def status(job: str, *, options: Options = Options()) -> JobInfo:
    """The job now. A finished remote job never changes: once a call has seen it end, it is recorded in the
    job store and answered from there, without AWS, sparing the API quota."""
    settings = for_job(options, job)
    be = open_backend(settings)
    if is_sweep(job, options=options):  # its row; `sweep_status` has its trials
        return be.sweep(job).job
    if not be.status_from_record:
        return be.describe(job)
    recorded = records.recorded(settings.home, be.name, job)
    if recorded is not None and recorded.done:
        return recorded.info
    info = be.describe(job)
    if info.done:
        records.keep_finished(settings.home, info, recorded)
    return info


def finished_status(job: str) -> JobInfo | None:
    """The job's state if the job store holds it finished (it never changes then), on whichever backend it ran;
    None otherwise. Reads one local file: `status` of a finished job needs no backend, no options."""
    return records.finished(job)


def metrics_note(info: JobInfo, *, options: Options = Options()) -> str | None:
    """Why a job that has ended shows no metrics, in one line (`jobs.no_metrics_reason`); None when it has
    some, runs yet, or was not submitted from here."""
    from cloudtrain.jobs import no_metrics_reason

    if info.metrics or not info.done:
        return None  # spares reading the record
    spec = records.submitted_spec(for_job(options, info.name).home, info.backend, info.name)
    return None if spec is None else no_metrics_reason(info, spec)


def list_jobs(*, options: Options = Options(), limit: int = 20) -> list[JobInfo]:
    return _backend_for(None, options).list_jobs(limit)


def logs(
    job: str,
    *,
    options: Options = Options(),
    host: str | None = None,
    follow: bool = False,
    trial: str | None = None,
) -> Iterator[LogEvent]:
    """A job's lines; of a sweep, one trial's (`trial`: its number or name; the best one by default)."""
    be = _backend_for(job, options)
    if trial is not None or is_sweep(job, options=options):
        job = _pick_trial(be.sweep(job), trial).name
    return be.logs(job, host=host, follow=follow)


def stop(job: str, *, options: Options = Options()) -> JobInfo:
    """Stop a job, or a sweep (its running trials stopped, their saved work kept)."""
    be = _backend_for(job, options)
    if is_sweep(job, options=options):
        return be.stop_sweep(job).job
    return be.stop(job)


def stop_sweep(sweep: str, *, options: Options = Options()) -> SweepInfo:
    return _backend_for(sweep, options).stop_sweep(sweep)


def watch_sweep(
    sweep: str, *, options: Options = Options(), timeout: float | None = None, poll: float | None = None
) -> Iterator[SweepInfo]:
    """The sweep each time a trial starts or ends, until it ends (the last item is its final state).

    With the spec's `max_cost`, the sweep is stopped once its trials' billed cost reaches it (AWS's own runtime
    limit is the ceiling when nobody waits).
    """
    be = _backend_for(sweep, options)
    interval = poll if poll is not None else be.status_interval
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    stopping = False
    while True:
        info = be.sweep(sweep)
        seen = (info.status, tuple((t.name, t.status) for t in info.trials))
        if seen != last:
            last = seen
            yield info
        if info.done:
            return
        spent = info.spent_usd
        if not stopping and info.max_cost is not None and spent is not None and spent >= info.max_cost:
            stopping = True
            be.stop_sweep(sweep)
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s; sweep {sweep} is still {info.status}")
        time.sleep(interval)


def fetch_model(
    job: str,
    *,
    to: str | Path | None = None,
    options: Options = Options(),
    trial: str | None = None,
) -> Artifacts:
    """Download and extract the model, output (evaluation report) and checkpoints into `to` (default ./<job>).

    Of a sweep: one trial's (the best by default, or `trial`: its number or name), plus sweep_report.html
    (Optuna's figures of every trial) and sweep_trials.csv.
    """
    dest = Path(to) if to is not None else Path.cwd() / job
    be = _backend_for(job, options)
    if trial is not None or is_sweep(job, options=options):
        return _fetch_sweep(be, job, trial, dest)
    return _fetch_job(be, job, dest)


def _fetch_sweep(be: Backend, sweep: str, trial: str | None, dest: Path) -> Artifacts:
    from dataclasses import replace

    from cloudtrain.files import atomic_path
    from cloudtrain.spec.sweep import ParameterRange
    from cloudtrain.sweep.report import render
    from cloudtrain.sweep.space import require_optuna
    from cloudtrain.sweep.trials import trials_csv

    require_optuna()  # before anything is fetched
    info = be.sweep(sweep)
    chosen = _pick_trial(info, trial)
    _refuse_foreign_files(dest)
    found = _fetch_job(be, chosen.name, dest)
    parameters = {k: ParameterRange.model_validate(v) for k, v in info.parameters.items()}
    reports = {SWEEP_REPORT: render(info, parameters), SWEEP_TRIALS: trials_csv(info)}
    for file_name, text in reports.items():
        with atomic_path(dest / file_name) as tmp:
            tmp.write_text(text)
    fetched_files(dest, write=True)
    return replace(found, sweep_report=dest / SWEEP_REPORT, sweep_trials=dest / SWEEP_TRIALS, trial=chosen.name)


def _fetch_job(be: Backend, job: str, dest: Path) -> Artifacts:
    info = be.describe(job)
    if not info.done:
        raise UserError(f"job {job} is {info.status}: its model can be fetched once it ends (cloudtrain logs {job} -f)")
    _refuse_foreign_files(dest)
    created = not dest.exists()
    try:
        found = be.fetch_artifacts(job, dest)
        fetched_files(dest, write=True)
    finally:
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if empty (nothing fetched, or a failure): no empty DIR is left behind
    return found


SWEEP_REPORT = "sweep_report.html"
SWEEP_TRIALS = "sweep_trials.csv"
FETCHED = (
    "model",
    "output",
    "checkpoints",
    "tensorboard",
    "model.tar.gz",
    "output.tar.gz",
    SWEEP_REPORT,
    SWEEP_TRIALS,
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
        from cloudtrain.files import atomic_path

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
    options: Options = Options(),
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
    watched = []
    for job in dict.fromkeys(jobs):
        be = _backend_for(job, options)
        if is_sweep(job, options=options):  # every trial a run
            watched.extend((trial.name, be) for trial in be.sweep(job).trials)
            continue
        be.describe(job)  # JobNotFound now, before anything starts
        watched.append((job, be))
    board.serve(command, watched, port=port, on_ready=on_ready, on_note=on_note)


def watch(
    job: str,
    *,
    options: Options = Options(),
    with_logs: bool = True,
    timeout: float | None = None,
    poll: float | None = None,
) -> Iterator[JobInfo | LogEvent | LogsStopped]:
    """Yield status changes and (optionally) log lines until the job ends; the last item is the final JobInfo.

    Logs come from a thread of their own: if they fail (throttled, denied, credentials expired), a
    `LogsStopped` is yielded once and the wait goes on with the status alone.
    """
    be = _backend_for(job, options)
    interval = poll if poll is not None else be.status_interval
    deadline = None if timeout is None else time.monotonic() + timeout
    lines: queue.Queue[LogEvent | LogsStopped | None] = queue.Queue(maxsize=10_000)
    stop_flag = threading.Event()
    if with_logs:
        threading.Thread(target=_pump_logs, args=(be, job, lines, stop_flag), daemon=True).start()
    last: tuple[str, str] | None = None
    busy = 0  # AWS answers in a row that were throttling or a failure of its own
    try:
        while True:
            try:
                info = be.describe(job)
                busy = 0
            except AwsBusy:  # transient: ask again later, backing off up to BUSY_MAX_S, never end the wait
                busy += 1
                _raise_if_past(deadline, timeout, f"job {job}: AWS busy, for AWS to answer")
                time.sleep(min(BUSY_MAX_S, interval * 2 ** min(busy, 6)) * random.uniform(0.5, 1.0))
                continue
            if (info.status, info.secondary_status) != last:
                last = (info.status, info.secondary_status)
                yield info
            if info.done:
                break
            yield from _drain(lines, until=time.monotonic() + interval)
            _raise_if_past(deadline, timeout, f"job {job} is still {info.status}")
        if with_logs:
            yield from _drain_to_end(lines, job)
        yield info
    finally:
        stop_flag.set()


def _raise_if_past(deadline: float | None, timeout: float | None, state: str) -> None:
    if deadline is not None and timeout is not None and time.monotonic() > deadline:
        raise WaitTimeout(f"timed out after {timeout:g}s; {state}")


def _pump_logs(
    be: Backend, job: str, out: queue.Queue[LogEvent | LogsStopped | None], stop_flag: threading.Event
) -> None:
    from cloudtrain.errors import CloudtrainError, one_line
    from cloudtrain.jobs import LogsStopped

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
    from cloudtrain.jobs import LogEvent

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


def wait(job: str, *, options: Options = Options(), timeout: float | None = None) -> JobInfo:
    """Block until the job ends and return its final state."""
    final: Any = None
    for item in watch(job, options=options, with_logs=False, timeout=timeout):
        final = item
    return final


def open_browser(url: str) -> bool:
    """Open url (`tensorboard`'s) in the user's browser, where there is one (`board.open_browser`)."""
    from cloudtrain import board

    return board.open_browser(url)


def compare(jobs: Sequence[str], *, options: Options = Options(), fetched_root: str | Path | None = None) -> Comparison:
    """Jobs side by side: differing spec fields, code hashes, metrics and evaluation.

    An evaluation report already fetched to `<fetched_root>/<job>/output/` (default: the current folder, where
    fetch-model puts it) is read from there, else from the job's own output.
    """
    from cloudtrain import compare as comparing

    if len(jobs) < 2:
        raise UserError("compare: give at least two jobs")
    root = Path(fetched_root) if fetched_root is not None else Path.cwd()
    notes: list[str] = []
    sides = []
    for job in jobs:
        settings = for_job(options, job)
        be = open_backend(settings)
        spec = records.submitted_spec(settings.home, be.name, job)
        sides.append(comparing.side(be, job, spec=spec, fetched=root / job, notes=notes))
    return comparing.compare(sides, notes)


def doctor(*, options: Options = Options()) -> Diagnosis:
    """Check the AWS set-up a submit needs: region, credentials, SageMaker's role, the output bucket (reads only)."""
    from cloudtrain.doctor import diagnose

    return diagnose(for_job(options))


def init(folder: str | Path = ".", *, name: str | None = None, force: bool = False) -> Scaffold:
    """Write a job spec, a training script and a small data set under `folder` (existing files: only with force)."""
    from cloudtrain.scaffold import init as scaffold

    return scaffold(folder, name=name, force=force)


@dataclass(frozen=True)
class ConfigReport:
    """`cloudtrain config`: the config file, the profile, and each setting's value with where it comes from."""

    path: Path
    exists: bool
    profile: str | None
    sources: dict[str, tuple[str | None, str]]  # setting -> (value, where it came from)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "exists": self.exists,
            "profile": self.profile,
            "settings": {k: {"value": v, "source": where} for k, (v, where) in self.sources.items()},
        }


def config(*, options: Options = Options(), spec: str | Path | None = None) -> ConfigReport:
    """The default settings and where each comes from; with `spec`, what that spec sets too, as submit sees it."""
    from cloudtrain.settings import config_path

    loaded = options.read_config()
    job_spec = None
    if spec is not None:
        from cloudtrain.spec.load import load_spec

        job_spec = load_spec(spec)
    from cloudtrain.redact import without_url_password

    # An endpoint URL may carry a password (http://user:password@proxy): shown masked, as every URL is.
    raw = with_aws_defaults(loaded.sources(job_spec, options.layer))
    sources = {k: (without_url_password(v), where) for k, (v, where) in raw.items()}
    return ConfigReport(loaded.path or config_path(), loaded.path is not None, loaded.profile, sources)


def with_aws_defaults(sources: dict[str, tuple[str | None, str]]) -> dict[str, tuple[str | None, str]]:
    """The backend and region a submit would use where no cloudtrain setting gives them, and why: AWS found in
    the environment or ~/.aws files, AWS's own region chain."""
    from cloudtrain.settings import aws_region, aws_source

    out = dict(sources)
    if out["backend"][0] is None:
        found = aws_source()
        out["backend"] = ("sagemaker", f"{found} (AWS is configured)") if found else ("local", "no AWS configuration")
    if out["region"][0] is None and (region := aws_region()) is not None:
        out["region"] = region
    return out

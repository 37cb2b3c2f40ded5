"""The local backend: SageMaker's training-container contract on this machine, processes for containers.

`submit` lays out one folder per host as SageMaker lays out /opt/ml on each instance and starts a
detached runner (`runner`), so it returns at once and the job outlives the CLI. Every other call
reads the job record store and the job folder (`layout`), so any cloudtrain process can follow, stop or
fetch a job that another one submitted.

With `submit --container` the hosts are containers of the job's image instead (`containers`, run by
`container_runner`); everything else about the job is the same.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.aws import translate_errors
from cloudtrain.backends.contract import ARTIFACT_KINDS, JOB_NAME, TARBALL_KINDS, hyperparameters, script_mode
from cloudtrain.backends.local import sweep as sweeps
from cloudtrain.backends.local.containers import ContainerPlan, prepare
from cloudtrain.backends.local.layout import (
    BACKEND,
    CHIEF,
    INSTANCE_TYPE,
    MODEL_DIR,
    HostLayout,
    host_names,
    private_file,
)
from cloudtrain.backends.local.runner import Graces, RunPlan
from cloudtrain.backends.local.scope import CONTAINER_RUNNER_MODULE, RUNNER_MODULE, end_if_abandoned
from cloudtrain.channels.hosts import lay_out_channels, refuse_unreachable
from cloudtrain.channels.s3cache import ChannelCache
from cloudtrain.errors import JobExists, UserError, quoted
from cloudtrain.files import staging_folder, swap_in, writing_to
from cloudtrain.jobs import EVAL_REPORT, EVAL_REPORT_MAX_BYTES, Artifacts, JobInfo, LogEvent
from cloudtrain.runtime.env import TENSORBOARD_FOLDER
from cloudtrain.store import JobRecord, JobStore
from cloudtrain.transfer.code import CODE_TARBALL, build_code_package, tarball_digest
from cloudtrain.transfer.events import mirror_folder
from cloudtrain.transfer.tarballs import iter_tree, json_member, make_tarball, safe_extract

if TYPE_CHECKING:
    from cloudtrain.settings import Settings
    from cloudtrain.spec.models import ChannelSpec, JobSpec
    from cloudtrain.sweep.trials import SweepInfo
    from cloudtrain.transfer.s3 import ProgressCallback

LOG_POLL_S = 0.2
LOG_CHUNK = 1 << 20  # bytes of a log stream read at once
LOG_RECORD_MAX = 4 << 20  # a stream's record (one JSON line) longer than this is left out, with a line saying so


class LocalBackend:
    """Jobs under `home` (`$CLOUDTRAIN_HOME`), run by a detached runner process per job.

    With `container`, jobs it submits run each host in a container of the job's image (`containers`).
    """

    name = BACKEND
    uploads_data = False  # code and data are used where they are
    record_at_submit = False  # the job store is this backend's own record of its jobs
    status_from_record = False  # its record is the job's state: `describe` brings it up to date
    status_interval = 0.5  # seconds between status checks while waiting: a local job's state is a file read

    def __init__(self, home: Path, *, container: bool = False, settings: Settings | None = None) -> None:
        self.home = Path(home).resolve()  # the runner gets absolute paths whatever its working folder
        self.store = JobStore(self.home)
        self.container = container
        self.settings = settings  # where S3 is, for s3:// channels (None: boto3's own defaults)

    def _s3(self) -> Any:
        """An S3 client for s3:// channels: the settings' endpoint, profile and region (us-east-1 if none)."""
        from cloudtrain.aws import AwsSession, client_config

        session = AwsSession(self.settings) if self.settings is not None else AwsSession()
        with translate_errors(session.where):
            boto = session.boto_session
            region = boto.get_config_variable("region") or "us-east-1"
            return boto.create_client(
                "s3", region_name=region, endpoint_url=session.settings.endpoint_url, config=client_config()
            )

    def _aws_location(self) -> dict[str, str | None]:
        """Where S3 is, for the FastFile mounts (settings only; credentials reach them through the environment)."""
        if self.settings is None:
            return {}
        return {
            "endpoint_url": self.settings.endpoint_url,
            "region": self.settings.region,
            "profile": self.settings.aws_profile,
        }

    @property
    def trains_here(self) -> bool:
        """Worker processes train with this machine's TensorFlow; in `--container` mode, the image's."""
        return not self.container

    def job_dir(self, job_name: str) -> Path:
        return self.home / "jobs" / job_name

    # -- submit ---------------------------------------------------------------------------------------------

    def plan(self, spec: JobSpec, job_name: str, *, resume_from: str | None = None) -> dict[str, Any]:
        """`--dry-run`: the job's (or sweep's) name and the spec as it would run; creates nothing."""
        if spec.sweep is not None:
            return sweeps.plan(spec, job_name)
        return {"job_name": job_name, "spec": spec.model_dump(mode="json")}

    def submit(
        self,
        spec: JobSpec,
        job_name: str,
        *,
        resume_from: str | None = None,
        parent: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> JobInfo:
        """Lay the job folder out and start its runner; raises JobExists if the name is taken. `parent`: the
        sweep this job is a trial of (the job list shows the sweep, not its trials)."""
        if not JOB_NAME.match(job_name):
            raise UserError(
                f"job name {quoted(job_name)}: 1-63 letters, digits and hyphens, not starting with a hyphen"
            )
        from cloudtrain.spec.models import legacy_keras, script_environment

        keras_path = tf_keras_path(self.container) if legacy_keras(spec) else None
        graces = Graces.from_environ(os.environ)  # the user's, never the spec's environment
        refuse_unreachable(spec.data)
        channels = local_sources(spec.data)
        restore = self._chief_checkpoints(resume_from) if resume_from else None
        plan = self._container_plan(spec, job_name, channels) if self.container else None
        job_dir = self.job_dir(job_name)
        job_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            job_dir.mkdir()  # atomic: of two submits of one name, exactly one gets here
        except FileExistsError:
            raise JobExists(job_name) from None
        try:
            self._lay_out(job_dir, spec, job_name, channels, restore, plan, graces, on_progress)
            record = JobRecord.for_spec(
                job_name,
                BACKEND,
                spec,
                instance_type=INSTANCE_TYPE,
                message="Preparing the local workers",
                parent=parent,
            )
            self.store.create(record)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        environment = script_environment(spec)
        if keras_path is not None:
            inherited = environment.get("PYTHONPATH") or os.environ.get("PYTHONPATH") or ""
            environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(keras_path), inherited) if p)
        return self._start_runner(job_dir, environment).info

    def _chief_checkpoints(self, job_name: str) -> Path:
        self.store.get(BACKEND, job_name)  # JobNotFound for an unknown job
        path = self.job_dir(job_name) / "hosts" / CHIEF / "checkpoints"
        if not path.is_dir():
            raise UserError(f"resume: job {quoted(job_name)} has no checkpoints folder ({path})")
        return path

    def _container_plan(self, spec: JobSpec, job_name: str, channels: list[Path]) -> ContainerPlan:
        """The engine checked and the image ready (built if need be) before anything is written."""
        if self.job_dir(job_name).exists():
            raise JobExists(job_name)  # before a build that could take minutes
        return prepare(spec, job_name, channels)

    def _lay_out(
        self,
        job_dir: Path,
        spec: JobSpec,
        job_name: str,
        channels: list[Path],
        restore: Path | None,
        container: ContainerPlan | None = None,
        graces: Graces = Graces(),
        on_progress: ProgressCallback | None = None,
    ) -> None:
        hosts = host_names(spec.resources.instance_count)
        sourcedir = build_code_package(spec.code, job_dir, extra=_vendored(spec)).path  # what SageMaker gets
        # --model_dir: on SageMaker an S3 prefix every host shares, apart from model.tar.gz; here a folder of the job
        values = script_mode(
            spec, job_name, submit_directory=str(sourcedir), region="local", model_dir=str(job_dir / MODEL_DIR)
        )
        layout = HostLayout(
            hosts=hosts,
            hyperparameters=hyperparameters(spec, values),
            channels=spec.data,
            sourcedir=sourcedir,
            network_interface="lo" if container is None else "eth0",
        )
        (job_dir / MODEL_DIR).mkdir()
        for host in hosts:
            layout.create(job_dir / "hosts" / host, host)
        # S3 channels: File mode fetched now (once, into the cache), FastFile mounted by the runner
        with translate_errors("S3", "reading the s3:// channels"):
            lay_out_channels(
                spec.data,
                [job_dir / "hosts" / host for host in hosts],
                cache=ChannelCache(self.home / "cache" / "s3"),
                manifests=job_dir / "channels",
                s3=self._s3,
                aws=self._aws_location(),
                on_progress=on_progress,
            )
        RunPlan(
            job_name=job_name,
            hosts=tuple(hosts),
            max_runtime=float(spec.resources.max_runtime),
            strategy=spec.distribution.strategy.value,
            communication=spec.distribution.communication,
            metrics=tuple((m.name, m.regex) for m in spec.metrics),
            restore_checkpoints=str(restore) if restore else None,
            stop_grace=graces.stop,
            failure_grace=graces.failure,
        ).save(job_dir)
        if container is not None:
            container.save(job_dir)

    def _start_runner(self, job_dir: Path, environment: Mapping[str, str]) -> JobRecord:
        """Start the runner in its own session; the spec's environment goes to it through a pipe (never to disk,
        and never into the runner's own environment, where it could change the runner's settings or imports)."""
        name = job_dir.name
        module = RUNNER_MODULE if ContainerPlan.load(job_dir) is None else CONTAINER_RUNNER_MODULE
        try:
            with open(private_file(job_dir / "runner.log"), "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", module, str(job_dir)],
                    cwd=job_dir,
                    env=dict(os.environ),
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            reason = f"could not start the local runner: {e}"
            return self.store.transition(BACKEND, name, "Failed", status="Failed", failure_reason=reason)
        with suppress(OSError):  # a runner that died at once: its guard records the end
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(dict(environment)).encode())
            proc.stdin.close()
        # The runner is our child until this process exits: a waiting thread reaps it (no zombie, no warning).
        threading.Thread(target=proc.wait, name=f"reap-runner-{name}", daemon=True).start()
        self.store.set_pid(BACKEND, name, proc.pid)
        return self.store.get(BACKEND, name)

    # -- reading --------------------------------------------------------------------------------------------

    def describe(self, job_name: str, *, tags: bool = False) -> JobInfo:
        """The job's record, brought up to date (a local job's tags are always in it)."""
        return self._refresh(self.store.get(BACKEND, job_name)).info

    def list_jobs(self, limit: int = 20) -> list[JobInfo]:
        """The newest jobs and sweeps (each one row), newest first."""
        return [self._refresh(r).info for r in self.store.list_jobs(BACKEND, limit)]

    # -- sweeps (`sweep`, `sweep_runner`) ---------------------------------------------------------------------

    def submit_sweep(self, spec: JobSpec, sweep_name: str, *, parents: Sequence[SweepInfo] = ()) -> SweepInfo:
        """The sweep's folder and record, and its detached driver, which submits the trials as local jobs."""
        from cloudtrain.spec.models import legacy_keras, script_environment
        from cloudtrain.sweep.space import require_optuna

        if not JOB_NAME.match(sweep_name):
            raise UserError(f"sweep name {quoted(sweep_name)}: letters, digits and hyphens")
        require_optuna()
        if legacy_keras(spec):
            tf_keras_path(self.container)  # now, rather than in each trial: a copy it cannot have is one line
        refuse_unreachable(spec.data)  # a channel this machine cannot serve: now, before anything starts
        sweeps.create(self.home, self.store, spec, sweep_name, container=self.container, parents=parents)
        sweeps.start(self.home, self.store, sweep_name, script_environment(spec))
        return self.sweep(sweep_name)

    def sweep(self, sweep_name: str) -> SweepInfo:
        record = self.store.get(BACKEND, sweep_name)
        if record.info.kind != "sweep":
            raise UserError(f"{sweep_name} is a job, not a sweep: cloudtrain status {sweep_name}")
        record = sweeps.refresh(self.store, record)
        return sweeps.info(record, [self._refresh(t) for t in self.store.trials(BACKEND, sweep_name)])

    def stop_sweep(self, sweep_name: str) -> SweepInfo:
        """Stopping, and SIGTERM to the driver: it stops the running trials (their saved work kept)."""
        info = self.sweep(sweep_name)
        if info.done:
            return info
        record = self.store.transition(BACKEND, sweep_name, "Stopping", status="Stopping", message="Stopping the sweep")
        sweeps.signal_runner(record.pid)
        return self.sweep(sweep_name)

    def _refresh(self, record: JobRecord) -> JobRecord:
        """A running record whose runner is gone ends now (`scope.end_if_abandoned`; a sweep's: `sweep.refresh`)."""
        if record.info.kind == "sweep":
            return sweeps.refresh(self.store, record)
        return end_if_abandoned(self.store, self.job_dir(record.name), record)

    def stop(self, job_name: str, *, reason: str | None = None) -> JobInfo:
        """Mark the job Stopping and SIGTERM its runner, which ends the workers and uploads; returns at once.
        `reason`: why (a sweep's early stopping), kept as the stopped job's reason."""
        record = self._refresh(self.store.get(BACKEND, job_name))
        if record.done:
            return record.info
        record = self.store.transition(
            BACKEND,
            job_name,
            "Stopping",
            status="Stopping",
            message=f"Stopping the training job: {reason}" if reason else "Stopping the training job",
            failure_reason=reason,
        )
        if record.pid is not None and not record.done:
            with suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
        return record.info

    def logs(self, job_name: str, *, host: str | None = None, follow: bool = False) -> Iterator[LogEvent]:
        """Every host's lines (or one host's) merged by time; with follow, until the job ends and all is read."""
        record = self.store.get(BACKEND, job_name)
        hosts = host_names(record.info.instance_count)
        if host is not None and host not in hosts:
            raise UserError(f"job {job_name} has no host {quoted(host)} (hosts: {', '.join(hosts)})")
        logs_dir = self.job_dir(job_name) / "logs"
        tails = [LogTail(h, logs_dir / f"{h}.jsonl") for h in ([host] if host else hosts)]
        if not follow:
            return _merged(tails)
        return self._follow(job_name, tails)

    def _follow(self, job_name: str, tails: list[LogTail]) -> Iterator[LogEvent]:
        while True:
            done = self.describe(job_name).done  # checked before reading: the last pass drains the streams
            yield from _merged(tails)
            if done:
                return
            time.sleep(LOG_POLL_S)

    def _tensorboard(self, job_name: str) -> Path:
        """The chief's TensorBoard folder (`output/tensorboard`, as on SageMaker): written while the job runs."""
        return self.job_dir(job_name) / "hosts" / CHIEF / "output" / TENSORBOARD_FOLDER

    def code_digest(self, info: JobInfo) -> str | None:
        """The digest of the job folder's sourcedir.tar.gz (`transfer.code.tarball_digest`); None if unreadable."""
        import tarfile
        import zlib

        tarball = self.job_dir(info.name) / CODE_TARBALL
        try:
            return tarball_digest(tarball) if tarball.is_file() else None
        except (OSError, EOFError, tarfile.TarError, zlib.error):
            return None

    def evaluation(self, info: JobInfo) -> tuple[Any, str]:
        """From output.tar.gz once the job has ended, else from the chief's output folder (a running job)."""
        tarball = self.job_dir(info.name) / "output.tar.gz"
        if tarball.is_file():
            with open(tarball, "rb") as f:
                return json_member(f, EVAL_REPORT, EVAL_REPORT_MAX_BYTES), str(tarball)
        live = self.job_dir(info.name) / "hosts" / CHIEF / "output" / "data" / EVAL_REPORT
        return (json.loads(live.read_text()), str(live)) if live.is_file() else (None, "")

    def sync_tensorboard(self, job_name: str, dest: Path) -> int:
        """The chief's TensorBoard files mirrored into dest, appending what is new (`cloudtrain.transfer.events`)."""
        self.store.get(BACKEND, job_name)  # JobNotFound for an unknown job
        return mirror_folder(self._tensorboard(job_name), dest)

    def fetch_artifacts(self, job_name: str, dest: Path, *, on_progress: ProgressCallback | None = None) -> Artifacts:
        """Extract model.tar.gz and output.tar.gz, and copy the chief's checkpoints and TensorBoard files, under
        dest (safely). Nothing is downloaded, so `on_progress` is never called.

        All of it is staged inside dest first and then swapped in, so a failed fetch leaves dest as it was.
        """
        self.store.get(BACKEND, job_name)  # JobNotFound for an unknown job
        job_dir = self.job_dir(job_name)
        dest = Path(dest)
        with writing_to(dest), staging_folder(dest) as staging:
            found = [kind for kind in TARBALL_KINDS if (job_dir / f"{kind}.tar.gz").is_file()]
            for kind in found:
                safe_extract(job_dir / f"{kind}.tar.gz", staging / kind)
            chief = job_dir / "hosts" / CHIEF
            for kind, folder in (("checkpoints", chief / "checkpoints"), ("tensorboard", self._tensorboard(job_name))):
                if _copy_tree_safely(folder, staging / kind, scratch=job_dir) is not None:
                    found.append(kind)
            for name in found:
                swap_in(staging / name, dest / name)
        return Artifacts(**{kind: dest / kind if kind in found else None for kind in ARTIFACT_KINDS})


def tf_keras_path(container: bool) -> Path | None:
    """Where the workers find tf-keras of the installed TensorFlow's minor version, for a legacy-Keras job: None
    when this Python has it (or has no TensorFlow), else the folder of the copy cloudtrain packs for AWS's stock
    images (`transfer.vendor`'s cache, filled once with `pip download`), put on the workers' PYTHONPATH. A
    script in the shape of TensorFlow's tutorial then trains unchanged after `pip install 'cloudtrain[tensorflow]'`.

    Only package metadata is read (no TensorFlow import). Containers use their image's Python: for them this
    Python's tf-keras is checked as before, as the image is built from the same requirements.
    """
    from cloudtrain.spec.lint import installed_version, tensorflow_here
    from cloudtrain.transfer import vendor

    tf = tensorflow_here()
    if tf is None:
        return None
    minor = ".".join(tf.split(".")[:2])
    found = installed_version("tf-keras")
    if found is not None and ".".join(found.split(".")[:2]) == minor:
        return None
    have = f"tf-keras {found} is installed" if found else "tf-keras is not installed"
    fix = f"{sys.executable} -m pip install --no-deps 'tf-keras=={minor}.*' (or set distribution.keras: keras3)"
    if container:
        raise UserError(f"distribution.keras: this job runs tf-keras (TF_USE_LEGACY_KERAS=1) but {have}: {fix}")
    try:
        return vendor.tf_keras_folder(minor).parent
    except UserError as e:
        raise UserError(
            f"distribution.keras: this job runs tf-keras (TF_USE_LEGACY_KERAS=1), {have} for TensorFlow {tf}, and "
            f"cloudtrain could not fetch a copy ({e}); {fix}"
        ) from None


def _vendored(spec: JobSpec) -> list[tuple[str, Path]]:
    """tf-keras packed for AWS's image, as on SageMaker, so both tarballs (and code digests) are the same; the local
    run never reads it, so a job whose copy cannot be had runs without."""
    from cloudtrain.transfer import vendor

    try:
        return vendor.job_entries(spec)
    except (UserError, OSError):
        return []


def local_sources(data: Mapping[str, ChannelSpec]) -> list[Path]:
    """The local folders and files the channels name (a container mounts them read-only)."""
    return sorted({Path(c.uri).resolve() for c in data.values() if c.is_local and c.uri})


@dataclass
class LogTail:
    """One host's log stream, read from where the last read stopped; only complete lines are returned."""

    host: str
    path: Path
    offset: int = 0
    partial: bytearray = field(default_factory=bytearray)
    dropping: int = 0  # bytes of an overlong record being skipped (written by a runner that did not cut lines)
    last_time: float = 0.0

    def read(self) -> Iterator[LogEvent]:
        """The lines written since the last read, a chunk at a time: a stream of any size in bounded memory, each
        byte copied once (a record split over chunks is gathered in `partial`, never re-joined per chunk)."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed below, once the generator is done)
        except FileNotFoundError:
            return  # the host has not started yet
        with f:
            end = os.fstat(f.fileno()).st_size  # what is there now; what comes later is the next read's
            f.seek(self.offset)
            while self.offset < end:
                data = f.read(min(LOG_CHUNK, end - self.offset))
                if not data:
                    break
                self.offset += len(data)
                yield from self._lines(data)

    def _lines(self, data: bytes) -> Iterator[LogEvent]:
        start = 0
        while (stop := data.find(b"\n", start)) >= 0:
            event = self._record(data[start:stop])
            if event is not None:
                self.last_time = event.timestamp
                yield event
            start = stop + 1
        rest = data[start:]
        if self.dropping or len(self.partial) + len(rest) > LOG_RECORD_MAX:
            self.dropping += len(self.partial) + len(rest)
            self.partial.clear()
        else:
            self.partial += rest

    def _record(self, tail: bytes) -> LogEvent | None:
        if self.dropping:
            size, self.dropping = self.dropping + len(tail), 0
            return LogEvent(self.last_time, self.host, f"cloudtrain: a log line of {size} bytes was left out")
        if self.partial:
            self.partial += tail
            line, self.partial = bytes(self.partial), bytearray()
            return _parse(line, self.host)
        return _parse(tail, self.host)


def _parse(line: bytes, host: str) -> LogEvent | None:
    try:
        data = json.loads(line)
        return LogEvent(float(data["t"]), host, str(data["m"]))
    except (ValueError, KeyError, TypeError):
        return None


def _merged(tails: list[LogTail]) -> Iterator[LogEvent]:
    return heapq.merge(*(t.read() for t in tails), key=operator.attrgetter("timestamp"))


def _copy_tree_safely(source: Path, dest: Path, scratch: Path) -> Path | None:
    """Copy a folder's regular files to dest through a tarball and safe_extract (no links, temp + rename)."""
    files = list(iter_tree(source)) if source.is_dir() else []
    if not files:
        return None
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        archive = Path(tmp) / "checkpoints.tar.gz"
        make_tarball(archive, files, mtimes=True)
        return safe_extract(archive, dest)

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
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.aws import translate_errors
from cloudtrain.backends.contract import ARTIFACT_KINDS, JOB_NAME, TARBALL_KINDS, hyperparameters, script_mode
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
from cloudtrain.backends.local.runner import RunPlan
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
    from cloudtrain.transfer.s3 import ProgressCallback

LOG_POLL_S = 0.2
LOG_CHUNK = 1 << 20  # bytes of a log stream read at once


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
        """`--dry-run`: the job's name and the spec as it would run; creates nothing."""
        return {"job_name": job_name, "spec": spec.model_dump(mode="json")}

    def submit(
        self,
        spec: JobSpec,
        job_name: str,
        *,
        resume_from: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> JobInfo:
        """Lay the job folder out and start its runner; raises JobExists if the name is taken."""
        if not JOB_NAME.match(job_name):
            raise UserError(
                f"job name {quoted(job_name)}: 1-63 letters, digits and hyphens, not starting with a hyphen"
            )
        from cloudtrain.spec.models import legacy_keras, script_environment

        if legacy_keras(spec):
            check_tf_keras()
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
            self._lay_out(job_dir, spec, job_name, channels, restore, plan, on_progress)
            record = JobRecord.for_spec(
                job_name, BACKEND, spec, instance_type=INSTANCE_TYPE, message="Preparing the local workers"
            )
            self.store.create(record)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        return self._start_runner(job_dir, script_environment(spec)).info

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
        ).save(job_dir)
        if container is not None:
            container.save(job_dir)

    def _start_runner(self, job_dir: Path, environment: Mapping[str, str]) -> JobRecord:
        """Start the runner in its own session with the spec's environment (never written to disk)."""
        name = job_dir.name
        module = RUNNER_MODULE if ContainerPlan.load(job_dir) is None else CONTAINER_RUNNER_MODULE
        try:
            with open(private_file(job_dir / "runner.log"), "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", module, str(job_dir)],
                    cwd=job_dir,
                    env={**os.environ, **environment},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            reason = f"could not start the local runner: {e}"
            return self.store.transition(BACKEND, name, "Failed", status="Failed", failure_reason=reason)
        # The runner is our child until this process exits: a waiting thread reaps it (no zombie, no warning).
        threading.Thread(target=proc.wait, name=f"reap-runner-{name}", daemon=True).start()
        self.store.set_pid(BACKEND, name, proc.pid)
        return self.store.get(BACKEND, name)

    # -- reading --------------------------------------------------------------------------------------------

    def describe(self, job_name: str, *, tags: bool = False) -> JobInfo:
        """The job's record, brought up to date (a local job's tags are always in it)."""
        return self._refresh(self.store.get(BACKEND, job_name)).info

    def list_jobs(self, limit: int = 20) -> list[JobInfo]:
        return [self._refresh(r).info for r in self.store.list_jobs(BACKEND, limit)]

    def _refresh(self, record: JobRecord) -> JobRecord:
        """A running record whose runner is gone ends now (`scope.end_if_abandoned`)."""
        return end_if_abandoned(self.store, self.job_dir(record.name), record)

    def stop(self, job_name: str) -> JobInfo:
        """Mark the job Stopping and SIGTERM its runner, which ends the workers and uploads; returns at once."""
        record = self._refresh(self.store.get(BACKEND, job_name))
        if record.done:
            return record.info
        record = self.store.transition(
            BACKEND, job_name, "Stopping", status="Stopping", message="Stopping the training job"
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


def check_tf_keras() -> None:
    """tf-keras of the installed TensorFlow's minor version must be in this Python for a legacy-Keras job.

    Only the package metadata is read (no TensorFlow import). Without TensorFlow there is nothing to check.
    """
    from cloudtrain.spec.lint import installed_version, tensorflow_here

    tf = tensorflow_here()
    if tf is None:
        return
    minor = ".".join(tf.split(".")[:2])
    found = installed_version("tf-keras")
    if found is None or ".".join(found.split(".")[:2]) != minor:
        have = f"tf-keras {found} is installed" if found else "tf-keras is not installed"
        raise UserError(
            f"distribution.keras: this job runs tf-keras (TF_USE_LEGACY_KERAS=1) but {have} for TensorFlow {tf}: "
            f"{sys.executable} -m pip install --no-deps 'tf-keras=={minor}.*' (or set distribution.keras: keras3)"
        )


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
    partial: bytes = b""

    def read(self) -> Iterator[LogEvent]:
        """The lines written since the last read, a chunk at a time: a stream of any size in bounded memory."""
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
                *lines, self.partial = (self.partial + data).split(b"\n")
                yield from (event for line in lines if (event := _parse(line, self.host)) is not None)


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

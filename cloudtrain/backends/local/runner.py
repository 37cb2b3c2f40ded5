"""The detached supervisor of one local job: `python -m cloudtrain.backends.local.runner <job folder>`.

It plays SageMaker's part: one worker process per host (`cloudtrain.runtime.launcher`), one log stream
per host, the chief's metric lines, the secondary statuses, the max runtime, a stop, and the upload of
the chief's model and output. TensorFlow workers ignore SIGTERM and wait forever for a dead peer
(MultiWorkerMirroredStrategy's collectives have no timeout), so every ending goes through SIGKILL: each
worker runs in its own process group (launcher and script together), and the runner kills those groups,
and the job's scope (`scope`: whatever the scripts started, even in sessions of their own), on every
exit path; a guard does it when the runner itself is killed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cloudtrain.backends.contract import HOST_ADDRESSES_VARIABLE, LOCAL_VARIABLE, OPT_ML_VARIABLE, runtime_environment
from cloudtrain.backends.local.layout import BACKEND, CHIEF, WORKERS_FILE, private_file
from cloudtrain.backends.local.scope import ENDED, RUNNER_MODULE, SCOPE_VARIABLE, kill_scope, start_guard
from cloudtrain.channels import lazyfs
from cloudtrain.channels.hosts import load_mounts
from cloudtrain.errors import CloudtrainError
from cloudtrain.files import atomic_path
from cloudtrain.redact import mask, secret_values
from cloudtrain.runtime.env import FAILURE_REASON_MAX, TENSORBOARD_FOLDER
from cloudtrain.store import JobStore
from cloudtrain.transfer.tarballs import tar_directory

MODULE = RUNNER_MODULE
PLAN_FILE = "runner.json"
TMP_DIR = "tmp"  # the workers' TMPDIR, one folder per host
DEFAULT_STOP_GRACE_S = 10.0
DEFAULT_FAILURE_GRACE_S = 5.0
POLL_S = 0.1
METRICS_FLUSH_S = 1.0
READER_JOIN_S = 5.0
RECORD_END_S = 3600.0  # how long a runner waits for the store to take the job's end (a full disk)
RECORD_RETRY_S = 1.0
METRIC_LINE_MAX = 4096  # characters of a line the metric regexes see
METRIC_MATCH_S = 0.1  # time one regex may take on one line


@dataclass(frozen=True)
class RunPlan:
    """What the runner needs beyond the host folders, written by `LocalBackend.submit`.

    The spec's environment is not here: it reaches the runner (and its workers) through the runner's
    own environment, so secrets are never written to the job folder.
    """

    job_name: str
    hosts: tuple[str, ...]
    max_runtime: float
    strategy: str
    communication: str
    metrics: tuple[tuple[str, str], ...] = ()  # (name, regex)
    restore_checkpoints: str | None = None  # a previous job's chief checkpoints, copied into every host

    def save(self, job_dir: Path) -> None:
        with atomic_path(job_dir / PLAN_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, job_dir: Path) -> RunPlan:
        data = json.loads((job_dir / PLAN_FILE).read_text())
        return cls(
            job_name=data["job_name"],
            hosts=tuple(data["hosts"]),
            max_runtime=float(data["max_runtime"]),
            strategy=data["strategy"],
            communication=data["communication"],
            metrics=tuple((name, regex) for name, regex in data["metrics"]),
            restore_checkpoints=data["restore_checkpoints"],
        )


@dataclass(frozen=True)
class Graces:
    """Seconds a worker gets between SIGTERM and SIGKILL (env-overridable so tests run fast)."""

    stop: float = DEFAULT_STOP_GRACE_S
    failure: float = DEFAULT_FAILURE_GRACE_S

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Graces:
        return cls(
            stop=float(environ.get("CLOUDTRAIN_STOP_GRACE") or DEFAULT_STOP_GRACE_S),
            failure=float(environ.get("CLOUDTRAIN_FAILURE_GRACE") or DEFAULT_FAILURE_GRACE_S),
        )


@dataclass(frozen=True)
class Outcome:
    """How the job ends: the final status, secondary status and failure reason, and whether to upload."""

    status: str
    secondary: str
    message: str
    reason: str | None = None
    upload: bool = False


@dataclass
class Worker:
    """One host's launcher process; its process group holds the user's script too."""

    host: str
    host_dir: Path
    proc: subprocess.Popen[bytes]
    last_line: str = ""
    exited_at: float | None = None
    reader: threading.Thread | None = field(default=None, repr=False)
    log: LogStream | None = field(default=None, repr=False)

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.exited_at is None:
            self.exited_at = time.monotonic()
        return code

    def signal_group(self, sig: int) -> None:
        with suppress(ProcessLookupError, PermissionError):  # the whole group has exited already
            os.killpg(self.proc.pid, sig)

    def terminate(self) -> None:
        """SIGTERM to the launcher only, which forwards it to the script (as `docker stop` does to PID 1)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def failure_reason(self, secrets: list[str]) -> str:
        """The worker's `output/failure` if it wrote one, else its exit code and last line of output; masked.

        The host's `output/failure` is rewritten masked too, so no copy of the secret is left on disk.
        """
        failure = self.host_dir / "output" / "failure"
        if failure.is_file():
            text = failure.read_text(errors="replace")
            masked = mask(text, secrets)
            if masked != text:
                with atomic_path(failure) as tmp:
                    tmp.write_text(masked)
            if masked.strip():
                return masked.strip()[:FAILURE_REASON_MAX]
        code = self.proc.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        last = f": {self.last_line}" if self.last_line else " (it printed nothing)"
        return f"AlgorithmError: {self.host} exited with {how}{last}"[:FAILURE_REASON_MAX]


class MetricTracker:
    """The spec's metric regexes over the chief's lines; the last value of each, written at most once a second.

    Matching is bounded (the `regex` engine, a time limit per line, the first METRIC_LINE_MAX characters)
    and lets go of the GIL, so no pattern can stall the log stream, a stop or the max runtime.
    """

    def __init__(self, specs: Iterable[tuple[str, str]], write: Callable[[dict[str, float]], None]) -> None:
        import regex as bounded_re

        self._patterns = [(name, bounded_re.compile(pattern)) for name, pattern in specs]
        self._write = write
        self.values: dict[str, float] = {}
        self._dirty = False
        self._flushed = 0.0

    def feed(self, line: str) -> None:
        for name, pattern in self._patterns:
            try:
                match = pattern.search(line[:METRIC_LINE_MAX], timeout=METRIC_MATCH_S, concurrent=True)
            except TimeoutError:
                note(f"metric {name}: matching a line took over {METRIC_MATCH_S:g}s; line skipped")
                continue
            if match:
                try:
                    self.values[name] = float(match.group(1))
                    self._dirty = True
                except (TypeError, ValueError):
                    pass
        if self._dirty and time.monotonic() - self._flushed >= METRICS_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self._dirty:
            self._flushed = time.monotonic()
            try:
                self._write(dict(self.values))
            except CloudtrainError as e:  # the store cannot be written (a full disk): the next flush tries again
                note(f"metrics not recorded yet: {e}")
                return
            self._dirty = False


def note(message: str) -> None:
    """A line for runner.log, which a full disk must not turn into a crash of the runner."""
    with suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


@dataclass
class LogStream:
    """One host's log stream, written a whole line at a time. A line that cannot be written (a full disk) is
    counted, the worker's output is still read (so the worker never blocks), and the count is written as a
    line of its own as soon as writing works again."""

    path: Path
    lost: int = 0
    error: str = ""
    _fd: int | None = field(default=None, repr=False)

    def write(self, message: str) -> None:
        if not (self.write_lost() and self._append(message)):
            self.lost += 1

    def write_lost(self) -> bool:
        """The count of lost lines, as a line of the stream; whether nothing is left unsaid."""
        note = f"[cloudtrain: {self.lost} lines of this host's output could not be written: {self.error}]"
        if self.lost and self._append(note):
            self.lost = 0
        return not self.lost

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, message: str) -> bool:
        data = json.dumps({"t": time.time(), "m": message}).encode() + b"\n"
        try:
            if self._fd is None:
                self._fd = private_file(self.path)
            written = os.write(self._fd, data)
            if written != len(data):  # never half a line: the rest would not fit either
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return True
        except OSError as e:
            self.error = e.strerror or str(e)
            return False


def pump_output(worker: Worker, log: LogStream, on_line: Callable[[str], None] | None, secrets: list[str]) -> None:
    """Copy a worker's merged stdout+stderr to its log stream, one `{"t", "m"}` JSON line per line.

    A secret the script prints (`cloudtrain.redact.mask`) is written as `***`.
    """
    assert worker.proc.stdout is not None
    try:
        for raw in worker.proc.stdout:
            line = mask(raw.decode("utf-8", "replace").rstrip("\r\n"), secrets)
            log.write(line)
            if line.strip():
                worker.last_line = line
            if on_line is not None:
                on_line(line)
    finally:
        log.close()


def free_ports(count: int) -> list[int]:
    """Free loopback ports, held open together while choosing so no two are the same."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class Runner:
    """Runs one job to its end; `run()` always leaves no worker behind and the record terminal."""

    def __init__(self, job_dir: Path, stop: threading.Event, graces: Graces) -> None:
        self.job_dir = job_dir
        self.plan = RunPlan.load(job_dir)
        self.store = JobStore(job_dir.parents[1])
        self.stop = stop
        self.graces = graces
        self.workers: list[Worker] = []
        self.metrics = MetricTracker(self.plan.metrics, self._write_metrics)
        self.secrets = secret_values(os.environ, self._hyperparameters())

    def _hyperparameters(self) -> dict[str, str]:
        """The job's hyperparameters (JSON-encoded values decoded), whose secret-named ones are masked too."""
        path = self.job_dir / "hosts" / CHIEF / "input" / "config" / "hyperparameters.json"
        with suppress(OSError, ValueError):
            encoded = json.loads(path.read_text())
            return {k: v if isinstance(v := json.loads(e), str) else json.dumps(v) for k, e in encoded.items()}
        return {}

    def _write_metrics(self, values: dict[str, float]) -> None:
        self.store.set_metrics(BACKEND, self.plan.job_name, values)

    def _step(self, secondary: str, message: str, status: str | None = None, reason: str | None = None) -> None:
        """Record a step; one the store cannot take now (a full disk) is noted and skipped: the job goes on."""
        try:
            self.store.transition(
                BACKEND, self.plan.job_name, secondary, status=status, message=message, failure_reason=reason
            )
        except CloudtrainError as e:
            note(f"could not record {secondary}: {e}")

    def _record_end(self, outcome: Outcome) -> None:
        """Record how the job ended, waiting for the store to take it (space coming back on a full disk), so the
        real cause is what `status` shows rather than a dead runner; then the log lines that were lost."""
        deadline = time.monotonic() + RECORD_END_S
        while True:
            try:
                self.store.transition(
                    BACKEND,
                    self.plan.job_name,
                    outcome.secondary,
                    status=outcome.status,
                    message=outcome.message,
                    failure_reason=outcome.reason,
                )
                break
            except CloudtrainError as e:
                if time.monotonic() > deadline:
                    raise
                note(f"could not record the end yet ({e}); trying again")
                time.sleep(RECORD_RETRY_S)
        for w in self.workers:
            if w.log is not None:
                w.log.write_lost()
                w.log.close()

    def run(self) -> int:
        guard = start_guard(self.job_dir)  # ends the job's processes and records the end if this one dies
        mounts = ExitStack()  # FastFile channels, served while the job runs
        try:
            outcome = self._download(mounts) or self._train()
            if outcome.upload:
                self._step("Uploading", "Uploading generated training model")
                self._upload()
        except Exception as e:
            with suppress(OSError, ValueError):
                traceback.print_exc()
            outcome = Outcome("Failed", "Failed", "Training job failed", f"InternalServerError: local runner: {e}")
        finally:
            self._kill_all()
            mounts.close()
        self.metrics.flush()
        self._record_end(outcome)
        guard.write(ENDED)
        guard.close()
        return 0 if outcome.status == "Completed" else 1

    def _download(self, mounts: ExitStack) -> Outcome | None:
        """Mount the FastFile channels and restore checkpoints into every host, as SageMaker does before training
        (File-mode channels were filled when the job was laid out)."""
        self._step("Downloading", "Downloading input data")
        for mount in load_mounts(self.job_dir / "channels"):  # each unmounts itself if this runner dies
            log = self.job_dir / "channels" / f"{Path(mount.manifest).stem}.log"
            mounts.enter_context(lazyfs.mounted(Path(mount.manifest), Path(mount.mountpoint), log))
        if self.plan.restore_checkpoints:
            for host in self.plan.hosts:
                dest = self.job_dir / "hosts" / host / "checkpoints"
                shutil.copytree(self.plan.restore_checkpoints, dest, symlinks=True, dirs_exist_ok=True)
        if self.store.get(BACKEND, self.plan.job_name).info.status == "Stopping":
            self.stop.set()  # a stop that came before this process could receive its signal
        if self.stop.is_set():
            return Outcome("Stopped", "Stopped", "Training job stopped before training started")
        return None

    def _train(self) -> Outcome:
        self._step("Training", "Training in progress")
        ports = free_ports(len(self.plan.hosts))
        addresses = {h: f"127.0.0.1:{p}" for h, p in zip(self.plan.hosts, ports, strict=True)}
        for host in self.plan.hosts:
            self.workers.append(self._start_worker(host, addresses))
            with atomic_path(self.job_dir / WORKERS_FILE) as tmp:  # for whoever finds this runner dead
                tmp.write_text(json.dumps({w.host: w.proc.pid for w in self.workers}))
        stopped = self._supervise()
        kill_scope(self.job_dir)  # what the scripts left running (a detached child holds their output open)
        self._join_readers()
        if stopped is not None:
            return stopped
        failed = self._first_failed()
        if failed is not None:
            return Outcome("Failed", "Failed", "Training job failed", failed.failure_reason(self.secrets))
        return Outcome("Completed", "Completed", "Training job completed", upload=True)

    def _start_worker(self, host: str, addresses: dict[str, str]) -> Worker:
        host_dir = self.job_dir / "hosts" / host
        env = {
            **os.environ,
            OPT_ML_VARIABLE: str(host_dir),
            HOST_ADDRESSES_VARIABLE: json.dumps(addresses),
            LOCAL_VARIABLE: "1",
            **runtime_environment(self.plan.strategy, self.plan.communication, str(host_dir / "checkpoints")),
            "TRAINING_JOB_NAME": self.plan.job_name,
            "PYTHONUNBUFFERED": "1",
            SCOPE_VARIABLE: str(self.job_dir),  # every process the worker starts is the job's (`scope`)
            "TMPDIR": str(self._tmp(host)),  # removed with the job's processes, as an instance's disk is
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudtrain.runtime.launcher"],
            cwd=host_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one killpg reaches the launcher and the script
        )
        return self._pumped(Worker(host, host_dir, proc))

    def _pumped(self, worker: Worker) -> Worker:
        """The worker with a thread copying its output to its log stream (the chief's through the metrics)."""
        on_line = self.metrics.feed if worker.host == CHIEF else None
        log_path = self.job_dir / "logs" / f"{worker.host}.jsonl"
        log_path.parent.mkdir(exist_ok=True)
        worker.log = LogStream(log_path)
        worker.reader = threading.Thread(
            target=pump_output, args=(worker, worker.log, on_line, self.secrets), daemon=True
        )
        worker.reader.start()
        return worker

    def _supervise(self) -> Outcome | None:
        """Wait for the workers; on a stop, the max runtime or a failed worker, end the others: TERM, grace, KILL.

        Returns the outcome of a stop, or None when the workers ended by themselves (one may have failed).
        """
        deadline = time.monotonic() + self.plan.max_runtime
        stopped: Outcome | None = None
        kill_at: float | None = None
        while [w for w in self.workers if w.poll() is None]:  # a list, not any(): poll every worker
            now = time.monotonic()
            if kill_at is None:
                stopped = self._stop_outcome(past_deadline=now >= deadline)
                if stopped is not None or self._first_failed() is not None:
                    for w in self.workers:
                        w.terminate()
                    kill_at = now + (self.graces.stop if stopped is not None else self.graces.failure)
            elif now >= kill_at:
                for w in self.workers:
                    w.signal_group(signal.SIGKILL)
            time.sleep(POLL_S)
        return stopped

    def _stop_outcome(self, past_deadline: bool) -> Outcome | None:
        """A stop request or the max runtime passing ends the job as Stopped (SageMaker's semantics)."""
        if self.stop.is_set():
            self._step("Stopping", "Stopping the training job", status="Stopping")
            return Outcome("Stopped", "Stopped", "Training job stopped", upload=True)
        if past_deadline:
            limit = f"{self.plan.max_runtime:g}s"
            self._step("Stopping", f"Stopping the training job: max_runtime of {limit} exceeded", status="Stopping")
            reason = f"MaxRuntimeExceeded: the job ran longer than its max_runtime of {limit}"
            return Outcome("Stopped", "MaxRuntimeExceeded", "Training job exceeded its max_runtime", reason, True)
        return None

    def _first_failed(self) -> Worker | None:
        """The first worker seen exiting non-zero: its failure is the job's."""
        failed = [w for w in self.workers if w.proc.returncode not in (None, 0)]
        return min(failed, key=lambda w: (w.exited_at or 0.0, self.plan.hosts.index(w.host)), default=None)

    def _join_readers(self) -> None:
        for w in self.workers:
            if w.reader is not None:
                w.reader.join(READER_JOIN_S)

    def _upload(self) -> None:
        """Tar the chief's model/ and output/data/ beside the job, as SageMaker uploads them to S3."""
        chief = self.job_dir / "hosts" / CHIEF
        model, output = self.job_dir / "model.tar.gz", self.job_dir / "output.tar.gz"
        tar_directory(chief / "model", model)
        tar_directory(chief / "output" / "data", output)
        artifacts = {"model": str(model), "output": str(output), "checkpoints": str(chief / "checkpoints")}
        if (chief / "output" / TENSORBOARD_FOLDER).is_dir():
            artifacts["tensorboard"] = str(chief / "output" / TENSORBOARD_FOLDER)
        self.store.set_artifacts(BACKEND, self.plan.job_name, artifacts)

    def _tmp(self, host: str) -> Path:
        path = self.job_dir / TMP_DIR / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _kill_all(self) -> None:
        """SIGKILL every worker's group and the rest of the job's scope (stray children of a finished script,
        ones that left with setsid), reap the launchers and remove the workers' temporary files."""
        for w in self.workers:
            w.signal_group(signal.SIGKILL)
        kill_scope(self.job_dir)
        for w in self.workers:
            w.proc.wait()
        self._join_readers()
        shutil.rmtree(self.job_dir / TMP_DIR, ignore_errors=True)


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT: a stop request, handled by the supervision loop."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    return stop


def main(argv: list[str] | None = None, runner: type[Runner] = Runner, module: str = MODULE) -> int:
    """`python -m <module> JOB_DIR`: the job in that folder run to its end by `runner` (a stop is SIGTERM)."""
    stop = stop_event()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {module} JOB_DIR", file=sys.stderr)
        return 2
    return runner(Path(args[0]).resolve(), stop, Graces.from_environ(os.environ)).run()


if __name__ == "__main__":
    sys.exit(main())

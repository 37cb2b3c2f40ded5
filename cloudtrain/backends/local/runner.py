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
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from cloudtrain.backends.contract import HOST_ADDRESSES_VARIABLE, LOCAL_VARIABLE, OPT_ML_VARIABLE, runtime_environment
from cloudtrain.backends.local.layout import BACKEND, CHIEF, WORKERS_FILE, private_file
from cloudtrain.backends.local.scope import ENDED, RUNNER_MODULE, SCOPE_VARIABLE, kill_scope, start_guard
from cloudtrain.channels import lazyfs
from cloudtrain.channels.hosts import load_mounts
from cloudtrain.errors import CloudtrainError, UserError, one_line
from cloudtrain.files import atomic_path
from cloudtrain.redact import mask, secret_values
from cloudtrain.runtime.env import FAILURE_REASON_MAX, TENSORBOARD_FOLDER
from cloudtrain.runtime.reaper import become_subreaper, end_leftovers
from cloudtrain.store import JobStore
from cloudtrain.transfer.tarballs import left_out_note, tar_directory, tree_entries

MODULE = RUNNER_MODULE
PLAN_FILE = "runner.json"
TMP_DIR = "tmp"  # the workers' TMPDIR, one folder per host
DEFAULT_STOP_GRACE_S = 10.0
DEFAULT_FAILURE_GRACE_S = 5.0
GRACE_MAX_S = 3600.0  # SageMaker gives a stopped job 120 s; an hour is plenty for any local script
POLL_S = 0.1
METRICS_FLUSH_S = 1.0
READER_JOIN_S = 5.0
LOG_LINE_MAX = 256 << 10  # bytes of a log line (CloudWatch's event size); a longer one is cut into several
OUTPUT_CHUNK = 64 << 10  # bytes of a worker's output read at once
_LINE_END = re.compile(rb"\r\n|\r|\n")
RECORD_END_S = 3600.0  # how long a runner waits for the store to take the job's end (a full disk)
RECORD_RETRY_S = 1.0
METRIC_LINE_MAX = 4096  # characters of a line the metric regexes see
METRIC_MATCH_S = 0.1  # time one regex may take on one line


@dataclass(frozen=True)
class RunPlan:
    """What the runner needs beyond the host folders, written by `LocalBackend.submit`.

    The spec's environment is not here: the runner reads it from its stdin (a pipe from the submitting process)
    and hands it to its workers only, so secrets are never written to the job folder and the spec cannot change
    the runner's own settings (the graces below are the submitting user's, from their environment).
    """

    job_name: str
    hosts: tuple[str, ...]
    max_runtime: float
    strategy: str
    communication: str
    metrics: tuple[tuple[str, str], ...] = ()  # (name, regex)
    restore_checkpoints: str | None = None  # a previous job's chief checkpoints, copied into every host
    stop_grace: float = DEFAULT_STOP_GRACE_S
    failure_grace: float = DEFAULT_FAILURE_GRACE_S

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
            stop_grace=float(data.get("stop_grace", DEFAULT_STOP_GRACE_S)),
            failure_grace=float(data.get("failure_grace", DEFAULT_FAILURE_GRACE_S)),
        )

    @property
    def graces(self) -> Graces:
        return Graces(self.stop_grace, self.failure_grace)


@dataclass(frozen=True)
class Graces:
    """Seconds a worker gets between SIGTERM and SIGKILL (env-overridable so tests run fast)."""

    stop: float = DEFAULT_STOP_GRACE_S
    failure: float = DEFAULT_FAILURE_GRACE_S

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Graces:
        """The graces a user set (CLOUDTRAIN_STOP_GRACE, CLOUDTRAIN_FAILURE_GRACE); a UserError if not seconds."""
        return cls(
            stop=_seconds(environ, "CLOUDTRAIN_STOP_GRACE", DEFAULT_STOP_GRACE_S),
            failure=_seconds(environ, "CLOUDTRAIN_FAILURE_GRACE", DEFAULT_FAILURE_GRACE_S),
        )


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name) or ""
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= GRACE_MAX_S:  # NaN fails too
        raise UserError(f"{name}: expected seconds from 0 to {GRACE_MAX_S:g} (got {text[:40]!r})")
    return value


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
    readers: tuple[threading.Thread, ...] = field(default=(), repr=False)
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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # stdout's and stderr's pumps

    def write(self, message: str) -> None:
        with self._lock:
            if not (self.write_lost() and self._append(message)):
                self.lost += 1

    def write_lost(self) -> bool:
        """The count of lost lines, as a line of the stream; whether nothing is left unsaid."""
        note = f"[cloudtrain: {self.lost} lines of this host's output could not be written: {self.error}]"
        if self.lost and self._append(note):
            self.lost = 0
        return not self.lost

    def close(self) -> None:
        with self._lock:
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


def output_lines(stream: IO[bytes], limit: int = LOG_LINE_MAX) -> Iterator[bytes]:
    """A worker's output as lines, ended by `\\n`, `\\r\\n` or a lone `\\r` (a progress bar's redraw), none longer
    than `limit` bytes (a longer one is cut, as CloudWatch cuts an event): a script that never writes a newline
    is carried in bounded memory, and its output is seen as it comes."""
    pending = b""
    while chunk := stream.read1(OUTPUT_CHUNK):  # type: ignore[attr-defined]  # a BufferedReader's
        data = pending + chunk  # pending is under `limit`: no copy grows with the line
        hold = data.endswith(b"\r")  # perhaps the first half of \r\n
        *lines, pending = _LINE_END.split(data[:-1] if hold else data)
        yield from lines
        while len(pending) > limit:
            yield pending[:limit]
            pending = pending[limit:]
        pending += b"\r" if hold else b""
    pending = pending.removesuffix(b"\r")
    if pending:
        yield pending


def pump_output(
    worker: Worker, stream: IO[bytes], log: LogStream, on_line: Callable[[str], None] | None, secrets: list[str]
) -> None:
    """Copy one of a worker's output streams (stdout or stderr) to its log stream, one `{"t", "m"}` JSON line per
    line. The two are read apart, each cut into whole lines, as AWS's toolkit reads a script's: one pipe for both
    would let TensorFlow's stderr land inside a metric line the script was still printing to stdout.

    A secret the script prints (`cloudtrain.redact.mask`) is written as `***`.
    """
    for raw in output_lines(stream):
        line = mask(raw.decode("utf-8", "replace"), secrets)
        log.write(line)
        if line.strip():
            worker.last_line = line
        if on_line is not None:
            on_line(line)


def free_ports(count: int) -> list[int]:
    """Free loopback ports, held open together while choosing so no two are the same."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class Runner:
    """Runs one job to its end; `run()` always leaves no worker behind and the record terminal."""

    def __init__(
        self, job_dir: Path, stop: threading.Event, graces: Graces, environment: Mapping[str, str] | None = None
    ) -> None:
        self.job_dir = job_dir
        self.plan = RunPlan.load(job_dir)
        self.store = JobStore(job_dir.parents[1])
        self.stop = stop
        self.graces = graces
        self.environment = dict(environment or {})  # the spec's, for the workers only
        self.guard_pid = 0
        self.workers: list[Worker] = []
        self.metrics = MetricTracker(self.plan.metrics, self._write_metrics)
        self.secrets = secret_values(os.environ, self.environment, self._hyperparameters())

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
        become_subreaper()  # what a worker leaves behind, even outside the job's scope, is reparented to this process
        guard, self.guard_pid = start_guard(self.job_dir)  # ends the job's processes and records it if this one dies
        mounts = ExitStack()  # FastFile channels, served while the job runs
        try:
            outcome = self._download(mounts) or self._train()
            if outcome.upload:
                self._step("Uploading", "Uploading generated training model")
                self._upload()
        except Exception as e:
            with suppress(OSError, ValueError):
                traceback.print_exc()
            reason = one_line(f"InternalServerError: local runner: {e}", FAILURE_REASON_MAX)
            outcome = Outcome("Failed", "Failed", "Training job failed", reason)
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
                left_out = restore_checkpoints(Path(self.plan.restore_checkpoints), dest)
                if said := left_out_note("checkpoints restored", left_out):
                    (self.job_dir / "logs").mkdir(exist_ok=True)
                    stream = LogStream(self.job_dir / "logs" / f"{host}.jsonl")  # before the worker's first line
                    stream.write(f"cloudtrain: {said}")
                    stream.close()
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
            **self.environment,
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
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: one killpg reaches the launcher and the script
        )
        return self._pumped(Worker(host, host_dir, proc))

    def _pumped(self, worker: Worker) -> Worker:
        """The worker with a thread copying its output to its log stream (the chief's through the metrics)."""
        on_line = self.metrics.feed if worker.host == CHIEF else None
        log_path = self.job_dir / "logs" / f"{worker.host}.jsonl"
        log_path.parent.mkdir(exist_ok=True)
        worker.log = LogStream(log_path)
        streams = [s for s in (worker.proc.stdout, worker.proc.stderr) if s is not None]
        worker.readers = tuple(
            threading.Thread(target=pump_output, args=(worker, s, worker.log, on_line, self.secrets), daemon=True)
            for s in streams
        )
        for reader in worker.readers:
            reader.start()
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
            for reader in w.readers:
                reader.join(READER_JOIN_S)

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
        end_leftovers(0.0, frozenset({self.guard_pid}), self._say)  # ones without the scope's mark, too
        self._join_readers()
        shutil.rmtree(self.job_dir / TMP_DIR, ignore_errors=True)

    def _say(self, line: str) -> None:
        """A line of the runner's own in the chief's log stream (the workers' streams are closed by then)."""
        (self.job_dir / "logs").mkdir(exist_ok=True)
        stream = LogStream(self.job_dir / "logs" / f"{CHIEF}.jsonl")
        stream.write(line)
        stream.close()


def restore_checkpoints(source: Path, dest: Path) -> list[str]:
    """Copy a job's checkpoints (one rule with packing: regular files and links to files inside) to dest; what was
    left out, with why. A file that vanishes meanwhile (a running job's rotation) is skipped: the job's own
    restore picks the newest checkpoint that is whole."""
    files, left_out = tree_entries(source)
    for name, path in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, target, follow_symlinks=True)
        except FileNotFoundError:
            continue
    return left_out


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
    job_dir = Path(args[0]).resolve()
    environment = read_environment(sys.stdin.buffer)
    return runner(job_dir, stop, RunPlan.load(job_dir).graces, environment).run()


def read_environment(stream: IO[bytes]) -> dict[str, str]:
    """The spec's environment, as `LocalBackend` writes it to the runner's stdin (JSON); none on a closed stdin."""
    data = json.loads(stream.read() or b"{}")
    return {str(k): str(v) for k, v in data.items()}


if __name__ == "__main__":
    sys.exit(main())

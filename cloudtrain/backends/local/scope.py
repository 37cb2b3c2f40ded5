"""A local job's processes as one scope, ended as a whole, and a guard that ends it when the runner dies.

Every worker, and whatever it starts, carries `CLOUDTRAIN_JOB_SCOPE=<job folder>` in its environment,
which survives `setsid`, double forks and reparenting where process groups do not: the scope is every
process whose environment holds it (read from /proc; where there is no /proc, the workers' process
groups are all there is). The guard is a small process in a session of its own holding one end of a pipe
from the runner: when the runner dies, even by SIGKILL, the pipe closes, and the guard ends the scope and
records the job's end at once, without waiting for a command to look at the job.

    python -m cloudtrain.backends.local.scope JOB_DIR    (the guard; its stdin is the pipe)

A command that finds a job's runner gone ends the job the same way (`end_if_abandoned`), through the job store:
the backend, the guard and the test control plane share this one ending.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import IO

from cloudtrain.backends.local.containers import ContainerPlan, remove_all
from cloudtrain.backends.local.layout import BACKEND, WORKERS_FILE
from cloudtrain.store import JobRecord, JobStore

SCOPE_VARIABLE = "CLOUDTRAIN_JOB_SCOPE"
MODULE = "cloudtrain.backends.local.scope"
RUNNER_MODULE = "cloudtrain.backends.local.runner"  # `python -m` of a job of processes
CONTAINER_RUNNER_MODULE = "cloudtrain.backends.local.container_runner"  # of a job of containers
RUNNER_START_S = 60.0  # a record older than this without a runner pid was never started
RUNNER_DIED = "local runner process died"
ENDED = b"ended"  # what the runner writes to the guard when it ends by itself
KILL_ROUNDS = 20  # a process may fork while its scope is being killed: look again until none is left
PROC = Path("/proc")


def scope_pids(job_dir: Path) -> list[int]:
    """The live processes of the job's scope (none where there is no /proc)."""
    marker = f"{SCOPE_VARIABLE}={job_dir}".encode() + b"\0"
    found = []
    for entry in PROC.iterdir() if PROC.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError):
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def kill_scope(job_dir: Path) -> None:
    """SIGKILL every process of the job's scope, however it detached itself."""
    for _ in range(KILL_ROUNDS):
        pids = scope_pids(job_dir)
        if not pids:
            return
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def start_guard(job_dir: Path, log: IO[bytes] | int | None = None) -> tuple[IO[bytes], int]:
    """Start the job's guard; the runner keeps the returned pipe open, and writes ENDED to it when done. Returns
    the pipe and the guard's pid (the one child of the runner that must outlive the job's processes)."""
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != SCOPE_VARIABLE}
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(job_dir)],
            stdin=read_end,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # not in the runner's group: whatever kills the runner spares it
        )
    finally:
        os.close(read_end)
    return os.fdopen(write_end, "wb", buffering=0), process.pid


def guard(job_dir: Path) -> int:
    """Wait for the runner to end; if it died rather than ended, end its scope and record the job's end."""
    said = sys.stdin.buffer.read()  # EOF: the runner closed the pipe, or died
    if said == ENDED:
        return 0
    kill_scope(job_dir)
    deadline = time.monotonic() + 10.0  # the dead runner's pid may take a moment to be reaped
    store = JobStore(job_dir.parents[1])
    while not end_if_abandoned(store, job_dir, store.get(BACKEND, job_dir.name)).done:
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return 0


def end_if_abandoned(store: JobStore, job_dir: Path, record: JobRecord) -> JobRecord:
    """A running record whose runner is gone ends now (Stopped if a stop was asked, else Failed), its workers
    killed first; any other record is returned as it is."""
    if record.done or _runner_alive(record):
        return record
    kill_workers(job_dir)
    if record.info.status == "Stopping":
        return store.transition(BACKEND, record.name, "Stopped", status="Stopped", message="Training job stopped")
    return store.transition(
        BACKEND, record.name, "Failed", status="Failed", message="Training job failed", failure_reason=RUNNER_DIED
    )


def _runner_alive(record: JobRecord) -> bool:
    if record.pid is None:
        return time.time() - (record.info.created or 0.0) < RUNNER_START_S  # submit is still starting it
    return runner_alive(record.pid, record.name)


def kill_workers(job_dir: Path) -> None:
    """SIGKILL the worker process groups and the job's scope a dead runner left behind, or remove its
    containers (TF workers would wait forever for their dead peers)."""
    plan = ContainerPlan.load(job_dir)
    if plan is not None:
        remove_all(plan, job_dir.name)
    with suppress(OSError, ValueError):
        pids = json.loads((job_dir / WORKERS_FILE).read_text()).values()
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
    kill_scope(job_dir)


def runner_alive(
    pid: int, job_name: str, *, modules: tuple[str, ...] = (RUNNER_MODULE, CONTAINER_RUNNER_MODULE)
) -> bool:
    """Whether pid is a live (not zombie) local runner of that job.

    Checking the command line where /proc has it guards against the pid having been reused.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True  # no /proc (macOS): the signal check is all there is
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, IndexError):
        return False
    argv = [a for a in argv if a]
    runs_job = any(module in argv for module in modules)
    return state != "Z" and runs_job and Path(argv[-1]).name == job_name


if __name__ == "__main__":
    sys.exit(guard(Path(sys.argv[1])))

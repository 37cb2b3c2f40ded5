"""A local job's processes as one scope, ended as a whole, and a guard that ends it when the runner dies.

Every worker, and whatever it starts, carries `CLOUDTRAIN_JOB_SCOPE=<job folder>` in its environment,
which survives `setsid`, double forks and reparenting where process groups do not: the scope is every
process whose environment holds it (read from /proc; where there is no /proc, the workers' process
groups are all there is). The guard is a small process in a session of its own holding one end of a pipe
from the runner: when the runner dies, even by SIGKILL, the pipe closes, and the guard ends the scope and
records the job's end at once, without waiting for a command to look at the job.

    python -m cloudtrain.backends.local.scope JOB_DIR    (the guard; its stdin is the pipe)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import IO

SCOPE_VARIABLE = "CLOUDTRAIN_JOB_SCOPE"
MODULE = "cloudtrain.backends.local.scope"
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


def start_guard(job_dir: Path, log: IO[bytes] | int | None = None) -> IO[bytes]:
    """Start the job's guard; the runner keeps the returned pipe open, and writes ENDED to it when done."""
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != SCOPE_VARIABLE}
    try:
        subprocess.Popen(
            [sys.executable, "-m", MODULE, str(job_dir)],
            stdin=read_end,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # not in the runner's group: whatever kills the runner spares it
        )
    finally:
        os.close(read_end)
    return os.fdopen(write_end, "wb", buffering=0)


def guard(job_dir: Path) -> int:
    """Wait for the runner to end; if it died rather than ended, end its scope and record the job's end."""
    said = sys.stdin.buffer.read()  # EOF: the runner closed the pipe, or died
    if said == ENDED:
        return 0
    kill_scope(job_dir)
    from cloudtrain.backends.local.backend import LocalBackend

    deadline = time.monotonic() + 10.0  # the dead runner's pid may take a moment to be reaped
    backend = LocalBackend(job_dir.parents[1])
    while not backend.describe(job_dir.name).done and time.monotonic() < deadline:
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(guard(Path(sys.argv[1])))

"""`cloudtrain tensorboard`: TensorBoard on the event files of one or more jobs, kept current while they run.

Each job's files are mirrored into `<temporary folder>/runs/<job>/`, so each job is one run named after it, by
its backend (`Backend.sync_tensorboard`: a copy of the local chief's folder, or ranged GETs of what SageMaker
uploaded), then again every few seconds until the job has ended and one last sync is done. TensorBoard reads
the files on as they grow. It runs as a child process in a session of its own, on 127.0.0.1; however serving
ends (Ctrl-C, SIGTERM, SIGHUP, TensorBoard exiting, an error), its whole process group is ended (TERM, then
KILL) and the temporary folder deleted. Where cloudtrain itself is killed (SIGKILL), a guard does the same: a
small process in a session of its own holding one end of a pipe, which closes when cloudtrain dies.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cloudtrain.errors import BackendUnavailable, CloudtrainError, UserError

if TYPE_CHECKING:
    from cloudtrain.backends.base import Backend

DEFAULT_PORT = 6006  # TensorBoard's own
SYNC_S = 5.0  # TensorBoard's own reload interval: syncing more often would not show sooner
START_S = 120.0  # TensorBoard imports TensorFlow when it can: seconds on a small machine
STOP_GRACE_S = 5.0
INSTALL = "tensorboard is not installed: pip install tensorboard (it comes with pip install 'cloudtrain[tensorflow]')"


@dataclass
class Watched:
    """One job shown as a run: where its files are mirrored, and whether its last sync (after it ended) is done."""

    job: str
    backend: Backend
    folder: Path
    done: bool = False

    def sync(self) -> None:
        ended = self.backend.describe(self.job).done  # before the sync: the sync after the end is the last
        self.backend.sync_tensorboard(self.job, self.folder)
        self.done = ended


def tensorboard_command() -> list[str]:
    """TensorBoard from this Python when it has it, else the `tensorboard` on PATH; one line if neither."""
    try:
        here = importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):  # a broken or hidden install
        here = False
    if here:
        return [sys.executable, "-m", "tensorboard.main"]
    if found := shutil.which("tensorboard"):
        return [found]
    raise UserError(INSTALL)


def serve(
    command: Sequence[str],
    jobs: Sequence[tuple[str, Backend]],
    *,
    port: int | None = None,
    on_ready: Callable[[str], None] = lambda url: None,
    on_note: Callable[[str], None] = lambda line: None,
    sync_every: float = SYNC_S,
) -> None:
    """Mirror every job, start TensorBoard, keep syncing the running ones; returns only by an exception
    (KeyboardInterrupt for Ctrl-C, a CloudtrainError when TensorBoard exits on its own)."""
    if port is not None:
        _free(port)  # before any sync: a port in use is said at once
    with tempfile.TemporaryDirectory(prefix="cloudtrain-tensorboard-") as tmp:
        runs = Path(tmp) / "runs"
        watched = [Watched(job, backend, runs / job) for job, backend in jobs]
        for w in watched:
            w.folder.mkdir(parents=True)
            w.sync()
            if not any(w.folder.iterdir()):
                on_note(
                    f"{w.job}: no TensorBoard event files {'' if w.done else 'yet '}(the chief writes them to "
                    "/opt/ml/output/tensorboard)"
                )
        chosen = port if port is not None else _default_port()
        with _tensorboard(command, runs, chosen, Path(tmp) / "tensorboard.log") as process:
            url = f"http://127.0.0.1:{chosen}/"
            _wait_until_up(process, url, Path(tmp) / "tensorboard.log")
            on_ready(url)
            while True:
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=sync_every)
                if process.poll() is not None:
                    raise CloudtrainError(f"TensorBoard exited: {_last_line(Path(tmp) / 'tensorboard.log')}")
                for w in watched:
                    if not w.done:
                        try:
                            w.sync()
                        except BackendUnavailable as e:  # a network hiccup: the next round tries again
                            on_note(f"could not sync {w.job}: {e}")


def _default_port() -> int:
    """TensorBoard's 6006 when it is free, else any free port."""
    for candidate in (DEFAULT_PORT, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise UserError("no free port for TensorBoard: give one with --port")


def _free(port: int) -> int:
    """The port the user chose, if TensorBoard can serve on it (a port in use is bad input: exit 2)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise UserError(f"--port {port}: cannot serve on 127.0.0.1:{port} ({e.strerror}); choose another") from None
    return port


@contextmanager
def _tensorboard(command: Sequence[str], logdir: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """TensorBoard serving `logdir` on 127.0.0.1:port; its process group is ended however the block ends."""
    args = [*command, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "5"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches cloudtrain only, which ends the group (data server too)
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    guard = _guard(process.pid, logdir.parent)
    try:
        yield process
    finally:
        _end_group(process)
        with suppress(OSError):
            guard.write(GUARD_DISMISSED)
            guard.close()


# Run by `python -I -c`: waits for its stdin to close; unless dismissed, ends the group and removes the folder
# (both given in its environment).
_GUARD = """
import os, shutil, signal, sys
said = sys.stdin.buffer.read()
if said != b"dismissed":
    try:
        os.killpg(int(os.environ["GROUP"]), signal.SIGKILL)
    except OSError:
        pass
    shutil.rmtree(os.environ["FOLDER"], ignore_errors=True)
"""
GUARD_DISMISSED = b"dismissed"


def _guard(group: int, folder: Path) -> IO[bytes]:
    """A process that ends TensorBoard's group and removes `folder` if cloudtrain dies without doing so; the pipe
    returned is its stdin (written GUARD_DISMISSED and closed once cloudtrain has cleaned up itself)."""
    read_end, write_end = os.pipe()
    try:
        subprocess.Popen(
            [sys.executable, "-I", "-c", _GUARD],
            stdin=read_end,
            env={"GROUP": str(group), "FOLDER": str(folder)},  # not in its command line, which TensorBoard's names
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # no terminal signal reaches it, nor whatever kills cloudtrain's group
        )
    finally:
        os.close(read_end)
    return os.fdopen(write_end, "wb", buffering=0)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group, SIGKILL after a grace; reaped, so nothing is left."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            with suppress(ProcessLookupError, PermissionError):  # children that outlived TensorBoard
                os.killpg(process.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Until TensorBoard answers HTTP; its own last line if it exits first."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CloudtrainError(f"TensorBoard did not start: {_last_line(log)}")
        try:
            with urllib.request.urlopen(url + "data/environment", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise CloudtrainError(f"TensorBoard did not answer at {url} within {START_S:g}s: {_last_line(log)}")


def _last_line(log: Path) -> str:
    """TensorBoard's last line of output, printable characters only (it ends up on the user's terminal)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    text = lines[-1] if lines else "no output"
    return "".join(c for c in text if c.isprintable())[:300]


def open_browser(url: str) -> bool:
    """Open `url` in a graphical browser where there is a desktop; on a server (no DISPLAY) Python's webbrowser
    would start a text browser in this terminal instead, so nothing is opened there."""
    desktop = sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if not desktop:
        return False
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False

"""Processes a finished script leaves behind: found and ended, however they detached themselves.

The launcher (and the local runner) make themselves the subreaper of everything they start (Linux's
PR_SET_CHILD_SUBREAPER): a process the script starts and leaves running, even one that left with `setsid` or a
double fork, is reparented to them rather than to init, so it is still found among their children (from /proc)
and ended. Stdlib only: it runs in AWS's images too.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
PROC = Path("/proc")
LEFTOVER_GRACE_S = 2.0  # SIGTERM, then SIGKILL: what the script left behind gets as long as this to exit
LEFTOVER_ROUNDS = 200  # a leftover may fork while being ended: look again until none is left (50 ms a round)


def become_subreaper() -> bool:
    """Make this process the reaper of the script's orphans (Linux's PR_SET_CHILD_SUBREAPER), so a process the
    script leaves behind, even one that left with setsid or a double fork, stays our descendant to end."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(spared: frozenset[int] = frozenset()) -> list[tuple[int, str]]:
    """This process's live descendants (pid, command name) but `spared` and theirs, from /proc; none where there is
    no /proc. Descendants, not only children: a grandchild whose parent is still exiting is not reparented yet."""
    table: dict[int, tuple[int, str]] = {}  # pid -> (parent, name), live processes only
    for entry in PROC.iterdir() if PROC.is_dir() else []:
        if not entry.name.isdigit():
            continue
        with suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            if rest[0] != "Z":
                table[int(entry.name)] = (int(rest[1]), name)
    found: list[tuple[int, str]] = []
    parents = {os.getpid()}
    while True:
        step = [(pid, name) for pid, (parent, name) in table.items() if parent in parents and pid not in spared]
        step = [(pid, name) for pid, name in step if pid not in {p for p, _ in found}]
        if not step:
            return found
        found += step
        parents = {pid for pid, _ in step}


def end_leftovers(
    grace: float = LEFTOVER_GRACE_S, spared: frozenset[int] = frozenset(), say: Callable[[str], None] | None = None
) -> list[tuple[int, str]]:
    """End this process's descendants (all that is left of a finished script, once it is the subreaper) but
    `spared`: SIGTERM, a grace, SIGKILL; reaped, and named in one line (printed, or given to `say`)."""
    ended: dict[int, str] = {}
    deadline = time.monotonic() + grace
    for _ in range(LEFTOVER_ROUNDS):
        _reap()
        left = descendants(spared)
        if not left:
            break
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for pid, name in left:
            if pid not in ended or sig == signal.SIGKILL:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            ended.setdefault(pid, name)
        time.sleep(0.05)
    _reap()
    if ended:
        names = ", ".join(f"{name} (pid {pid})" for pid, name in sorted(ended.items()))
        line = f"cloudtrain: the script ended; ended {len(ended)} process(es) it left running: {names}"
        (say or (lambda text: print(text, flush=True)))(line)
    return sorted(ended.items())


def _reap() -> None:
    with suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass

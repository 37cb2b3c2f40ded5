"""TensorFlow's start-up lines, recognised so `cloudtrain logs` can fold them: every worker process prints them
on import (oneDNN's numerical-results notice, absl's "before InitializeLog", CPU-instruction and CUDA plug-in
notices; on AWS's images once for the toolkit and once for the script), and a new user reads them as errors.
They are harmless: folded into one line per host that says so, and `logs --all` shows them as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from cloudtrain.jobs import LogEvent

STARTUP = re.compile(
    r"oneDNN custom operations are on"
    r"|absl::InitializeLog\(\) is called are written to STDERR"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(?:DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|Could not find cuda drivers on your machine"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|Cannot dlopen some GPU libraries"
    r"|failed call to cuInit"
    r"|Skipping registering GPU devices"
)
FOLDED = (
    "[{count} TensorFlow start-up line(s) folded: oneDNN, absl, CPU-instruction and CUDA notices every worker "
    "prints on import; harmless (cloudtrain logs {job} --all shows them)]"
)


def fold_startup(events: Iterable[LogEvent], job: str) -> Iterator[LogEvent]:
    """The events with each host's run of TensorFlow start-up lines replaced by one line saying what they were,
    given when that host's next other line (or the end) comes, at the time of the first folded one."""
    held: dict[str, list[LogEvent]] = {}
    for event in events:
        if STARTUP.search(event.message):
            held.setdefault(event.host, []).append(event)
            continue
        if event.host in held:
            yield _folded(held.pop(event.host), job)
        yield event
    for run in held.values():
        yield _folded(run, job)


def _folded(run: list[LogEvent], job: str) -> LogEvent:
    return LogEvent(run[0].timestamp, run[0].host, FOLDED.format(count=len(run), job=job))

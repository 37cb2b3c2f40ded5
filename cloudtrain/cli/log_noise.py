"""What `cloudtrain logs` (and `submit --wait`) tidy in a job's log, unless `--all`:

- TensorFlow's start-up lines: every worker process prints them on import (oneDNN's numerical-results notice,
  absl's "before InitializeLog", CPU-instruction and CUDA plug-in notices; on AWS's images once for the toolkit
  and once for the script), and a new user reads them as errors. They are harmless: each host's run of them is
  folded into one line that says so.
- Progress bars (Keras's `verbose=1`): one log line of every state, joined by backspaces or carriage returns
  (500-1,000 characters an epoch); shown as its last state, which is what a terminal would show.
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
_REDRAW = re.compile("[\b\r]+")
FOLDED = (
    "[{count} TensorFlow start-up line(s) folded: oneDNN, absl, CPU-instruction and CUDA notices every worker "
    "prints on import; harmless (cloudtrain logs {job} --all shows them)]"
)


def fold_startup(events: Iterable[LogEvent], job: str) -> Iterator[LogEvent]:
    """The events with each host's run of TensorFlow start-up lines replaced by one line saying what they were."""
    folder = StartupFolder(job)
    for event in events:
        yield from folder.feed(event)
    yield from folder.flush()


class StartupFolder:
    """Folds each host's run of start-up lines into one line, given when that host's next other line (or the
    end) comes, at the time of the first folded one. Fed one event at a time, for streams mixed with others."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.held: dict[str, list[LogEvent]] = {}

    def feed(self, event: LogEvent) -> list[LogEvent]:
        """What to show now for this event: nothing (held), or the host's folded line and the event (a progress
        bar as its last state)."""
        if STARTUP.search(event.message):
            self.held.setdefault(event.host, []).append(event)
            return []
        if _REDRAW.search(event.message):
            event = LogEvent(event.timestamp, event.host, last_state(event.message))
        run = self.held.pop(event.host, None)
        return [self._folded(run), event] if run else [event]

    def flush(self) -> list[LogEvent]:
        """The folded lines still held, at the end of the stream."""
        runs, self.held = list(self.held.values()), {}
        return [self._folded(run) for run in runs]

    def _folded(self, run: list[LogEvent]) -> LogEvent:
        return LogEvent(run[0].timestamp, run[0].host, FOLDED.format(count=len(run), job=self.job))


def last_state(message: str) -> str:
    """A line redrawn with backspaces or carriage returns, as a terminal would end up showing it: the last
    non-empty part."""
    parts = [part for part in _REDRAW.split(message) if part.strip()]
    return parts[-1] if parts else ""

"""What a job is to every caller: its state, its log lines, what fetch-model brought back.

Statuses are SageMaker's own (`InProgress`, `Completed`, `Failed`, `Stopping`, `Stopped`) so the local backend
and SageMaker read the same to a user and to a CI pipeline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"Completed", "Failed", "Stopped"})


@dataclass(frozen=True)
class Transition:
    """One secondary-status step, as in DescribeTrainingJob's SecondaryStatusTransitions."""

    status: str
    start: float
    end: float | None = None
    message: str = ""


@dataclass(frozen=True)
class JobInfo:
    """What `status` shows of a job; `to_json` is the stable `--json` shape."""

    name: str
    backend: str
    status: str
    secondary_status: str = ""
    failure_reason: str | None = None
    created: float | None = None
    ended: float | None = None
    instance_type: str = ""
    instance_count: int = 1
    transitions: tuple[Transition, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    billable_seconds: int | None = None  # per instance, as SageMaker reports it
    spot_savings_percent: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    kind: str = "job"  # or "sweep": a sweep's own row (its trials are jobs of their own)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def billable_instance_seconds(self) -> int | None:
        """What is billed: SageMaker's BillableTimeInSeconds is per instance, so times the instance count."""
        return None if self.billable_seconds is None else self.billable_seconds * self.instance_count

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["transitions"] = [asdict(t) for t in self.transitions]
        data["billable_instance_seconds"] = self.billable_instance_seconds
        return data


def no_metrics_reason(info: JobInfo, spec: dict[str, Any]) -> str | None:
    """Why a job that has ended has no metrics, given the (JSON) spec it was submitted with: metrics come only
    from the log lines the spec's regexes match, on SageMaker as here."""
    if info.metrics or not info.done:
        return None
    if not spec.get("metrics"):
        return (
            "none: the spec has no metrics: regexes, and metrics are read only from the log lines they match "
            "(docs/bring-your-script.md, section 5)"
        )
    return (
        f"none: no log line matched the spec's metrics regexes (compare them with cloudtrain logs {info.name}; "
        "Keras's verbose=1 progress bar gives no matchable lines: use verbose=2)"
    )


@dataclass(frozen=True)
class LogEvent:
    """One line of one host's log stream; `timestamp` is seconds since the epoch."""

    timestamp: float
    host: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The `logs --json` record (schema: logs)."""
        return asdict(self)


@dataclass(frozen=True)
class LogsStopped:
    """A wait's log stream failed (throttled past every retry, access denied, credentials expired): the wait
    goes on with the job's status alone; `reason` is one line."""

    reason: str


# What a job leaves, each a field of `Artifacts`; the first two are tarballs (model.tar.gz, output.tar.gz).
ARTIFACT_KINDS = ("model", "output", "checkpoints", "tensorboard")
TARBALL_KINDS = ARTIFACT_KINDS[:2]


@dataclass(frozen=True)
class Artifacts:
    """Where `fetch-model` put things, each an extracted folder or None when the job made none."""

    model: Path | None
    output: Path | None
    checkpoints: Path | None
    tensorboard: Path | None = None  # the job's TensorBoard event files
    checked: dict[str, str] = field(default_factory=dict)  # downloaded tarball -> how it was verified
    trial: str | None = None  # of a sweep: the trial whose model this is
    sweep_report: Path | None = None  # sweep_report.html (Optuna's figures of every trial)
    sweep_trials: Path | None = None  # sweep_trials.csv


EVAL_REPORT = "eval_report.json"  # in a job's output (output.tar.gz): what `compare` reads of its evaluation
EVAL_REPORT_MAX_BYTES = 16 << 20
EVAL_KEYS = ("accuracy", "loss")  # what `compare` and `fetch-model` show of an evaluation report


def eval_numbers(report: Any) -> dict[str, float | None]:
    """An evaluation report's accuracy and loss: each the number it holds, or None (also for a report that is no
    JSON object)."""
    report = report if isinstance(report, dict) else {}
    return {k: report[k] if isinstance(report.get(k), (int, float)) else None for k in EVAL_KEYS}

"""The one small interface every backend implements, and the data it returns.

Statuses are SageMaker's own (`InProgress`, `Completed`, `Failed`, `Stopping`, `Stopped`) so the
local backend and SageMaker read the same to a user and to a CI pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cloudtrain.spec import JobSpec

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


@dataclass(frozen=True)
class LogEvent:
    """One line of one host's log stream; `timestamp` is seconds since the epoch."""

    timestamp: float
    host: str
    message: str


@dataclass(frozen=True)
class LogsStopped:
    """A wait's log stream failed (throttled past every retry, access denied, credentials expired): the wait
    goes on with the job's status alone; `reason` is one line."""

    reason: str


@dataclass(frozen=True)
class Artifacts:
    """Where `fetch-model` put things, each an extracted folder or None when the job made none."""

    model: Path | None
    output: Path | None
    checkpoints: Path | None
    tensorboard: Path | None = None  # the job's TensorBoard event files
    checked: dict[str, str] = field(default_factory=dict)  # downloaded tarball -> how it was verified


class Backend(Protocol):
    name: str

    def submit(self, spec: JobSpec, job_name: str, *, resume_from: str | None = None) -> JobInfo:
        """Start the job and return at once; raises UserError if the name is taken."""

    def describe(self, job_name: str) -> JobInfo:
        """Raises JobNotFound for an unknown job."""

    def list_jobs(self, limit: int = 20) -> list[JobInfo]:
        """The most recent cloudtrain jobs, newest first."""

    def logs(self, job_name: str, *, host: str | None = None, follow: bool = False) -> Iterator[LogEvent]:
        """Every host's lines merged in time order; with follow, until the job ends."""

    def stop(self, job_name: str) -> JobInfo:
        """Ask the job to stop; returns at once (status Stopping or already terminal)."""

    def fetch_artifacts(self, job_name: str, dest: Path) -> Artifacts:
        """Download and safely extract model, output, checkpoints and TensorBoard files under dest."""

    def sync_tensorboard(self, job_name: str, dest: Path) -> int:
        """Mirror the job's TensorBoard event files into dest, appending what each gained since the last call
        (TensorBoard reads open files on); returns the bytes fetched. Works while the job runs."""

"""The one interface every backend implements: all that callers outside `cloudtrain.backends` may use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cloudtrain.jobs import Artifacts, JobInfo, LogEvent
    from cloudtrain.spec.models import JobSpec
    from cloudtrain.sweep.trials import SweepInfo
    from cloudtrain.transfer.s3 import ProgressCallback


class Backend(Protocol):
    """Where jobs run. Callers read what a backend can do from these attributes, never from its name."""

    name: str  # as jobs are recorded: "local" or "sagemaker"
    uploads_data: bool  # local data folders are uploaded (so what packing leaves out of them is said)
    record_at_submit: bool  # `api.submit` records the job in the job store, so later commands find its backend
    status_from_record: bool  # a finished job's status is answered from its record, sparing the backend's API
    trains_here: bool  # the workers run this machine's Python and TensorFlow, not the job's image
    status_interval: float  # seconds between status checks while waiting for a job

    def plan(self, spec: JobSpec, job_name: str, *, resume_from: str | None = None) -> dict[str, Any]:
        """`--dry-run`: what submit would do (the request, uploads, cost where known); creates nothing."""

    def submit(
        self,
        spec: JobSpec,
        job_name: str,
        *,
        resume_from: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> JobInfo:
        """Start the job and return at once; raises JobExists if the name is taken. `on_progress` hears the bytes
        of what goes before the start (data uploaded to S3, or s3:// channels downloaded for a local job)."""

    def describe(self, job_name: str, *, tags: bool = False) -> JobInfo:
        """The job now (with its tags too, where they cost another call, when `tags`); JobNotFound if unknown."""

    def list_jobs(self, limit: int = 20) -> list[JobInfo]:
        """The most recent cloudtrain jobs, newest first."""

    def logs(self, job_name: str, *, host: str | None = None, follow: bool = False) -> Iterator[LogEvent]:
        """Every host's lines merged in time order; with follow, until the job ends."""

    def stop(self, job_name: str) -> JobInfo:
        """Ask the job to stop; returns at once (status Stopping or already terminal)."""

    def fetch_artifacts(self, job_name: str, dest: Path, *, on_progress: ProgressCallback | None = None) -> Artifacts:
        """Download and safely extract model, output, checkpoints and TensorBoard files under dest."""

    def sync_tensorboard(self, job_name: str, dest: Path) -> int:
        """Mirror the job's TensorBoard event files into dest, appending what each gained since the last call
        (TensorBoard reads open files on); returns the bytes fetched. Works while the job runs."""

    def code_digest(self, info: JobInfo) -> str | None:
        """The digest of the job's code package (`transfer.code`), the same for both backends; None if unknown."""

    def evaluation(self, info: JobInfo) -> tuple[Any, str]:
        """The job's eval_report.json as read, and where it was read from; (None, "") when it has none yet."""

    # A sweep (a spec with `sweep:`): `plan` shows it too. Its trials are jobs: logs, fetch_artifacts,
    # sync_tensorboard and describe take a trial's name.

    def submit_sweep(self, spec: JobSpec, sweep_name: str, *, parents: Sequence[SweepInfo] = ()) -> SweepInfo:
        """Start the sweep and return at once; `parents` are warm start's sweeps (already checked). JobExists
        if the name is taken."""

    def sweep(self, sweep_name: str) -> SweepInfo:
        """The sweep now, with every trial so far; JobNotFound if unknown."""

    def stop_sweep(self, sweep_name: str) -> SweepInfo:
        """Stop the running trials and start no more; returns at once."""

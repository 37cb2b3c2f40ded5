"""What cloudtrain knows of jobs from its job store (`store`), for `api`, the only caller outside the backends.

A local job's record is the local backend's own state (its runner writes it). A remote job is recorded at
submit, so a later command finds its backend and the AWS settings it was submitted with (`for_job`), and
again once it is seen finished: a finished job never changes, so its status is answered from the record
(`finished`) without another request to AWS.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import CloudtrainError, JobNotFound
from cloudtrain.settings import Layer, Options, Settings, choose_backend, cloudtrain_home
from cloudtrain.store import JobRecord, JobStore

if TYPE_CHECKING:
    from cloudtrain.jobs import JobInfo
    from cloudtrain.spec.models import JobSpec


def for_job(options: Options, job: str | None = None) -> Settings:
    """The settings of a command about a job (or about no job: a list, doctor).

    The backend is the command line's, else the one the job was recorded with, else the environment's or
    the config file's: a job lives where it was submitted. The AWS settings of the spec it was submitted
    with sit between the environment and the config file, so `status JOB` reaches the region it runs in.
    """
    config = options.read_config()
    home = cloudtrain_home()
    recorded = JobStore(home).backend_of(job) if job is not None and not options.backend else None
    backend = choose_backend(options.backend, recorded, config.env.backend, config.from_file.backend)
    submitted = _submitted_aws(home, backend, job) if job is not None else Layer()
    merged = config.defaults(options.layer, submitted)
    return Settings(
        backend=backend,
        region=merged.region,
        role_arn=merged.role_arn,
        output_s3_uri=merged.output_s3_uri,
        endpoint_url=merged.endpoint_url,
        home=home,
        container=options.container,
    )


def _submitted_aws(home: Path, backend: str, job: str) -> Layer:
    """The AWS settings of the spec a job was submitted with (none for a job submitted elsewhere)."""
    aws = (submitted_spec(home, backend, job) or {}).get("aws") or {}
    return Layer(region=aws.get("region"), role_arn=aws.get("role_arn"), endpoint_url=aws.get("endpoint_url"))


def submitted_spec(home: Path, backend: str, job: str) -> dict[str, Any] | None:
    """The spec a job was submitted with, as recorded (secrets redacted); None for a job submitted elsewhere."""
    try:
        return JobStore(home).get(backend, job).spec
    except JobNotFound:
        return None


def remember(home: Path, name: str, backend: str, spec: JobSpec, *, kind: str = "job") -> None:
    """Record a job (or a sweep) a remote backend has accepted, with the spec it runs."""
    JobStore(home).remember(name, backend, spec, kind=kind)


def kind_of(home: Path, name: str) -> str | None:
    """ "job" or "sweep" for a name cloudtrain recorded (its newest record); None for one it never started."""
    try:
        store = JobStore(home)
        backend = store.backend_of(name)
        return store.get(backend, name).info.kind if backend is not None else None
    except JobNotFound:
        return None


def recorded(home: Path, backend: str, job: str) -> JobRecord | None:
    """The job's record, None when it has none."""
    try:
        return JobStore(home).get(backend, job)
    except JobNotFound:
        return None


def keep_finished(home: Path, info: JobInfo, previous: JobRecord | None) -> None:
    """Record a remote job seen finished, keeping the spec it was submitted with."""
    JobStore(home).save(JobRecord(info, spec=previous.spec if previous is not None else {}))


def finished(job: str) -> JobInfo | None:
    """A finished job's state from its record, on whichever backend it ran (`cloudtrain status JOB`'s fast path);
    None for anything else: no record, a job still running, an unreadable store."""
    try:
        store = JobStore(cloudtrain_home())
        backend = store.backend_of(job)
        record = store.get(backend, job) if backend is not None else None
    except CloudtrainError:
        return None
    return record.info if record is not None and record.done else None

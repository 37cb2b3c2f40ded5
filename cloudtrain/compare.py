"""`cloudtrain compare`: jobs side by side: the spec fields that differ, the code hash, metrics and evaluation.

The spec is the one cloudtrain recorded at submit (secret-looking environment values redacted); a SageMaker
job submitted from another machine has none here. The code hash is the code digest of `cloudtrain.packaging`
(a sha256 of what the code tarball holds: names, modes and contents): the `cloudtrain:code-sha256` tag on
SageMaker, computed from the job folder's `sourcedir.tar.gz` locally. The evaluation is read
from eval_report.json: fetched already (`./JOB/output/`), else from the job's output.tar.gz.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import CloudtrainError

if TYPE_CHECKING:
    from cloudtrain.backends import AwsOptions
    from cloudtrain.backends.base import Backend, JobInfo

CODE_TAG = "cloudtrain:code-sha256"
REPORT = "eval_report.json"
REPORT_MAX_BYTES = 16 << 20
OUTPUT_MAX_BYTES = 64 << 20  # output.tar.gz read from S3 into memory for its report; bigger: fetch-model first
EVAL_KEYS = ("accuracy", "loss")


@dataclass(frozen=True)
class Side:
    """One job as compared."""

    info: JobInfo
    spec: dict[str, Any] | None
    code_sha256: str | None
    evaluation: dict[str, Any] | None  # accuracy, loss, source

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.info.name,
            "backend": self.info.backend,
            "status": self.info.status,
            "code_sha256": self.code_sha256,
            "metrics": dict(self.info.metrics),
            "evaluation": self.evaluation,
        }


@dataclass(frozen=True)
class Comparison:
    sides: tuple[Side, ...]
    notes: tuple[str, ...] = ()

    @property
    def same_code(self) -> bool | None:
        hashes = {s.code_sha256 for s in self.sides}
        return None if None in hashes else len(hashes) == 1

    @property
    def spec_diff(self) -> list[tuple[str, list[Any]]] | None:
        """(dotted field, one value per job) for each field whose values differ; None if a spec is unknown."""
        specs = [s.spec for s in self.sides]
        if any(spec is None for spec in specs):
            return None
        flat = [dict(_flatten(spec)) for spec in specs if spec is not None]
        fields = sorted({key for f in flat for key in f})
        rows = [(key, [f.get(key) for f in flat]) for key in fields]
        return [(key, values) for key, values in rows if any(v != values[0] for v in values)]

    @property
    def metrics(self) -> list[tuple[str, list[float | None]]]:
        """Each final metric, then eval.accuracy and eval.loss, one value per job."""
        names = sorted({name for s in self.sides for name in s.info.metrics})
        rows = [(name, [s.info.metrics.get(name) for s in self.sides]) for name in names]
        for key in EVAL_KEYS:
            values = [(s.evaluation or {}).get(key) for s in self.sides]
            if any(v is not None for v in values):
                rows.append((f"eval.{key}", values))
        return rows

    def to_json(self) -> dict[str, Any]:
        diff = self.spec_diff
        return {
            "jobs": [s.to_json() for s in self.sides],
            "same_code": self.same_code,
            "spec_diff": None if diff is None else [{"field": k, "values": v} for k, v in diff],
            "metrics": [{"name": k, "values": v} for k, v in self.metrics],
            "notes": list(self.notes),
        }


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths of a JSON spec's leaves; lists are leaves (compared whole)."""
    if isinstance(value, Mapping) and value:
        for key, child in value.items():
            yield from _flatten(child, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def side(be: Backend, job: str, *, aws: AwsOptions, fetched: Path | None, notes: list[str]) -> Side:
    """What compare shows of one job; what cannot be found becomes None and a note."""
    from cloudtrain.backends import cloudtrain_home
    from cloudtrain.backends.local import LocalBackend
    from cloudtrain.errors import JobNotFound
    from cloudtrain.store import JobStore

    # SageMaker's describe leaves the tags out unless asked (they cost a ListTags call): the code digest is one.
    info = be.describe(job, tags=True) if be.name == "sagemaker" else be.describe(job)  # type: ignore[call-arg]
    try:
        spec: dict[str, Any] | None = JobStore(cloudtrain_home()).get(be.name, job).spec
    except JobNotFound:
        spec = None
        notes.append(f"{job}: no spec recorded here (submitted from another machine?)")
    job_dir = be.job_dir(job) if isinstance(be, LocalBackend) else None
    if job_dir is not None:
        tarball = job_dir / "sourcedir.tar.gz"
        code = _code_digest(tarball) if tarball.is_file() else None
    else:
        code = info.tags.get(CODE_TAG)
    if code is None:
        notes.append(f"{job}: code hash unknown")
    return Side(info, spec, code, _evaluation(info, job_dir, aws, fetched, notes))


def _code_digest(path: Path) -> str | None:
    """The code digest of a local job's sourcedir.tar.gz; None when it cannot be read."""
    import zlib

    from cloudtrain.packaging import tarball_digest

    try:
        return tarball_digest(path)
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return None


def _evaluation(
    info: JobInfo, job_dir: Path | None, aws: AwsOptions, fetched: Path | None, notes: list[str]
) -> dict[str, Any] | None:
    """accuracy and loss of the job's eval_report.json, and where it was read."""
    report: dict[str, Any] | None = None
    source = ""
    try:
        if fetched is not None and (fetched / "output" / REPORT).is_file():
            source = str(fetched / "output" / REPORT)
            report = json.loads((fetched / "output" / REPORT).read_text())
        elif job_dir is not None:
            report, source = _local_report(job_dir)
        elif info.done and info.artifacts.get("output"):
            source = info.artifacts["output"]
            report = _s3_report(source, aws)
    except (OSError, ValueError, tarfile.TarError, CloudtrainError) as e:
        notes.append(f"{info.name}: could not read {REPORT} from {source}: {e}")
        return None
    if not isinstance(report, dict):
        return None
    values = {k: report.get(k) if isinstance(report.get(k), (int, float)) else None for k in EVAL_KEYS}
    return {**values, "source": source}


def _local_report(job_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """From output.tar.gz once the job has ended, else from the chief's output folder (a running job)."""
    tarball = job_dir / "output.tar.gz"
    if tarball.is_file():
        with open(tarball, "rb") as f:
            return report_from_tarball(f), str(tarball)
    live = job_dir / "hosts" / "algo-1" / "output" / "data" / REPORT
    return (json.loads(live.read_text()), str(live)) if live.is_file() else (None, "")


def report_from_tarball(fileobj: Any) -> dict[str, Any] | None:
    """eval_report.json inside an output.tar.gz, or None; refuses a report too big to be one."""
    with tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
        for member in tar:
            if member.name.lstrip("./") == REPORT and member.isfile():
                if member.size > REPORT_MAX_BYTES:
                    raise ValueError(f"{REPORT} is {member.size} bytes")
                data = tar.extractfile(member)
                return json.loads(data.read()) if data is not None else None
    return None


def _s3_report(uri: str, aws: AwsOptions) -> dict[str, Any] | None:
    """eval_report.json from an output.tar.gz on S3, read into memory (bounded)."""
    from botocore.exceptions import ClientError

    from cloudtrain.aws import AwsSession, AwsSettings, error_code, translate_errors
    from cloudtrain.packaging import S3Location

    location = S3Location.parse(uri)
    session = AwsSession(AwsSettings(aws.region, aws.profile, aws.endpoint_url))
    with translate_errors(session.where, "S3"):
        s3 = session.client("s3")
        try:
            head = s3.head_object(Bucket=location.bucket, Key=location.key)
        except ClientError as e:
            if error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        if head["ContentLength"] > OUTPUT_MAX_BYTES:
            raise ValueError(f"{uri} is {head['ContentLength'] >> 20} MiB; fetch-model it first")
        body = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    return report_from_tarball(io.BytesIO(body))


def compare(sides: Sequence[Side], notes: Sequence[str] = ()) -> Comparison:
    return Comparison(tuple(sides), tuple(notes))

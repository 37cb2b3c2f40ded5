"""The SageMaker backend: CreateTrainingJob built with botocore as AWS's TensorFlow estimator would send it, logs
from CloudWatch, artifacts from S3. Why it is built by hand, how jobs are found, and the requests each command
costs: docs/architecture.md, "The SageMaker backend".
"""

from __future__ import annotations

import heapq
import io
import json
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.aws import (
    AwsSession,
    default_bucket_owner,
    error_code,
    error_message,
    translate_errors,
)
from cloudtrain.errors import AwsRefused, BackendUnavailable, JobExists, JobNotFound, UserError, quoted
from cloudtrain.files import staging_folder, swap_in, writing_to
from cloudtrain.jobs import EVAL_REPORT, EVAL_REPORT_MAX_BYTES, TERMINAL, Artifacts, JobInfo, LogEvent, Transition
from cloudtrain.settings import ENV_VARS, Settings
from cloudtrain.transfer import vendor
from cloudtrain.transfer.code import CODE_TARBALL, CodeTree, code_tree
from cloudtrain.transfer.download import Downloader, S3Object, head_object, list_objects
from cloudtrain.transfer.events import EventFile, mirror
from cloudtrain.transfer.s3 import Progress, ProgressCallback, S3Location
from cloudtrain.transfer.tarballs import json_member
from cloudtrain.transfer.upload import S3Uploader, Upload, channel_uri, code_location, data_location, tree_digest

if TYPE_CHECKING:  # the spec's pydantic models cost more to import than boto3: `status` and `logs` never need them
    from cloudtrain.image.stock import ImageChoice
    from cloudtrain.pricing import CostEstimate
    from cloudtrain.spec.models import JobSpec

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # SageMaker's default LocalPath; cloudtrain.runtime's too
TENSORBOARD_S3_FOLDER = "tensorboard-output"  # AWS uploads to <S3OutputPath>/<job>/tensorboard-output/
MANAGED_TAG = "cloudtrain:managed"
SPEC_TAG = "cloudtrain:spec-sha256"
CODE_TAG = "cloudtrain:code-sha256"
GIT_TAG = "cloudtrain:git-commit"
CONTAINER_LOG_LEVEL = 20  # logging.INFO, the SDK's default container_log_level
MWMS_HP = "sagemaker_multi_worker_mirrored_strategy_enabled"
SCRIPT_MODE_HPS = (
    "sagemaker_submit_directory",
    "sagemaker_program",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "sagemaker_region",
    "model_dir",
)
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
OFFLINE_ACCOUNT = "ACCOUNT-ID"
OUTPUT_READ_MAX_BYTES = 64 << 20  # output.tar.gz read into memory for its report; bigger: fetch-model it first
MAX_LAG_S = 60.0  # the longest CloudWatch ingestion lag `logs --follow` waits out after a job has ended


# --- the request --------------------------------------------------------------------------------


def json_hyperparameters(values: Mapping[str, Any]) -> dict[str, str]:
    """Every value JSON-encoded, as the SDK's `_json_encode_hyperparameters` does (strings get quotes)."""
    return {str(k): json.dumps(v) for k, v in values.items()}


def git_commit(folder: Path) -> str | None:
    """HEAD of the git checkout holding folder, `-dirty` if files under it changed; None outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=all", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not re.fullmatch(r"[0-9a-f]{40,64}", head):
        return None
    return f"{head}-dirty" if dirty else head


INSTANCE_STORAGE_FAMILIES = ("g5", "g6", "p5", "trn1")  # the SDK's `volume_size_supported`: no EBS volume


def _failure_reason(reason: str | None) -> str | None:
    """AWS's FailureReason, or the one line that names a known failure's cause and fix (AWS's toolkit writes the
    script's error output there, a tensor dump for Keras 3 under MultiWorkerMirroredStrategy)."""
    from cloudtrain.runtime.failures import explain

    return (explain(reason) or reason) if reason else reason


def _has_instance_storage(instance_type: str) -> bool:
    """Instance types with local NVMe storage take no EBS volume key (AWS refuses VolumeKmsKeyId there): the
    SDK's rule, a "d" in the family (c5d, p4d, r5d) or one of `INSTANCE_STORAGE_FAMILIES` (g6e, p5en, trn1n too)."""
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else instance_type
    return "d" in family or family.startswith(INSTANCE_STORAGE_FAMILIES)


def _check_limits(spec: JobSpec, hyperparameters: Mapping[str, str], environment: Mapping[str, str]) -> None:
    """AWS's size limits, checked here so the error names the spec field instead of a 400 from AWS."""
    reserved = set(SCRIPT_MODE_HPS) | {MWMS_HP}
    for name in spec.hyperparameters:
        if name in reserved or name.startswith("sagemaker_"):
            raise UserError(f"hyperparameters.{name}: reserved for SageMaker script mode")
    if len(hyperparameters) > 100:
        raise UserError(f"hyperparameters: at most 100 with script mode's own (got {len(hyperparameters)})")
    for name, value in hyperparameters.items():
        if len(name) > 256 or len(value) > 2500:
            raise UserError(f"hyperparameters.{name}: names are at most 256 characters, values 2500 once JSON-encoded")
    if len(environment) > 100:
        raise UserError(f"environment: at most 100 variables (got {len(environment)})")
    for name, value in environment.items():
        if len(name) > 512 or len(value) > 512:
            raise UserError(f"environment.{name}: names and values are at most 512 characters on SageMaker")


def job_tags(spec: JobSpec, code_sha256: str, commit: str | None) -> list[dict[str, str]]:
    """The spec's tags plus cloudtrain's own; `aws:` and `cloudtrain:` keys are reserved."""
    from cloudtrain.spec.models import spec_digest

    tags = dict(spec.tags)
    for key in tags:
        if key.startswith(("aws:", "cloudtrain:")):
            raise UserError(f"tags.{key}: the aws: and cloudtrain: prefixes are reserved")
    tags[MANAGED_TAG] = "true"
    tags[SPEC_TAG] = spec_digest(spec)
    tags[CODE_TAG] = code_sha256
    if commit:
        tags[GIT_TAG] = commit
    if len(tags) > 50:
        raise UserError(f"tags: SageMaker takes at most 50 tags, cloudtrain uses {len(tags) - len(spec.tags)}")
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def build_request(
    spec: JobSpec,
    job_name: str,
    *,
    region: str,
    role_arn: str,
    image_uri: str,
    code_uri: str,
    channels: Mapping[str, str],
    output: S3Location,
    checkpoint_uri: str,
    tags: list[dict[str, str]],
) -> dict[str, Any]:
    """The CreateTrainingJob keyword arguments; pure, so dry-run and submit send the same thing."""
    from cloudtrain.spec.models import Strategy, script_environment

    res = spec.resources
    kms = spec.aws.kms_key_id
    script_mode: dict[str, Any] = {
        "sagemaker_submit_directory": code_uri,
        "sagemaker_program": spec.code.entry_point,
        "sagemaker_container_log_level": CONTAINER_LOG_LEVEL,
        "sagemaker_job_name": job_name,
        "sagemaker_region": region,
    }
    if spec.distribution.strategy is Strategy.multi_worker_mirrored:
        script_mode[MWMS_HP] = True
    script_mode["model_dir"] = output.join(job_name, "model").uri
    hyperparameters = {**json_hyperparameters(spec.hyperparameters), **json_hyperparameters(script_mode)}
    environment = {
        **script_environment(spec),
        "CLOUDTRAIN_STRATEGY": spec.distribution.strategy.value,
        "CLOUDTRAIN_COMMUNICATION": spec.distribution.communication,
        "CLOUDTRAIN_CHECKPOINT_DIR": spec.checkpoints.local_path,
    }
    if vendor.job_minor(spec):  # tf-keras packed in the code: on the path AWS's toolkit hands the script
        environment["PYTHONPATH"] = ":".join(
            p for p in (vendor.container_pythonpath(), environment.get("PYTHONPATH")) if p
        )
    _check_limits(spec, hyperparameters, environment)

    algorithm: dict[str, Any] = {"TrainingImage": image_uri, "TrainingInputMode": "File"}
    if spec.metrics:
        algorithm["MetricDefinitions"] = [{"Name": m.name, "Regex": m.regex} for m in spec.metrics]
    algorithm["EnableSageMakerMetricsTimeSeries"] = True

    resource_config: dict[str, Any] = {
        "InstanceType": res.instance_type,
        "InstanceCount": res.instance_count,
        "VolumeSizeInGB": res.volume_size_gb,
    }
    if kms and not _has_instance_storage(res.instance_type):
        resource_config["VolumeKmsKeyId"] = kms
    if res.keep_alive:
        resource_config["KeepAlivePeriodInSeconds"] = res.keep_alive

    stopping: dict[str, int] = {"MaxRuntimeInSeconds": res.max_runtime}
    if res.spot.enabled and res.spot.max_wait is not None:
        stopping["MaxWaitTimeInSeconds"] = res.spot.max_wait

    output_config: dict[str, str] = {"S3OutputPath": output.uri}
    if kms:
        output_config["KmsKeyId"] = kms

    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": algorithm,
        "HyperParameters": hyperparameters,
        "RoleArn": role_arn,
        "OutputDataConfig": output_config,
        "ResourceConfig": resource_config,
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": res.spot.enabled,
        "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": spec.checkpoints.local_path},
        # SageMaker uploads the event files cloudtrain.runtime writes there while the job runs.
        "TensorBoardOutputConfig": {"S3OutputPath": output.uri, "LocalPath": TENSORBOARD_LOCAL_PATH},
        "Environment": environment,
        "Tags": tags,
    }
    if channels:
        request["InputDataConfig"] = [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "CompressionType": "None",
                "RecordWrapperType": "None",
            }
            for name, uri in channels.items()
        ]
    if spec.aws.vpc is not None:
        request["VpcConfig"] = {
            "SecurityGroupIds": list(spec.aws.vpc.security_group_ids),
            "Subnets": list(spec.aws.vpc.subnets),
        }
    if res.max_retry_attempts > 0:
        request["RetryStrategy"] = {"MaximumRetryAttempts": res.max_retry_attempts}
    return request


def request_code_uri(request: Mapping[str, Any]) -> str:
    """The code tarball's S3 URI inside a request (sagemaker_submit_directory, JSON-decoded)."""
    return str(json.loads(request["HyperParameters"]["sagemaker_submit_directory"]))


@dataclass(frozen=True)
class JobPlan:
    """What a submit sends and uploads; `to_json` is `--dry-run`'s output."""

    request: dict[str, Any]
    uploads: tuple[Upload, ...]
    image: ImageChoice
    cost: CostEstimate
    code: CodeTree
    notes: tuple[str, ...] = ()

    @property
    def uploaded_bytes(self) -> int:
        return sum(u.uploaded_bytes for u in self.uploads)

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "estimated_cost_usd": self.cost.total_usd,
            "cost_note": self.cost.note(),
            "cost": self.cost.to_json(),
            "uploads": [u.to_json() for u in self.uploads],
            "image_source": self.image.source,
            "code_files": list(self.code.names),
            "notes": list(self.notes),
        }


# --- describe -------------------------------------------------------------------------------------


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def artifact_uris(raw: Mapping[str, Any]) -> dict[str, str]:
    """Where a job's model.tar.gz, output.tar.gz (beside it), checkpoints and TensorBoard files are, from its
    description. The last are under `<S3OutputPath>/<job>/tensorboard-output`, where AWS uploads them (the
    sagemaker SDK's `latest_job_tensorboard_artifacts_path`)."""
    job = raw["TrainingJobName"]
    model = raw.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model:
        output_path = raw.get("OutputDataConfig", {}).get("S3OutputPath")
        model = S3Location.parse(output_path).join(job, "output", "model.tar.gz").uri if output_path else None
    uris: dict[str, str] = {}
    if model:
        uris["model"] = model
        uris["output"] = model.rsplit("/", 1)[0] + "/output.tar.gz"
    checkpoints = raw.get("CheckpointConfig", {}).get("S3Uri")
    if checkpoints:
        uris["checkpoints"] = checkpoints
    tensorboard = raw.get("TensorBoardOutputConfig", {}).get("S3OutputPath")
    if tensorboard:
        uris["tensorboard"] = S3Location.parse(tensorboard).join(job, TENSORBOARD_S3_FOLDER).uri
    return uris


def job_info(raw: Mapping[str, Any], tags: list[dict[str, str]] | None = None) -> JobInfo:
    """A DescribeTrainingJob (or Search) record as a JobInfo."""
    transitions = tuple(
        Transition(t["Status"], _ts(t.get("StartTime")) or 0.0, _ts(t.get("EndTime")), t.get("StatusMessage", ""))
        for t in raw.get("SecondaryStatusTransitions", [])
    )
    billable = raw.get("BillableTimeInSeconds")
    training = raw.get("TrainingTimeInSeconds")
    savings = None
    if raw.get("EnableManagedSpotTraining") and billable is not None and training:
        savings = round((1 - billable / training) * 100, 1)
    resources = raw.get("ResourceConfig", {})
    return JobInfo(
        name=raw["TrainingJobName"],
        backend=SageMakerBackend.name,
        status=raw["TrainingJobStatus"],
        secondary_status=raw.get("SecondaryStatus", ""),
        failure_reason=_failure_reason(raw.get("FailureReason")),
        created=_ts(raw.get("CreationTime")),
        ended=_ts(raw.get("TrainingEndTime")),
        instance_type=resources.get("InstanceType", ""),
        instance_count=int(resources.get("InstanceCount", 1)),
        transitions=transitions,
        metrics={m["MetricName"]: float(m["Value"]) for m in raw.get("FinalMetricDataList", [])},
        artifacts=artifact_uris(raw),
        billable_seconds=billable,
        spot_savings_percent=savings,
        tags={t["Key"]: t["Value"] for t in (tags if tags is not None else raw.get("Tags", []))},
    )


def created_job_info(request: Mapping[str, Any], created: float) -> JobInfo:
    """What DescribeTrainingJob would say of a job CreateTrainingJob has just accepted (InProgress, Starting),
    from the request itself: a submit needs no DescribeTrainingJob and no ListTags after it."""
    raw = {
        "TrainingJobName": request["TrainingJobName"],
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Starting",
        "CreationTime": created,
        "ResourceConfig": request["ResourceConfig"],
        "OutputDataConfig": request["OutputDataConfig"],
        "CheckpointConfig": request.get("CheckpointConfig", {}),
        "TensorBoardOutputConfig": request.get("TensorBoardOutputConfig", {}),
        "EnableManagedSpotTraining": request.get("EnableManagedSpotTraining", False),
    }
    return job_info(raw, request.get("Tags", []))


def _not_found(exc: Exception) -> bool:
    message = error_message(exc).lower()
    return error_code(exc) == "ValidationException" and ("not found" in message or "could not find" in message)


# --- the backend --------------------------------------------------------------------------------


@dataclass
class _Stream:
    """One log stream, followed from its start: its forward token, when it is next read (monotonic), and how
    many reads in a row found nothing."""

    name: str
    host: str
    token: str | None = None
    due: float = 0.0
    quiet: int = 0


@dataclass
class SageMakerBackend:
    """Training jobs on SageMaker, in the region, account and endpoint its `settings` say.

    `logs(follow=True)` reads each host's stream at most every `poll_interval` seconds (GetLogEvents with its
    forward token), backing off by half while it is quiet up to `max_poll_interval` (so a line written after a
    quiet spell shows up within that); it checks the job's status every `status_interval` and looks for new
    streams every `discover_interval`, at once when the status changes, and at every status check while hosts
    still have no stream (see `_follow`). The defaults keep a busy stream within one log API call per 2 s
    (a read every 2.1 s, 0.95, plus a listing a minute, 0.03) and a busy stream's line within 2.1 s and a
    request of reaching CloudWatch.
    """

    settings: Settings = field(default_factory=Settings)
    poll_interval: float = 2.1
    max_poll_interval: float = 2.5
    status_interval: float = 5.0
    discover_interval: float = 60.0
    download_workers: int = 8
    name: str = field(default="sagemaker", init=False)
    remote: bool = field(default=True, init=False)  # see `Backend.remote`
    last_plan: JobPlan | None = field(default=None, init=False, repr=False)
    _aws: AwsSession | None = field(default=None, init=False, repr=False)
    _tensorboard_uris: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)

    # sessions and shared look-ups

    def _session(self) -> AwsSession:
        if self._aws is None:
            self._aws = AwsSession(self.settings)
        return self._aws

    def _role(self) -> str:
        role = self.settings.role_arn
        if not role:
            where = f"set aws.role_arn in the spec, pass --role-arn, or set {ENV_VARS['role_arn']}"
            raise UserError(f"no IAM role for SageMaker: {where}")
        if not ROLE_ARN.match(role):
            raise UserError(f"aws.role_arn {quoted(role)} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
        return role

    def _describe_raw(self, session: AwsSession, job_name: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return dict(session.client("sagemaker").describe_training_job(TrainingJobName=job_name))
        except ClientError as e:
            if _not_found(e):
                raise JobNotFound(f"no SageMaker training job named {quoted(job_name)} in {session.region}") from None
            raise

    def _job_exists(self, session: AwsSession, job_name: str) -> bool:
        try:
            self._describe_raw(session, job_name)
        except JobNotFound:
            return False
        return True

    @staticmethod
    def _output_prefix(session: AwsSession, spec: JobSpec, *, offline: bool) -> S3Location:
        """output.s3_uri, or the SDK's default bucket `sagemaker-<region>-<account>` + `/cloudtrain`."""
        if spec.output.s3_uri:
            return S3Location.parse(spec.output.s3_uri)
        account = OFFLINE_ACCOUNT if offline else session.account_id()
        return S3Location(f"sagemaker-{session.region}-{account}", "cloudtrain")

    @staticmethod
    def _bucket_exists(session: AwsSession, bucket: str) -> bool:
        """HeadBucket (with ExpectedBucketOwner on a default-named bucket: see `aws.expect_default_bucket_owner`).

        A 403 on a bucket named as SageMaker's default bucket means another account owns it (or it denies us):
        refused, nothing is sent there. On a bucket the user named, 403 is left to the uploads to tell.
        """
        from botocore.exceptions import ClientError

        try:
            session.client("s3").head_bucket(Bucket=bucket)
        except ClientError as e:
            if error_code(e) in ("404", "NoSuchBucket", "NotFound"):
                return False
            if error_code(e) in ("403", "AccessDenied"):
                if default_bucket_owner(bucket):
                    raise AwsRefused(
                        f"the S3 bucket {bucket} is not account {default_bucket_owner(bucket)}'s (another account "
                        "owns it, or it denies you): nothing was sent; set output.s3_uri to a bucket of yours"
                    ) from None
                return True  # someone's bucket: the uploads will tell whether we may write to it
            raise
        return True

    @staticmethod
    def _check_instance_type(session: AwsSession, instance_type: str) -> None:
        """AWS refuses a type outside the TrainingInstanceType enum of its API (botocore's copy of it does not
        check enums): said here, before any upload, with the closest types SageMaker trains on."""
        import difflib

        known = session.client("sagemaker").meta.service_model.shape_for("TrainingInstanceType").enum
        if known and instance_type not in known:
            close = difflib.get_close_matches(instance_type, known, n=3, cutoff=0.8)
            hint = f" (closest: {', '.join(close)})" if close else ""
            raise UserError(f"resources.instance_type: SageMaker does not train on {quoted(instance_type)}{hint}")

    @staticmethod
    def _check_bucket_regions(session: AwsSession, spec: JobSpec) -> None:
        """SageMaker reads and writes only buckets of the job's region: each bucket the spec names is asked its
        region (one HeadBucket; S3 gives it even with a 403), and one elsewhere is refused before any upload."""
        from botocore.exceptions import ClientError

        named = {"output.s3_uri": spec.output.s3_uri, "checkpoints.s3_uri": spec.checkpoints.s3_uri}
        named |= {f"data.{ch}": loc for ch, loc in spec.data.items() if loc.startswith("s3://")}
        regions: dict[str, str | None] = {}
        for where, uri in named.items():
            if not uri:
                continue
            bucket = S3Location.parse(uri).bucket
            if bucket not in regions:
                try:
                    answer = session.client("s3").head_bucket(Bucket=bucket)
                except ClientError as e:
                    answer = e.response
                headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                regions[bucket] = headers.get("x-amz-bucket-region") or answer.get("BucketRegion")
            region = regions[bucket]
            if region and region != session.region:
                raise UserError(
                    f"{where}: the S3 bucket {bucket} is in {region}, the job would run in {session.region}: "
                    "SageMaker uses buckets of its own region only"
                )

    @staticmethod
    def _create_bucket(session: AwsSession, bucket: str) -> None:
        s3 = session.client("s3")
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if session.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": session.region}
        s3.create_bucket(**kwargs)

    @staticmethod
    def _checkpoint_uri(spec: JobSpec, job_name: str, output: S3Location) -> str:
        """The job's own checkpoint prefix: `<checkpoints.s3_uri>/<job>`, else `<output>/<job>/checkpoints`.

        Never shared between jobs: SageMaker restores whatever is under the prefix into every new job, so a
        prefix shared by all jobs of a spec would make each resume the last. Resuming is `--resume JOB` only.
        """
        if spec.checkpoints.s3_uri:
            return S3Location.parse(spec.checkpoints.s3_uri).join(job_name).uri
        return output.join(job_name, "checkpoints").uri

    def _resume_source(self, session: AwsSession, resume_from: str) -> tuple[S3Location, list[S3Object]]:
        """`--resume JOB`: that job's checkpoint prefix and what it holds (copied to the new job's before it starts,
        as the local backend copies the old job's checkpoints folder)."""
        previous = self._describe_raw(session, resume_from)
        uri = previous.get("CheckpointConfig", {}).get("S3Uri")
        if not uri:
            raise UserError(f"--resume: job {quoted(resume_from)} has no checkpoint configuration to resume from")
        source = S3Location.parse(uri)
        objects = list_objects(session.client("s3"), source, Path("."))
        if not objects:
            raise UserError(f"--resume: job {quoted(resume_from)} saved no checkpoints under {uri}")
        return source, objects

    @staticmethod
    def _copy_checkpoints(session: AwsSession, source: S3Location, objects: list[S3Object], dest: str) -> None:
        """Server-side copies (CopyObject, or UploadPartCopy for large files) of a job's checkpoints to dest."""
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        target = S3Location.parse(dest)
        prefix = source.key + "/" if source.key else ""
        with create_transfer_manager(session.client("s3"), TransferConfig(max_concurrency=8)) as manager:
            futures = [
                manager.copy(
                    {"Bucket": obj.location.bucket, "Key": obj.location.key},
                    target.bucket,
                    target.join(obj.location.key[len(prefix) :]).key,
                )
                for obj in objects
            ]
            for future in futures:
                future.result()

    @staticmethod
    def _built_image(session: AwsSession, spec: JobSpec, *, dry_run: bool, offline: bool) -> str | None:
        """`image.build`'s content-hash URI; a real submit first builds and pushes it when ECR lacks the tag."""
        if spec.image.kind != "build":
            return None
        from cloudtrain.image.build import ensure_image
        from cloudtrain.image.context import image_reference

        if dry_run:
            return image_reference(spec, OFFLINE_ACCOUNT if offline else session.account_id(), session.region)
        return ensure_image(spec, session=session)

    def _prepare(
        self,
        session: AwsSession,
        spec: JobSpec,
        job_name: str,
        *,
        resume_from: str | None,
        dry_run: bool,
        offline: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> JobPlan:
        """Digest the code and data, build the whole request, then upload what S3 lacks (dry: only look).

        Everything is content-addressed, so the request (with its limits and tags checked) is complete
        before the first byte goes to S3 or a bucket is created. When HeadObject finds the code and every
        data manifest, the bucket exists and nothing is built or sent: no tarball, no HeadBucket.
        """
        from cloudtrain.image.stock import resolve_image
        from cloudtrain.pricing import estimate

        if not JOB_NAME.match(job_name):
            raise UserError(f"job name {quoted(job_name)}: SageMaker wants 1-63 letters, digits and hyphens")
        role = self._role()
        region = session.region
        self._check_instance_type(session, spec.resources.instance_type)
        if not offline:
            self._check_bucket_regions(session, spec)
        built = self._built_image(session, spec, dry_run=dry_run, offline=offline)
        image = resolve_image(spec.image, region, spec.resources.instance_type, built_uri=built)
        output = self._output_prefix(session, spec, offline=offline)
        checkpoint_uri = self._checkpoint_uri(spec, job_name, output)
        notes: list[str] = []
        resume = None
        if resume_from and not offline:
            resume = self._resume_source(session, resume_from)
            size = sum(o.size for o in resume[1])
            verb = "are copied" if dry_run else "copied"
            notes.append(
                f"resume: {len(resume[1])} checkpoint file(s), {size} bytes, of {resume_from} {verb} from "
                f"{resume[0].uri} to {checkpoint_uri} before the job starts"
            )
        tree = code_tree(spec.code, extra=vendor.job_entries(spec))
        if tree.note:
            notes.append(tree.note)
        local = {ch: Path(loc) for ch, loc in spec.data.items() if not loc.startswith("s3://")}
        digests = {ch: tree_digest(path) for ch, path in local.items()}
        channels = {
            ch: channel_uri(data_location(output, digests[ch])[0]) if ch in digests else loc
            for ch, loc in spec.data.items()
        }
        request = build_request(
            spec,
            job_name,
            region=region,
            role_arn=role,
            image_uri=image.uri,
            code_uri=code_location(output, tree).uri,
            channels=channels,
            output=output,
            checkpoint_uri=checkpoint_uri,
            tags=job_tags(spec, tree.sha256, git_commit(Path(spec.code.source_dir))),
        )
        if offline:
            uploads = [
                Upload(
                    "code",
                    CODE_TARBALL,
                    str(spec.code.source_dir),
                    request_code_uri(request),
                    tree.sha256,
                    tree.size,
                    None,
                )
            ]
            uploads += [
                Upload("data", ch, str(local[ch]), channels[ch], d.sha256, d.size, None) for ch, d in digests.items()
            ]
            return JobPlan(request, tuple(uploads), image, estimate(spec.resources), tree, tuple(notes))
        uploader = S3Uploader(
            session.client("s3"), kms_key_id=spec.aws.kms_key_id, on_progress=on_progress, dry_run=dry_run
        )
        code_exists = uploader.exists(code_location(output, tree))
        data_exists = {ch: uploader.exists(data_location(output, d)[1]) for ch, d in digests.items()}
        if not (code_exists and all(data_exists.values())) and not self._bucket_exists(session, output.bucket):
            if spec.output.s3_uri and not dry_run:
                raise UserError(
                    f"output.s3_uri: the S3 bucket {output.bucket!r} does not exist (create it, or leave "
                    "output.s3_uri out to use SageMaker's default bucket)"
                )
            if spec.output.s3_uri:
                notes.append(f"output.s3_uri: the S3 bucket {output.bucket} does not exist: submit would fail")
            elif dry_run:
                notes.append(f"the S3 bucket {output.bucket} does not exist yet: submit creates it")
            else:
                self._create_bucket(session, output.bucket)
                notes.append(f"created the S3 bucket {output.bucket}")
        uploads = [uploader.upload_code(spec.code, tree, output, exists=code_exists)]
        uploads += [
            uploader.upload_channel(ch, local[ch], output, d, exists=data_exists[ch]) for ch, d in digests.items()
        ]
        if resume and not dry_run:
            self._copy_checkpoints(session, *resume, checkpoint_uri)
        return JobPlan(request, tuple(uploads), image, estimate(spec.resources), tree, tuple(notes))

    # the Backend protocol

    def plan(self, spec: JobSpec, job_name: str, *, resume_from: str | None = None) -> dict[str, Any]:
        """`--dry-run`: the request, the cost estimate and the uploads a submit would make; creates nothing.

        Only reads AWS (STS, HeadBucket, HeadObject, DescribeTrainingJob). When AWS cannot be reached
        the plan is still made, with a placeholder account and uploads of unknown state, and says so.
        """
        session = self._session()
        with translate_errors(session.where):
            notes: list[str] = []
            try:
                session.account_id()
                offline = False
            except BackendUnavailable as e:
                if resume_from:
                    raise
                offline = True
                notes.append(f"AWS not reached ({e}): uploads may already exist; account shown as {OFFLINE_ACCOUNT}")
            if not offline and self._job_exists(session, job_name):
                notes.append(f"a job named {job_name!r} exists already: submit would fail")
            plan = self._prepare(session, spec, job_name, resume_from=resume_from, dry_run=True, offline=offline)
        data = plan.to_json()
        data["notes"] = notes + data["notes"]
        return data

    def submit(
        self,
        spec: JobSpec,
        job_name: str,
        *,
        resume_from: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> JobInfo:
        """Upload what is missing, CreateTrainingJob, return at once; `last_plan` keeps the uploads made."""
        from botocore.exceptions import ClientError

        session = self._session()
        with translate_errors(session.where):
            if self._job_exists(session, job_name):  # AWS would refuse anyway; this also spares the uploads
                raise JobExists(job_name)
            plan = self._prepare(
                session, spec, job_name, resume_from=resume_from, dry_run=False, on_progress=on_progress
            )
            created = time.time()
            try:
                session.client("sagemaker").create_training_job(**plan.request)
            except ClientError as e:
                if error_code(e) != "ResourceInUse":
                    raise
                # Taken since the check above: by this very request, if botocore sent it again after its answer
                # was lost (the job carries this request's tags: spec and code digests), else by someone else.
                info = self._info(session, job_name, tags=True)
                if not {t["Key"]: t["Value"] for t in plan.request["Tags"]}.items() <= info.tags.items():
                    raise JobExists(job_name) from None
                self.last_plan = plan
                return info
            self.last_plan = plan
            return created_job_info(plan.request, created)

    def _info(self, session: AwsSession, job_name: str, *, tags: bool = False) -> JobInfo:
        raw = self._describe_raw(session, job_name)
        if not tags:
            return job_info(raw, [])
        listed = session.client("sagemaker").list_tags(ResourceArn=raw["TrainingJobArn"]).get("Tags", [])
        return job_info(raw, listed)

    def describe(self, job_name: str, *, tags: bool = False) -> JobInfo:
        """One DescribeTrainingJob; `tags=True` adds a ListTags call (DescribeTrainingJob has no tags), for
        `compare`'s code digest. Without it `JobInfo.tags` is empty."""
        session = self._session()
        with translate_errors(session.where):
            return self._info(session, job_name, tags=tags)

    def list_jobs(self, limit: int = 20) -> list[JobInfo]:
        """cloudtrain's jobs (tag `cloudtrain:managed=true`), newest first, through SageMaker Search.

        AWS's Search index trails CreateTrainingJob by a few seconds, so a job submitted a moment ago
        may show up on the next call.
        """
        session = self._session()
        jobs: list[dict[str, Any]] = []
        with translate_errors(session.where):
            sm = session.client("sagemaker")
            kwargs: dict[str, Any] = {
                "Resource": "TrainingJob",
                "SearchExpression": {
                    "Filters": [{"Name": f"Tags.{MANAGED_TAG}", "Operator": "Equals", "Value": "true"}]
                },
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": max(1, min(limit, 100)),
            }
            while len(jobs) < limit:
                page = sm.search(**kwargs)
                jobs.extend(r["TrainingJob"] for r in page.get("Results", []) if "TrainingJob" in r)
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        jobs.sort(key=lambda j: _ts(j.get("CreationTime")) or 0.0, reverse=True)
        return [job_info(j) for j in jobs[:limit]]

    def stop(self, job_name: str) -> JobInfo:
        from botocore.exceptions import ClientError

        session = self._session()
        with translate_errors(session.where):
            raw = self._describe_raw(session, job_name)
            if raw["TrainingJobStatus"] in TERMINAL or raw["TrainingJobStatus"] == "Stopping":
                return job_info(raw, [])
            try:
                session.client("sagemaker").stop_training_job(TrainingJobName=job_name)
            except ClientError as e:
                if error_code(e) != "ValidationException":  # it ended in between
                    raise
            return self._info(session, job_name)

    # logs

    def logs(self, job_name: str, *, host: str | None = None, follow: bool = False) -> Iterator[LogEvent]:
        session = self._session()
        return self._logs(session, job_name, host, follow)

    def _logs(self, session: AwsSession, job_name: str, host: str | None, follow: bool) -> Iterator[LogEvent]:
        with translate_errors(session.where):
            raw = self._describe_raw(session, job_name)
            client = session.client("logs")
            if not follow:
                streams = self._discover(client, job_name, host)
                yield from heapq.merge(*(self._read_stream(client, s) for s in streams), key=lambda e: e.timestamp)
                return
            yield from self._follow(session, client, job_name, host, raw)

    @staticmethod
    def _discover(client: Any, job_name: str, host: str | None) -> list[_Stream]:
        """The job's log streams `<job>/algo-N-<epoch>` (one per host and container start)."""
        from botocore.exceptions import ClientError

        prefix = f"{job_name}/{host}-" if host else f"{job_name}/"
        streams: list[_Stream] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": prefix}
        try:
            while True:
                page = client.describe_log_streams(**kwargs)
                for s in page.get("logStreams", []):
                    rest = s["logStreamName"][len(job_name) + 1 :]
                    m = re.fullmatch(r"(?P<host>.+?)-\d+", rest)
                    streams.append(_Stream(s["logStreamName"], m.group("host") if m else rest))
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except ClientError as e:
            if error_code(e) == "ResourceNotFoundException":  # no log group before the first job logs
                return []
            raise
        return streams

    @staticmethod
    def _fetch(client: Any, stream: _Stream) -> list[LogEvent]:
        """One GetLogEvents call: the stream's next lines (empty at its end)."""
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream.name, "startFromHead": True}
        if stream.token:
            kwargs["nextToken"] = stream.token
        page = client.get_log_events(**kwargs)
        stream.token = page.get("nextForwardToken") or stream.token
        return [
            LogEvent(e["timestamp"] / 1000.0, stream.host, e["message"].rstrip("\n")) for e in page.get("events", [])
        ]

    def _read_stream(self, client: Any, stream: _Stream) -> Iterator[LogEvent]:
        """A whole stream, page by page (GetLogEvents repeats the token at the end)."""
        while True:
            before = stream.token
            yield from self._fetch(client, stream)
            if stream.token == before:
                return

    def _follow(
        self, session: AwsSession, client: Any, job_name: str, host: str | None, raw: Mapping[str, Any]
    ) -> Iterator[LogEvent]:
        """Every host's new lines until the job has ended and its streams are drained.

        Each stream is followed on its own with GetLogEvents and its forward token, as the SDK's `logs_for_job`
        does: a host whose lines reach CloudWatch late loses none (each stream keeps its own position, where a
        time window over all hosts skips a lagging one), and GetLogEvents is limited per stream where
        FilterLogEvents is limited per account and region (5 requests/s, shared by every follower). A stream is
        read at most once per `poll_interval`, less often while it is quiet (up to `max_poll_interval`); each
        round's lines are merged by time. Streams are looked for every `discover_interval`, at once when the
        status changes, and at every status check while hosts have none (a host that starts late, a container
        restarted after a spot interruption: read from its start). Once the job has ended, every stream is read
        until no line has come for the longest ingestion lag seen (the age of the newest line a read of a
        caught-up stream brings, at most `MAX_LAG_S`) plus two rounds, and up to `MAX_LAG_S` for a host that
        has no stream yet.
        """
        hosts = 1 if host else int(raw.get("ResourceConfig", {}).get("InstanceCount", 1))
        state = (raw["TrainingJobStatus"], raw.get("SecondaryStatus", ""))
        streams: dict[str, _Stream] = {}
        lag = 0.0
        ended: float | None = None  # when the job was seen ended (monotonic)
        last_line = 0.0
        now = time.monotonic()
        next_status, next_discover = now + self.status_interval, now
        while True:
            now = time.monotonic()
            if now >= next_status:
                raw = self._describe_raw(session, job_name)
                current = (raw["TrainingJobStatus"], raw.get("SecondaryStatus", ""))
                if current != state or len({s.host for s in streams.values()}) < hosts:
                    next_discover = now  # a new phase (or hosts without a stream yet): look for streams now
                state, next_status = current, now + self.status_interval
            if ended is None and state[0] in TERMINAL:
                ended, next_discover = now, now
                for s in streams.values():
                    s.due = now  # drain: no more back-off
            if now >= next_discover:
                for s in self._discover(client, job_name, host):
                    streams.setdefault(s.name, s)
                next_discover = now + self.discover_interval
            batch: list[LogEvent] = []
            for s in streams.values():
                if s.due > now:
                    continue
                caught_up = s.token is not None  # past its backlog: a new line's age is how late it came
                lines = self._fetch(client, s)
                if lines and caught_up:
                    lag = max(lag, min(MAX_LAG_S, time.time() - lines[-1].timestamp))
                s.quiet = 0 if lines else s.quiet + 1
                quiet_wait = min(self.poll_interval * 1.5**s.quiet, self.max_poll_interval)
                s.due = now + (self.poll_interval if lines or ended is not None else quiet_wait)
                batch += lines
            if batch:
                last_line = now
            yield from sorted(batch, key=lambda e: e.timestamp)
            if ended is not None:
                since = time.monotonic() - max(ended, last_line)
                trained = any(t.get("Status") == "Training" for t in raw.get("SecondaryStatusTransitions", []))
                silent = trained and len({s.host for s in streams.values()}) < hosts  # a host's first lines late
                if since >= lag + 2 * self.poll_interval and not (silent and since < MAX_LAG_S):
                    return  # drained: nothing for longer than lines have been seen to lag
            due = min((s.due for s in streams.values()), default=now + self.poll_interval)
            time.sleep(max(0.0, min(due, next_status, next_discover) - time.monotonic()))

    # artifacts

    def fetch_artifacts(self, job_name: str, dest: Path, *, on_progress: ProgressCallback | None = None) -> Artifacts:
        """model.tar.gz and output.tar.gz downloaded beside and extracted into dest/model, dest/output;
        the checkpoints and TensorBoard prefixes mirrored into dest/checkpoints, dest/tensorboard. A missing one
        gives None.

        Everything is downloaded and extracted in a staging folder in dest first, then swapped in: a fetch
        that fails (a dropped connection, a full disk, a refused archive) leaves dest as it was.
        on_progress(done_bytes, total_bytes) is called from the download threads.
        """
        session = self._session()
        dest = Path(dest)
        with translate_errors(session.where), writing_to(dest):  # a full disk is one line, not a traceback
            raw = self._describe_raw(session, job_name)
            uris = artifact_uris(raw)
            s3 = session.client("s3")
            with staging_folder(dest) as staging:
                tarballs: dict[str, S3Object] = {}
                for kind in ("model", "output"):
                    if kind in uris:
                        obj = head_object(s3, S3Location.parse(uris[kind]), staging / f"{kind}.tar.gz")
                        if obj is not None:
                            tarballs[kind] = obj
                checkpoints: list[S3Object] = []
                if "checkpoints" in uris:
                    checkpoints = list_objects(s3, S3Location.parse(uris["checkpoints"]), staging / "checkpoints")
                events: list[S3Object] = []
                if "tensorboard" in uris:
                    events = list_objects(s3, S3Location.parse(uris["tensorboard"]), staging / "tensorboard")
                objects = [*tarballs.values(), *checkpoints, *events]
                progress = Progress(sum(o.size for o in objects), on_progress)
                extract = {obj.dest: staging / kind for kind, obj in tarballs.items()}
                checked = Downloader(s3, self.download_workers, progress).fetch(objects, extract) if objects else {}
                folders = [name for name, found in (("checkpoints", checkpoints), ("tensorboard", events)) if found]
                names = [*tarballs, *(f"{kind}.tar.gz" for kind in tarballs), *folders]
                for name in names:
                    swap_in(staging / name, dest / name)
        return Artifacts(
            model=dest / "model" if "model" in tarballs else None,
            output=dest / "output" if "output" in tarballs else None,
            checkpoints=dest / "checkpoints" if checkpoints else None,
            tensorboard=dest / "tensorboard" if events else None,
            checked={obj.dest.name: checked[obj.dest] for obj in tarballs.values()},
        )

    def code_digest(self, info: JobInfo) -> str | None:
        """The code digest submit tagged the job with (in `info.tags` when described with tags=True)."""
        return info.tags.get(CODE_TAG)

    def evaluation(self, info: JobInfo) -> tuple[Any, str]:
        """eval_report.json from the ended job's output.tar.gz on S3, read into memory (bounded)."""
        from botocore.exceptions import ClientError

        uri = info.artifacts.get("output")
        if not info.done or not uri:
            return None, ""
        location = S3Location.parse(uri)
        session = self._session()
        with translate_errors(session.where, "S3"):
            s3 = session.client("s3")
            try:
                head = s3.head_object(Bucket=location.bucket, Key=location.key)
            except ClientError as e:
                if error_code(e) in ("404", "NoSuchKey", "NotFound"):
                    return None, uri
                raise
            if head["ContentLength"] > OUTPUT_READ_MAX_BYTES:
                raise ValueError(f"{uri} is {head['ContentLength'] >> 20} MiB; fetch-model it first")
            body = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
        return json_member(io.BytesIO(body), EVAL_REPORT, EVAL_REPORT_MAX_BYTES), uri

    def sync_tensorboard(self, job_name: str, dest: Path) -> int:
        """The job's TensorBoard event files in S3 mirrored into dest: one listing, then a ranged GET of what each
        file gained since the last call (see `cloudtrain.transfer.events`). Nothing before SageMaker uploads any."""
        session = self._session()
        with translate_errors(session.where):
            if job_name not in self._tensorboard_uris:  # fixed at CreateTrainingJob: described once
                uris = artifact_uris(self._describe_raw(session, job_name))
                self._tensorboard_uris[job_name] = uris.get("tensorboard")
            uri = self._tensorboard_uris[job_name]
            if uri is None:
                return 0
            s3 = session.client("s3")
            objects = {o.dest.relative_to(dest).as_posix(): o for o in list_objects(s3, S3Location.parse(uri), dest)}

            def read(file: EventFile, start: int) -> bytes:
                where = objects[file.name].location
                answer = s3.get_object(Bucket=where.bucket, Key=where.key, Range=f"bytes={start}-{file.size - 1}")
                return bytes(answer["Body"].read())

            return mirror((EventFile(name, o.size) for name, o in objects.items()), dest, read)

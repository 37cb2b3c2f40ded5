"""CreateTrainingJob's request, built as AWS's TensorFlow estimator would send it: pure, so `--dry-run` and
`submit` send the same thing, and AWS's own limits are checked here so an error names the spec's field.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.contract import RESERVED_HYPERPARAMETERS, hyperparameters, runtime_environment, script_mode
from cloudtrain.backends.sagemaker.rules import Refused, check, has_instance_storage
from cloudtrain.channels.fields import sagemaker_channel
from cloudtrain.errors import UserError, quoted
from cloudtrain.transfer import vendor
from cloudtrain.transfer.code import CodeTree
from cloudtrain.transfer.s3 import S3Location
from cloudtrain.transfer.upload import Upload

if TYPE_CHECKING:  # the spec's pydantic models cost more to import than boto3: `status` and `logs` never need them
    from cloudtrain.channels.plan import ChannelCopy
    from cloudtrain.image.stock import ImageChoice
    from cloudtrain.pricing import CostEstimate
    from cloudtrain.spec.models import JobSpec

TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # SageMaker's default LocalPath; cloudtrain.runtime's too
MANAGED_TAG = "cloudtrain:managed"
SPEC_TAG = "cloudtrain:spec-sha256"
CODE_TAG = "cloudtrain:code-sha256"
GIT_TAG = "cloudtrain:git-commit"


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


def _check_reserved(spec: JobSpec) -> None:
    """Script mode's own hyperparameters cannot be set by a spec (AWS's sizes: `refuse_what_aws_refuses`)."""
    for name in spec.hyperparameters:
        if name in RESERVED_HYPERPARAMETERS or name.startswith("sagemaker_"):
            raise UserError(f"hyperparameters.{name}: reserved for SageMaker script mode")


def job_tags(spec: JobSpec, code_sha256: str, commit: str | None) -> list[dict[str, str]]:
    """The spec's tags plus cloudtrain's own; `cloudtrain:` keys are reserved (AWS's `aws:`: the validator's)."""
    from cloudtrain.spec.models import spec_digest

    tags = dict(spec.tags)
    for key in tags:
        if key.startswith("cloudtrain:"):
            raise UserError(f"tags.{key}: the cloudtrain: prefix is cloudtrain's own")
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
    channels: Mapping[str, str],  # each S3 channel's URI (a local folder's: where it is uploaded)
    output: S3Location,
    checkpoint_uri: str,
    tags: list[dict[str, str]],
) -> dict[str, Any]:
    """The CreateTrainingJob keyword arguments; pure, so dry-run and submit send the same thing."""
    from cloudtrain.spec.models import script_environment

    res = spec.resources
    kms = spec.aws.kms_key_id
    model_dir = output.join(job_name, "model").uri
    values = script_mode(spec, job_name, submit_directory=code_uri, region=region, model_dir=model_dir)
    job_hyperparameters = hyperparameters(spec, values)
    strategy = spec.distribution.strategy.value
    environment = {
        **script_environment(spec),
        **runtime_environment(strategy, spec.distribution.communication, spec.checkpoints.local_path),
    }
    if vendor.job_minor(spec):  # tf-keras packed in the code: on the path AWS's toolkit hands the script
        environment["PYTHONPATH"] = ":".join(
            p for p in (vendor.container_pythonpath(), environment.get("PYTHONPATH")) if p
        )
    _check_reserved(spec)

    algorithm: dict[str, Any] = {"TrainingImage": image_uri, "TrainingInputMode": "File"}
    if spec.metrics:
        algorithm["MetricDefinitions"] = [{"Name": m.name, "Regex": m.regex} for m in spec.metrics]
    algorithm["EnableSageMakerMetricsTimeSeries"] = True

    resource_config: dict[str, Any] = {
        "InstanceType": res.instance_type,
        "InstanceCount": res.instance_count,
        "VolumeSizeInGB": res.volume_size_gb,
    }
    if kms and not has_instance_storage(res.instance_type):
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
        "HyperParameters": job_hyperparameters,
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
    if spec.data:  # each channel's options as the SDK's TrainingInput / FileSystemInput send them
        request["InputDataConfig"] = [sagemaker_channel(name, ch, channels.get(name)) for name, ch in spec.data.items()]
    if spec.aws.vpc is not None:
        request["VpcConfig"] = {
            "SecurityGroupIds": list(spec.aws.vpc.security_group_ids),
            "Subnets": list(spec.aws.vpc.subnets),
        }
    if res.max_retry_attempts > 0:
        request["RetryStrategy"] = {"MaximumRetryAttempts": res.max_retry_attempts}
    return request


# Where each part of a CreateTrainingJob request comes from in the spec (the longest path wins).
SPEC_FIELDS: dict[tuple[str, ...], str] = {
    ("TrainingJobName",): "name",
    ("RoleArn",): "aws.role_arn",
    ("VpcConfig", "Subnets"): "aws.vpc.subnets",
    ("VpcConfig", "SecurityGroupIds"): "aws.vpc.security_group_ids",
    ("VpcConfig",): "aws.vpc",
    ("ResourceConfig", "VolumeKmsKeyId"): "aws.kms_key_id",
    ("OutputDataConfig", "KmsKeyId"): "aws.kms_key_id",
    ("OutputDataConfig",): "output.s3_uri",
    ("TensorBoardOutputConfig",): "output.s3_uri",
    ("CheckpointConfig", "S3Uri"): "checkpoints.s3_uri",
    ("CheckpointConfig", "LocalPath"): "checkpoints.local_path",
    ("ResourceConfig", "InstanceType"): "resources.instance_type",
    ("ResourceConfig", "InstanceCount"): "resources.instance_count",
    ("ResourceConfig", "VolumeSizeInGB"): "resources.volume_size_gb",
    ("ResourceConfig", "KeepAlivePeriodInSeconds"): "resources.keep_alive",
    ("ResourceConfig",): "resources",
    ("StoppingCondition", "MaxRuntimeInSeconds"): "resources.max_runtime",
    ("StoppingCondition", "MaxWaitTimeInSeconds"): "resources.spot.max_wait",
    ("EnableManagedSpotTraining",): "resources.spot",
    ("RetryStrategy",): "resources.max_retry_attempts",
    ("AlgorithmSpecification", "MetricDefinitions"): "metrics",
    ("AlgorithmSpecification",): "image",
    ("InputDataConfig",): "data",
    ("HyperParameters",): "hyperparameters",
    ("Environment",): "environment",
    ("Tags",): "tags",
}
_PLAIN_KEY = re.compile(r"[\w.:/=+@-]{1,128}")


def spec_field(path: tuple[str | int, ...], request: Mapping[str, Any]) -> str:
    """The spec field a part of the request comes from, for a one-line refusal (`tags.team`, `data.train`)."""
    for n in range(len(path), 0, -1):
        if (field := SPEC_FIELDS.get(tuple(str(p) for p in path[:n]))) is not None:
            break
    else:
        return "the request"
    rest = path[n:]
    if not rest:
        return field
    key: Any = rest[0]
    if field == "tags":
        key = request["Tags"][key]["Key"]
    elif field == "data":
        key = request["InputDataConfig"][key]["ChannelName"]
    if field == "metrics" and len(rest) > 1:
        return f"metrics.{key}.{str(rest[1]).lower()}"
    if field in ("tags", "data", "hyperparameters", "environment", "metrics") or field.startswith("aws.vpc."):
        shown = str(key)
        return f"{field}.{shown if _PLAIN_KEY.fullmatch(shown) else quoted(shown)}"
    return field


def refuse_what_aws_refuses(request: Mapping[str, Any]) -> None:
    """AWS's own rules on the whole request (the service model and its documentation: `rules.check`), before
    anything is uploaded or created: one line naming the spec field, exit code 2. The reason is AWS's
    constraint, never the value (which may be a secret environment value)."""
    try:
        check("CreateTrainingJob", request)
    except Refused as e:
        first = e.violations[0]
        more = f" (and {len(e.violations) - 1} more)" if len(e.violations) > 1 else ""
        raise UserError(f"{spec_field(first.path, request)}: AWS refuses this: {first.reason}{more}") from None


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
    data_copies: tuple[ChannelCopy, ...] = ()  # what each instance copies before its script starts

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
            "data_copies": [c.to_json() for c in self.data_copies],
        }

"""The job spec's pydantic models: the YAML a user writes, validated (`cloudtrain.spec.load` reads a file).

Paths in a spec are relative to the spec file; validation resolves them to absolute paths so that backends
never depend on the working directory.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import types
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Ge, Gt
from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from cloudtrain.errors import quoted
from cloudtrain.spec.base import FieldError, Strict
from cloudtrain.spec.patterns import (  # defined apart (stdlib only) for the code paths that never load a spec
    CHANNEL_PATTERN,
    ENV_NAME_PATTERN,
    INSTANCE_TYPE_PATTERN,
    METRIC_NAME_PATTERN,
    NAME_PATTERN,
    PY_VERSION_PATTERN,
    REGION_PATTERN,
    ROLE_ARN_PATTERN,
    S3_URI,
    TAG_HELP,
    URL_PATTERN,
    VERSION_PATTERN,
    is_tag_text,
)
from cloudtrain.spec.patterns import PATTERN_HELP as PATTERN_HELP  # re-exported: messages words errors with it
from cloudtrain.spec.source import kind_of
from cloudtrain.spec.sweep import EPOCHS_KEYS, MAX_TUNING_METRICS, SweepSpec

if TYPE_CHECKING:
    from pydantic import GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

JOB_NAME_MAX = 50
MAX_METRICS = 40  # SageMaker's MetricDefinitions
# CreateTrainingJob's bounds (botocore's model): a value past them would fail at AWS, after the upload, and
# everything that stores or redacts the spec would carry it first.
HYPERPARAMETER_KEY_MAX, HYPERPARAMETER_VALUE_MAX = 256, 2500  # the value as sent: JSON-encoded
ENVIRONMENT_KEY_MAX, ENVIRONMENT_VALUE_MAX, ENVIRONMENT_ENTRIES_MAX = 512, 512, 100
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = types.MappingProxyType({"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400})


def parse_duration(value: Any) -> int:
    """Seconds from `90s`, `30m`, `2h`, `1d` or a plain integer of seconds (bounds are checked after)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 30m, 2h, 1d or seconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if isinstance(value, (str, float)):
        shown = quoted(value) if isinstance(value, str) else str(value)
        raise ValueError(f"{shown} is not a duration such as 90s, 30m, 2h, 1d or seconds")
    raise ValueError(f"expected a duration such as 90s, 30m, 2h, 1d or seconds (got {kind_of(value)})")


def format_duration(seconds: int) -> str:
    """The shortest exact form of a duration (`3600` -> `1h`), as a user would write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _DurationJsonSchema:
    """Show editors both YAML forms of a duration, the bounds applying to the integer form.

    Pydantic would describe the validated type (an integer) and so flag `max_runtime: 2h` as wrong.
    """

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        js = handler(schema)
        numeric = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        as_int = {k: js.pop(k) for k in numeric if k in js}
        js["anyOf"] = [as_int, {"type": "string", "pattern": _DURATION.pattern}]
        return js


_SERIALIZE_DURATION = PlainSerializer(format_duration, return_type=str, when_used="json")
# The bound sits before the BeforeValidator so that it applies to the parsed seconds (and shows in the schema).
Duration = Annotated[int, Ge(0), BeforeValidator(parse_duration), _SERIALIZE_DURATION, _DurationJsonSchema()]
PositiveDuration = Annotated[int, Gt(0), BeforeValidator(parse_duration), _SERIALIZE_DURATION, _DurationJsonSchema()]


def check_s3_uri(value: Any) -> Any:
    """Reject a malformed S3 URI early: SageMaker's own error comes minutes later, far from the spec."""
    if not isinstance(value, str) or S3_URI.match(value):
        return value  # not a string: pydantic's type check reports it
    if not value.startswith("s3://"):
        raise ValueError(f"{quoted(value)} is not an S3 URI of the form s3://bucket/prefix")
    bucket = value[len("s3://") :].split("/", 1)[0]
    rule = "3-63 lowercase letters, digits, '.' and '-'"
    raise ValueError(f"{quoted(value)} has an invalid bucket name {quoted(bucket)} ({rule})")


S3Uri = Annotated[str, BeforeValidator(check_s3_uri)]


def _existing_path(base: Any, value: Path, kind: Literal["file", "folder", "any"]) -> Path:
    """`value` resolved against the spec's folder; a ValueError (never an OSError) if it is not there."""
    try:
        path = (Path(base) / value).resolve()
        ok = path.is_file() if kind == "file" else path.is_dir() if kind == "folder" else path.exists()
        exists = path.exists()
    except (OSError, RuntimeError, ValueError) as e:  # name too long, symlink loop, NUL byte
        raise ValueError(f"{quoted(str(value))} cannot be read: {_reason(e)}") from None
    if not exists:
        raise ValueError(f"{quoted(str(value))} does not exist")
    if not ok:
        raise ValueError(f"{quoted(str(value))} is not a {kind}")
    return path


def _reason(e: Exception) -> str:
    """An OS error's reason without the (possibly very long) path it repeats."""
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).lower()


class CodeSpec(Strict):
    """The training code: a folder that is packed and shipped, and the script in it to run."""

    source_dir: Path = Field(
        description="Folder with the training code, relative to the spec file. Packed into one content-hashed "
        "tarball (uploaded once per content) and unpacked in /opt/ml/code on every instance.",
        examples=["code"],
    )
    entry_point: str = Field(
        min_length=1,
        description="The script inside source_dir that every instance runs, as `python ENTRY_POINT --name value ... "
        "--model_dir S3_URI` (AWS's sagemaker_program).",
        examples=["train.py"],
    )
    requirements: str | None = Field(
        None,
        description="A requirements file inside source_dir, pip-installed on every instance before the script "
        "starts (AWS's toolkit installs requirements.txt from /opt/ml/code).",
        examples=["requirements.txt"],
    )

    @field_validator("source_dir")
    @classmethod
    def _source_dir_exists(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        return v if base is None else _existing_path(base, v, "folder")

    @model_validator(mode="after")
    def _files_exist(self) -> CodeSpec:
        if not self.source_dir.is_absolute():
            return self  # loaded without a base folder (schema generation, tests of the model alone)
        for name in ("entry_point", "requirements"):
            rel = getattr(self, name)
            if rel is None:
                continue
            try:
                path = (self.source_dir / rel).resolve()
                is_file = path.is_file()
            except (OSError, RuntimeError, ValueError) as e:  # name too long, symlink loop, NUL byte
                raise FieldError(name, f"{quoted(str(rel))} cannot be read: {_reason(e)}") from None
            if not path.is_relative_to(self.source_dir):
                # Only source_dir is shipped to the instances: a file outside it would not be there.
                raise FieldError(name, f"{quoted(str(rel))} is outside source_dir {self.source_dir.name}/")
            if not is_file:
                hint = _suggest_file(self.source_dir, rel)
                raise FieldError(name, f"{quoted(str(rel))} not found in {self.source_dir.name}/{hint}")
        return self


class ImageBuild(Strict):
    """An image cloudtrain builds from the user's Dockerfile and pushes to ECR."""

    dockerfile: Path = Field(
        description="Dockerfile, relative to the spec file. `cloudtrain build` tags the image by the content hash "
        "of the Dockerfile and its context.",
        examples=["../docker/Dockerfile"],
    )
    context: Path = Field(
        Path("."),
        validate_default=True,
        description="Build context folder, relative to the spec file.",
        examples=[".."],
    )
    repository: str = Field(
        "cloudtrain-training",
        description="ECR repository the image is pushed to (created if missing); SageMaker pulls it from there.",
        examples=["my-training"],
    )
    build_args: dict[str, str] = Field(
        default_factory=dict,
        description="Docker build arguments (--build-arg NAME=value); part of the image's content hash.",
        examples=[{"TF_VERSION": "2.19.0"}],
    )

    @field_validator("dockerfile")
    @classmethod
    def _dockerfile(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        return v if base is None else _existing_path(base, v, "file")

    @field_validator("context")
    @classmethod
    def _context(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        return v if base is None else _existing_path(base, v, "folder")


class ImageSpec(Strict):
    """At most one of framework_version (AWS's stock image), uri, or build; none means the stock default."""

    framework_version: str | None = Field(
        None,
        pattern=VERSION_PATTERN,
        description="TensorFlow version of AWS's stock training image (tensorflow-training:VERSION-gpu/cpu in "
        "the job's region); default 2.19. Quote it: YAML reads 2.10 as the number 2.1. The local backend runs the "
        "TensorFlow installed here and warns when its minor version differs.",
        examples=["2.19"],
    )
    py_version: str | None = Field(
        None,
        pattern=PY_VERSION_PATTERN,
        description="Python tag of the stock image, with framework_version; default: the newest AWS publishes for "
        "that version.",
        examples=["py312"],
    )
    uri: str | None = Field(
        None,
        min_length=1,
        description="Your own training image (ECR URI); SageMaker runs `train` in it. Instead of framework_version.",
        examples=["123456789012.dkr.ecr.us-east-1.amazonaws.com/my-training:latest"],
    )
    build: ImageBuild | None = Field(
        None,
        description="An image cloudtrain builds from your Dockerfile and pushes to ECR before the job "
        "(`cloudtrain build`); instead of framework_version or uri.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageSpec:
        chosen = [f for f in ("framework_version", "uri", "build") if getattr(self, f) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give only one of framework_version, uri, build (got {' and '.join(chosen)})")
        if self.py_version is not None and chosen and chosen[0] != "framework_version":
            raise FieldError("py_version", f"only applies to AWS's stock images, not to {chosen[0]}")
        return self

    @property
    def kind(self) -> Literal["framework", "uri", "build"]:
        if self.uri is not None:
            return "uri"
        return "build" if self.build is not None else "framework"

    @property
    def version(self) -> str:
        return self.framework_version or DEFAULT_FRAMEWORK_VERSION


DEFAULT_FRAMEWORK_VERSION = "2.19"


class SpotSpec(Strict):
    """Managed spot training: cheaper capacity that AWS may take back (the job resumes from its checkpoints)."""

    enabled: bool = Field(
        False,
        description="Train on spot capacity (EnableManagedSpotTraining), up to 90% cheaper; the job may wait for "
        "capacity and be interrupted. Not with keep_alive.",
        examples=[True],
    )
    max_wait: PositiveDuration | None = Field(
        None,
        description="Total time to wait for spot capacity and run (MaxWaitTimeInSeconds); required with spot, "
        "at least max_runtime. 90s, 30m, 2h, 1d or seconds.",
        examples=["2h"],
    )


class ResourcesSpec(Strict):
    """The instances the job runs on and how long it may run (SageMaker's ResourceConfig, StoppingCondition)."""

    instance_type: str = Field(
        "ml.g5.xlarge",
        pattern=INSTANCE_TYPE_PATTERN,
        description="SageMaker instance type each worker runs on, billed per second; the dry-run prices it "
        "(us-east-1 on-demand) and a typo gets the closest types. Local jobs ignore it (CPU here).",
        examples=["ml.m5.large"],
    )
    instance_count: int = Field(
        1,
        ge=1,
        le=100,
        description="Number of instances (workers); with multi_worker_mirrored each is one worker in TF_CONFIG. "
        "Locally: that many worker processes. AWS's quota per instance type applies (ResourceLimitExceeded).",
        examples=[2],
    )
    volume_size_gb: int = Field(
        30,
        ge=1,
        le=16384,
        description="EBS volume per instance for /opt/ml (data in File mode, checkpoints); ignored by AWS on "
        "instance types with local NVMe storage (g5, g6, p5, trn1).",
        examples=[50],
    )
    max_runtime: PositiveDuration = Field(
        86400,
        le=28 * 86400,
        description="SageMaker stops the job after this (MaxRuntimeInSeconds; status Stopped, "
        "MaxRuntimeExceeded) and the local backend does too. 90s, 30m, 2h, 1d or seconds; at most 28d.",
        examples=["2h"],
    )
    spot: SpotSpec = Field(
        SpotSpec(), description="Managed spot training.", examples=[{"enabled": True, "max_wait": "4h"}]
    )
    keep_alive: Duration = Field(
        0,
        le=3600,
        description="SageMaker warm pool: keep the instances this long after the job (KeepAlivePeriodInSeconds), "
        "so the next job with the same resources starts in seconds; billed while kept. Not with spot. At most 1h.",
        examples=["30m"],
    )
    max_retry_attempts: int = Field(
        0,
        ge=0,
        le=30,
        description="SageMaker's RetryStrategy: restart the job this many times after an internal AWS error "
        "(not after a script error); 0 for none.",
        examples=[2],
    )

    @model_validator(mode="after")
    def _spot_wait(self) -> ResourcesSpec:
        if self.spot.enabled and self.keep_alive:
            raise FieldError("keep_alive", "warm pools cannot be used with spot instances: set one or the other")
        if self.spot.enabled:
            if self.spot.max_wait is None:
                raise FieldError("spot.max_wait", "is required when spot is enabled")
            if self.spot.max_wait < self.max_runtime:
                raise FieldError(
                    "spot.max_wait",
                    f"must be at least max_runtime ({format_duration(self.spot.max_wait)} < "
                    f"{format_duration(self.max_runtime)})",
                )
        return self


class Strategy(str, Enum):
    none = "none"
    mirrored = "mirrored"
    multi_worker_mirrored = "multi_worker_mirrored"


class DistributionSpec(Strict):
    """How the workers train together."""

    strategy: Strategy = Field(
        Strategy.multi_worker_mirrored,
        description="multi_worker_mirrored: every instance one worker of MultiWorkerMirroredStrategy (AWS's "
        "toolkit sets TF_CONFIG; sagemaker_multi_worker_mirrored_strategy_enabled); mirrored: one instance, all "
        "its GPUs; none: no TF_CONFIG. cloudtrain.runtime builds the strategy from it; a plain script builds its own.",
        examples=["multi_worker_mirrored"],
    )
    communication: Literal["auto", "ring", "nccl"] = Field(
        "auto",
        description="Collective implementation for cloudtrain.runtime's strategy (CLOUDTRAIN_COMMUNICATION): "
        "nccl for GPUs, ring for CPUs, auto lets TensorFlow choose. A plain script chooses its own.",
        examples=["nccl"],
    )
    keras: Literal["auto", "legacy", "keras3"] = Field(
        "auto",
        description="tf.keras for the script: legacy is tf-keras (TF_USE_LEGACY_KERAS=1), which model.fit needs "
        "under multi_worker_mirrored with more than one instance; auto picks legacy exactly then, unless the "
        "entry point imports cloudtrain.runtime (whose loop runs under Keras 3).",
    )


_USES_RUNTIME = re.compile(  # an import of cloudtrain.runtime at the start of a line
    r"^\s*(from\s+cloudtrain\.runtime\b|from\s+cloudtrain\s+import\s+runtime\b|import\s+cloudtrain\.runtime\b)",
    re.M,
)


def legacy_keras(spec: JobSpec) -> bool:
    """Whether the script gets tf-keras (TF_USE_LEGACY_KERAS=1).

    `auto`: with MultiWorkerMirroredStrategy on more than one instance, where Keras 3's `model.fit` fails
    (keras-team/keras#20585), unless the entry point imports cloudtrain.runtime, whose own loop runs under
    Keras 3. A TF_USE_LEGACY_KERAS in the spec's environment is the user's own choice and wins.
    """
    if "TF_USE_LEGACY_KERAS" in spec.environment:
        return spec.environment["TF_USE_LEGACY_KERAS"].strip().lower() in ("1", "true", "yes")
    mode = spec.distribution.keras
    if mode != "auto":
        return mode == "legacy"
    if spec.distribution.strategy is not Strategy.multi_worker_mirrored or spec.resources.instance_count < 2:
        return False
    return not _uses_runtime(spec.code.source_dir / spec.code.entry_point)


def _uses_runtime(script: Path) -> bool:
    try:
        return bool(_USES_RUNTIME.search(script.read_text(errors="replace")))
    except OSError:
        return False


def script_environment(spec: JobSpec) -> dict[str, str]:
    """The spec's environment plus TF_USE_LEGACY_KERAS=1 where `legacy_keras` says so (set before the script
    imports TensorFlow, which reads it once)."""
    env = dict(spec.environment)
    if legacy_keras(spec):
        env.setdefault("TF_USE_LEGACY_KERAS", "1")
    return env


class CheckpointSpec(Strict):
    """Where checkpoints go: SageMaker syncs local_path with S3 while the job runs (CheckpointConfig)."""

    s3_uri: S3Uri | None = Field(
        None,
        description="S3 prefix for checkpoints; each job gets <s3_uri>/<job>. Default: <output>/<job>/checkpoints. "
        "`submit --resume JOB` copies JOB's into the new job's before it starts.",
        examples=["s3://my-bucket/checkpoints/digits"],
    )
    local_path: str = Field(
        "/opt/ml/checkpoints",
        description="Folder inside the container that SageMaker syncs with s3_uri (CLOUDTRAIN_CHECKPOINT_DIR for "
        "cloudtrain.runtime).",
        examples=["/opt/ml/checkpoints"],
    )


class OutputSpec(Strict):
    """Where SageMaker writes the job's artifacts."""

    s3_uri: S3Uri | None = Field(
        None,
        description="S3 prefix for model.tar.gz, output.tar.gz, TensorBoard files and the code tarball "
        "(S3OutputPath). Default: s3://sagemaker-<region>-<account>/cloudtrain, created if missing.",
        examples=["s3://my-bucket/cloudtrain"],
    )


class MetricSpec(Strict):
    """A metric SageMaker reads from the job's log: the first capture group of each matching line."""

    name: str = Field(
        pattern=METRIC_NAME_PATTERN,
        description="The metric's name, as status, compare and SageMaker's console show it.",
        examples=["val_accuracy"],
    )
    regex: str = Field(
        min_length=1,
        max_length=500,
        description="A regular expression with one capture group around the number, matched against every log "
        "line (SageMaker's MetricDefinitions; the local backend applies the same).",
        examples=[r"epoch=\d+ .* val_accuracy=([0-9.eE+-]+)"],
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        if compiled.groups < 1:
            raise ValueError("needs one capture group around the number")
        if nested_repeat(v):
            raise ValueError(
                "a repeated group that itself repeats or has alternatives, like (a+)+ or (a|b)*, can take "
                "exponential time on a long line: write it without the nesting"
            )
        return v


def nested_repeat(pattern: str) -> bool:
    """Whether a regex repeats (without bound, or more than once) a group holding a repeat or alternatives:
    the shape of catastrophic backtracking, which would stall SageMaker's metric parser as it did ours."""
    try:
        from re import _parser as sre  # type: ignore[attr-defined]
    except ImportError:  # Python 3.10
        import sre_parse as sre  # type: ignore[no-redef]

    repeats = (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT))

    def varies(items: Any) -> bool:
        for op, av in items:
            if op is sre.BRANCH or (op in repeats and av[0] != av[1]):
                return True
            if op in repeats and varies(av[2]):
                return True
            if op is sre.SUBPATTERN and varies(av[-1]):
                return True
        return False

    def walk(items: Any) -> bool:
        for op, av in items:
            if op in repeats:
                if av[1] > 1 and varies(av[2]):
                    return True
                if walk(av[2]):
                    return True
            elif (op is sre.SUBPATTERN and walk(av[-1])) or (op is sre.BRANCH and any(walk(b) for b in av[1])):
                return True
        return False

    return walk(sre.parse(pattern))


class VpcSpec(Strict):
    """Run the instances in your VPC (VpcConfig): they then reach S3 only through a VPC endpoint or NAT."""

    subnets: list[str] = Field(
        min_length=1,
        max_length=16,
        description="Subnet IDs the instances are placed in (private subnets need an S3 VPC endpoint).",
        examples=[["subnet-0abc1234"]],
    )
    security_group_ids: list[str] = Field(
        min_length=1,
        max_length=5,
        description="Security groups of the instances; with more than one instance they must allow traffic "
        "between themselves (the workers talk on port 8890).",
        examples=[["sg-0abc1234"]],
    )


class AwsSpec(Strict):
    """Where and as whom the job runs on AWS."""

    region: str | None = Field(
        None,
        pattern=REGION_PATTERN,
        description="AWS region of the job. Default: --region, CLOUDTRAIN_REGION, the config file, then AWS's "
        "own chain (AWS_REGION, AWS_DEFAULT_REGION, ~/.aws/config).",
        examples=["eu-west-1"],
    )
    profile: str | None = Field(
        None,
        description="A profile of ~/.aws/config and ~/.aws/credentials for this job's AWS calls.",
        examples=["training"],
    )
    role_arn: str | None = Field(
        None,
        pattern=ROLE_ARN_PATTERN,
        description="The IAM role SageMaker runs the job as (RoleArn): it reads data and code and writes output "
        "(docs/sagemaker.md). Default: --role-arn, CLOUDTRAIN_ROLE_ARN, the config file.",
        examples=["arn:aws:iam::123456789012:role/SageMakerTraining"],
    )
    endpoint_url: str | None = Field(
        None,
        pattern=URL_PATTERN,
        description="AWS API endpoint for every service cloudtrain calls (a VPC endpoint, a test server). "
        "Default: AWS's.",
        examples=["http://127.0.0.1:5000"],
    )
    kms_key_id: str | None = Field(
        None,
        description="KMS key for the job's output (OutputDataConfig.KmsKeyId), the volumes (VolumeKmsKeyId, where "
        "the instance type has EBS) and cloudtrain's uploads.",
        examples=["arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"],
    )
    vpc: VpcSpec | None = Field(None, description="Run the instances in your VPC.")


Scalar = str | int | float | bool

MAX_CHANNELS = 20  # SageMaker's InputDataConfig
FILE_SYSTEM_TYPES = types.MappingProxyType({"fsx_lustre": "FSx for Lustre", "efs": "EFS"})


class FileSystemSpec(Strict):
    """An FSx for Lustre or EFS file system the instances mount (in the job's VPC) instead of copying data."""

    type: Literal["fsx_lustre", "efs"]
    id: str = Field(pattern=r"^fs-[0-9a-f]{8,17}$", description="The file system's ID, fs-0123456789abcdef0.")
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Folder in the file system; for FSx for Lustre it starts with the mount name (/fsx/...).",
    )
    access: Literal["ro", "rw"] = "ro"

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{quoted(v)} must be an absolute path in the file system (start with /)")
        return v


class ChannelSpec(Strict):
    """One input channel. The short form `train: path-or-s3-uri` is `{uri: ...}` with every default."""

    uri: str | None = Field(None, description="A local file or folder (uploaded on SageMaker) or an s3:// URI.")
    file_system: FileSystemSpec | None = None
    mode: Literal["file", "fastfile", "pipe"] = Field(
        "file",
        description="file: copied before the script starts; fastfile: fetched as the script reads (S3 only); "
        "pipe: streamed through a FIFO (SageMaker only).",
    )
    distribution: Literal["replicated", "sharded"] = Field(
        "replicated", description="sharded: each instance gets about 1/N of the S3 objects (ShardedByS3Key)."
    )
    compression: Literal["none", "gzip"] = Field("none", description="gzip: Pipe mode only, as on SageMaker.")
    content_type: str | None = Field(None, max_length=256, description="MIME type SageMaker passes on to the script.")

    @field_validator("uri")
    @classmethod
    def _location(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("is empty; give a folder or an s3:// URI")
        if _URI_SCHEME.match(v):  # a URI, not a path: s3:/bucket must not become a folder named "s3:"
            if not v.lower().startswith("s3"):
                raise ValueError(f"{quoted(v)}: only s3:// URIs and local folders are supported")
            return check_s3_uri(v)
        base = (info.context or {}).get("base_dir")
        return v if base is None else str(_existing_path(base, Path(v), "any"))

    @model_validator(mode="after")
    def _as_aws_validates(self) -> ChannelSpec:
        """The combinations SageMaker refuses at CreateTrainingJob (or silently ignores), refused here first."""
        if (self.uri is None) == (self.file_system is None):
            raise ValueError("give exactly one of uri or file_system")
        if self.file_system is not None:
            kind = FILE_SYSTEM_TYPES[self.file_system.type]
            if self.mode != "file":
                raise FieldError("mode", f"{kind} channels are mounted in file mode only (got {self.mode})")
            if self.distribution != "replicated":
                raise FieldError("distribution", f"{kind} channels are mounted whole on every instance")
        if self.compression == "gzip" and self.mode != "pipe":
            raise FieldError("compression", f"gzip is for pipe mode only; SageMaker ignores it in {self.mode} mode")
        return self

    @property
    def is_s3(self) -> bool:
        return self.uri is not None and self.uri.startswith("s3://")

    @property
    def is_local(self) -> bool:
        """A local file or folder: uploaded to S3 for SageMaker, used where it is by the local backend."""
        return self.uri is not None and not self.is_s3

    @property
    def short(self) -> bool:
        """Written as just a location: every option at its default."""
        return self.uri is not None and self == ChannelSpec(uri=self.uri)

    @model_serializer(mode="wrap")
    def _short_form(self, handler: Any) -> Any:
        # A spec that names only locations dumps (and so digests) as it did before channel options existed.
        return self.uri if self.short else handler(self)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string", "minLength": 1}, handler(schema)]}


def _short_channel(value: Any) -> Any:
    return {"uri": value} if isinstance(value, str) else value


Channel = Annotated[ChannelSpec, BeforeValidator(_short_channel)]


class JobSpec(Strict):
    """A training job, as written in YAML."""

    name: str = Field(
        max_length=JOB_NAME_MAX,
        pattern=NAME_PATTERN,
        description="Base of the job's name: each run is NAME-<12 characters> (SageMaker's TrainingJobName, at "
        "most 63).",
        examples=["digits-mwms"],
    )
    backend: Literal["local", "sagemaker"] | None = Field(
        None,
        description="Where the job runs. Default: --backend, CLOUDTRAIN_BACKEND, the config file, else sagemaker "
        "where AWS is configured (credentials or a profile in the environment, or ~/.aws files), else local. "
        "`cloudtrain config` shows which and why.",
        examples=["local"],
    )
    code: CodeSpec = Field(description="The training code: a folder shipped to every instance and its script.")
    image: ImageSpec = Field(
        ImageSpec(),
        description="The training image: AWS's stock TensorFlow image (default, framework_version), your own "
        "uri, or one built from a Dockerfile.",
    )
    resources: ResourcesSpec = Field(ResourcesSpec(), description="Instances and time limits.")
    distribution: DistributionSpec = Field(
        DistributionSpec(), description="The distribution strategy, its collectives and the Keras the script gets."
    )
    data: dict[Annotated[str, Field(pattern=CHANNEL_PATTERN)], Channel] = Field(
        default_factory=dict,
        max_length=MAX_CHANNELS,
        description="Input channels (at most 20): name -> local folder (uploaded to S3, content-hashed, on "
        "SageMaker) or s3:// URI, or {uri, mode, distribution, compression, content_type} or a file_system "
        "(docs/data.md). The script finds channel NAME in $SM_CHANNEL_NAME (/opt/ml/input/data/NAME).",
        examples=[{"train": "data/train", "eval": "s3://my-bucket/digits/eval"}],
    )
    hyperparameters: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Passed to the script as sorted `--name value` arguments (and as JSON in $SM_HPS); AWS's "
        "toolkit adds --model_dir. `--set hyperparameters.NAME=value` changes one for a run.",
        examples=[{"epochs": 12, "batch_size": 64, "learning_rate": 0.002}],
    )
    environment: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], str] = Field(
        default_factory=dict,
        description="Extra environment variables for the script (SageMaker's Environment: values are strings, "
        "at most 512 characters).",
        examples=[{"PYTHONHASHSEED": "0"}],
    )
    checkpoints: CheckpointSpec = Field(CheckpointSpec(), description="Checkpoint sync and resume.")
    output: OutputSpec = Field(OutputSpec(), description="Where the job's artifacts go.")
    metrics: list[MetricSpec] = Field(
        default_factory=list,
        max_length=MAX_METRICS,
        description="Metrics read from the log by regex (SageMaker's MetricDefinitions, at most 40); without "
        "them a job has no metrics in status or compare. cloudtrain.runtime and `cloudtrain init`'s scripts print "
        "lines these match.",
        examples=[[{"name": "loss", "regex": r"epoch=\d+ loss=([0-9.eE+-]+)"}]],
    )
    aws: AwsSpec = Field(AwsSpec(), description="Region, credentials profile, IAM role, endpoint, KMS, VPC.")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Tags on the SageMaker training job (cost allocation, ownership): keys 1-128, values up to 256 "
        "characters of letters, digits, spaces and _.:/=+-@.",
        examples=[{"project": "digits", "team": "ml"}],
    )
    sweep: SweepSpec | None = Field(
        None,
        description="A hyperparameter sweep over this job: a SageMaker tuning job, or local trials chosen by Optuna "
        "(docs/sweeps.md).",
    )

    @field_validator("data")
    @classmethod
    def _channel_names(cls, v: dict[str, ChannelSpec]) -> dict[str, ChannelSpec]:
        for channel in v:
            if channel in (".", ".."):  # AWS's pattern lets them through; as /opt/ml/input/data/NAME they are no folder
                raise FieldError((channel,), "is not a channel name: each channel is a folder of its own")
        return v

    @model_validator(mode="after")
    def _file_systems_need_a_vpc(self) -> JobSpec:
        """FSx for Lustre and EFS are reached only from inside a VPC: SageMaker refuses such a job without one."""
        for name, channel in self.data.items():
            if channel.file_system is not None and self.aws.vpc is None:
                kind = FILE_SYSTEM_TYPES[channel.file_system.type]
                raise FieldError(
                    ("data", name, "file_system"),
                    f"{kind} is reached only from inside a VPC: set aws.vpc (subnets and security_group_ids)",
                )
        return self

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameters(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        """AWS's bounds, on the JSON-encoded value script mode sends; a non-finite number has no JSON form."""
        for key, value in v.items():
            if not key or len(key) > HYPERPARAMETER_KEY_MAX:
                raise FieldError((key[:40],), f"hyperparameter names are 1-{HYPERPARAMETER_KEY_MAX} characters")
            if isinstance(value, float) and not math.isfinite(value):
                raise FieldError((key,), f"{value} is not a number JSON can carry; quote it to pass the text")
            if (sent := len(json.dumps(value))) > HYPERPARAMETER_VALUE_MAX:
                raise FieldError((key,), f"is {sent} characters as sent; AWS takes up to {HYPERPARAMETER_VALUE_MAX}")
        return v

    @field_validator("environment")
    @classmethod
    def _environment(cls, v: dict[str, str]) -> dict[str, str]:
        """AWS's bounds on a training job's Environment: 100 entries, names and values up to 512 characters."""
        if len(v) > ENVIRONMENT_ENTRIES_MAX:
            raise ValueError(f"has {len(v)} variables; AWS takes up to {ENVIRONMENT_ENTRIES_MAX}")
        for key, value in v.items():
            if len(key) > ENVIRONMENT_KEY_MAX:
                raise FieldError((key[:40],), f"variable names are up to {ENVIRONMENT_KEY_MAX} characters")
            if len(value) > ENVIRONMENT_VALUE_MAX:
                raise FieldError((key,), f"is {len(value)} characters; AWS takes up to {ENVIRONMENT_VALUE_MAX}")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        """AWS's tag rules (SageMaker refuses the whole job otherwise): keys 1-128, values up to 256 characters."""
        for key, value in v.items():
            if not 1 <= len(key) <= 128 or not is_tag_text(key):
                raise FieldError((key,), f"tag keys are 1-128 {TAG_HELP} (no tabs or newlines)")
            if len(value) > 256 or not is_tag_text(value):
                raise FieldError((key,), f"tag values are up to 256 {TAG_HELP} (no tabs or newlines)")
        return v

    @model_validator(mode="after")
    def _sweep_fits(self) -> JobSpec:
        """What a sweep needs of the rest of the spec, as a tuning job would refuse it after instances started."""
        if self.sweep is None:
            return self
        names = [m.name for m in self.metrics]
        if self.sweep.objective.metric not in names:
            known = ", ".join(names) if names else "none: add one under metrics:"
            raise FieldError(
                "sweep.objective.metric",
                f"{quoted(self.sweep.objective.metric)} is not one of the spec's metrics ({known})",
            )
        if len(self.metrics) > MAX_TUNING_METRICS:
            raise FieldError(
                "metrics",
                f"a sweep takes at most {MAX_TUNING_METRICS} metrics (the tuning limit; got {len(self.metrics)})",
            )
        if self.sweep.strategy == "hyperband":
            epochs = [k for k in EPOCHS_KEYS if k in self.hyperparameters and k not in self.sweep.parameters]
            if not epochs:
                raise FieldError(
                    "sweep.strategy", "hyperband needs a fixed `epochs` hyperparameter (its maximum resource)"
                )
        from cloudtrain.spec.ceiling import sweep_cost

        sweep_cost(self)  # a max_cost that cannot be enforced, or pays for no whole trial
        return self


def _suggest_file(folder: Path, name: str) -> str:
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        names = []
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {quoted(close[0])}?)" if close else ""


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a job spec as written, for editors' completion and checking."""
    schema = JobSpec.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def spec_digest(spec: JobSpec) -> str:
    """sha256 of the validated spec as canonical JSON: key order, comments and formatting do not count.

    Paths are resolved first, so the same file in another folder digests differently (its code differs too).
    """
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

"""The job spec: pydantic models of the YAML a user writes, and its loader.

Paths in a spec are relative to the spec file; the loader resolves them to absolute paths so that
backends never depend on the working directory. Every validation error becomes one `SpecError`
that names the file, the line and the field.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

JOB_NAME_MAX = 50
NAME_PATTERN = r"^[A-Za-z0-9](-*[A-Za-z0-9])*$"
CHANNEL_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> int:
    """Seconds from `90s`, `30m`, `2h`, `1d` or a plain integer of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 30m, 2h, 1d or seconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration such as 90s, 30m, 2h, 1d or seconds")


def format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    Field(json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string", "pattern": _DURATION.pattern}]}),
]


def check_s3_uri(value: str | None) -> str | None:
    if value is not None and not S3_URI.match(value):
        raise ValueError(f"{value!r} is not an S3 URI of the form s3://bucket/prefix")
    return value


S3Uri = Annotated[str, BeforeValidator(check_s3_uri)]


class Strict(BaseModel):
    """Unknown fields are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeSpec(Strict):
    source_dir: Path = Field(description="Folder with the training code, relative to the spec file.")
    entry_point: str = Field(description="Script inside source_dir that SageMaker runs.")
    requirements: str | None = Field(None, description="requirements.txt inside source_dir, pip-installed first.")

    @field_validator("source_dir")
    @classmethod
    def _source_dir_exists(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if base is None:
            return v
        path = (Path(base) / v).resolve()
        if not path.is_dir():
            raise ValueError(f"folder {str(v)!r} does not exist")
        return path

    @model_validator(mode="after")
    def _files_exist(self) -> CodeSpec:
        if not self.source_dir.is_absolute():
            return self  # loaded without a base folder (schema generation, tests of the model alone)
        for field in ("entry_point", "requirements"):
            rel = getattr(self, field)
            if rel is not None and not (self.source_dir / rel).is_file():
                raise FieldError(
                    field, f"{rel!r} not found in {self.source_dir.name}/" + _suggest_file(self.source_dir, rel)
                )
        return self


class ImageBuild(Strict):
    dockerfile: Path = Field(description="Dockerfile, relative to the spec file.")
    context: Path = Field(Path("."), description="Build context folder, relative to the spec file.")
    repository: str = Field("cloudtrain-training", description="ECR repository the image is pushed to.")
    build_args: dict[str, str] = Field(default_factory=dict)

    @field_validator("dockerfile", "context")
    @classmethod
    def _resolve(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if base is None:
            return v
        path = (Path(base) / v).resolve()
        if not path.exists():
            raise ValueError(f"{str(v)!r} does not exist")
        return path


class ImageSpec(Strict):
    """Exactly one of framework_version (AWS's stock image), uri, or build."""

    framework_version: str | None = Field(None, pattern=r"^\d+\.\d+(\.\d+)?$")
    py_version: str | None = Field(None, pattern=r"^py3\d*$", description="With framework_version, e.g. py310.")
    uri: str | None = Field(None, min_length=1)
    build: ImageBuild | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageSpec:
        chosen = [f for f in ("framework_version", "uri", "build") if getattr(self, f) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give exactly one of framework_version, uri, build (got {', '.join(chosen)})")
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
    enabled: bool = False
    max_wait: Duration | None = Field(None, gt=0, description="Total time to wait for spot capacity and run.")


class ResourcesSpec(Strict):
    instance_type: str = Field("ml.g5.xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(1, ge=1, le=100)
    volume_size_gb: int = Field(30, ge=1, le=16384)
    max_runtime: Duration = Field(86400, gt=0, le=28 * 86400)
    spot: SpotSpec = SpotSpec()
    keep_alive: Duration = Field(0, ge=0, le=3600, description="SageMaker warm pool keep-alive period.")
    max_retry_attempts: int = Field(0, ge=0, le=30, description="SageMaker RetryStrategy; 0 for none.")

    @model_validator(mode="after")
    def _spot_wait(self) -> ResourcesSpec:
        if self.spot.enabled:
            if self.spot.max_wait is None:
                raise FieldError("spot.max_wait", "is required when spot is enabled")
            if self.spot.max_wait < self.max_runtime:
                raise FieldError("spot.max_wait", "must be at least max_runtime")
        return self


class Strategy(str, Enum):
    none = "none"
    mirrored = "mirrored"
    multi_worker_mirrored = "multi_worker_mirrored"


class DistributionSpec(Strict):
    strategy: Strategy = Strategy.multi_worker_mirrored
    communication: Literal["auto", "ring", "nccl"] = "auto"


class CheckpointSpec(Strict):
    s3_uri: S3Uri | None = None
    local_path: str = "/opt/ml/checkpoints"


class OutputSpec(Strict):
    s3_uri: S3Uri | None = None


class MetricSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:/=+\-@%]{1,255}$")
    regex: str = Field(min_length=1, max_length=500)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        if compiled.groups < 1:
            raise ValueError("needs one capture group around the number")
        return v


class VpcSpec(Strict):
    subnets: list[str] = Field(min_length=1, max_length=16)
    security_group_ids: list[str] = Field(min_length=1, max_length=5)


class AwsSpec(Strict):
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    profile: str | None = None
    role_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
    endpoint_url: str | None = Field(None, pattern=r"^https?://")
    kms_key_id: str | None = None
    vpc: VpcSpec | None = None


Scalar = str | int | float | bool


class JobSpec(Strict):
    """A training job, as written in YAML."""

    name: str = Field(max_length=JOB_NAME_MAX, pattern=NAME_PATTERN)
    backend: Literal["local", "sagemaker"] | None = Field(
        None, description="Default: sagemaker where AWS is configured, else local."
    )
    code: CodeSpec
    image: ImageSpec = ImageSpec()
    resources: ResourcesSpec = ResourcesSpec()
    distribution: DistributionSpec = DistributionSpec()
    data: dict[Annotated[str, Field(pattern=CHANNEL_PATTERN)], str] = Field(default_factory=dict)
    hyperparameters: dict[str, Scalar] = Field(default_factory=dict)
    environment: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(default_factory=dict)
    checkpoints: CheckpointSpec = CheckpointSpec()
    output: OutputSpec = OutputSpec()
    metrics: list[MetricSpec] = Field(default_factory=list)
    aws: AwsSpec = AwsSpec()
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _channels(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        base = (info.context or {}).get("base_dir")
        out: dict[str, str] = {}
        for channel, location in v.items():
            if location.startswith("s3://"):
                try:
                    check_s3_uri(location)
                except ValueError as e:
                    raise FieldError(channel, str(e)) from None
                out[channel] = location
            elif base is None:
                out[channel] = location
            else:
                path = (Path(base) / location).resolve()
                if not path.exists():
                    raise FieldError(channel, f"{location!r} does not exist")
                out[channel] = str(path)
        return out


class FieldError(ValueError):
    """A validator's error about a sub-field, so the reported location points at it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _suggest_file(folder: Path, name: str) -> str:
    import difflib

    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

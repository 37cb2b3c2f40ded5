"""The job spec's pydantic models: the YAML a user writes, validated (`cloudtrain.spec.load` reads a file).

Paths in a spec are relative to the spec file; validation resolves them to absolute paths so that backends
never depend on the working directory.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Ge, Gt
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

from cloudtrain.errors import quoted
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

if TYPE_CHECKING:
    from pydantic import GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

JOB_NAME_MAX = 50
MAX_METRICS = 40  # SageMaker's MetricDefinitions
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


class Strict(BaseModel):
    """Unknown fields are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeSpec(Strict):
    """The training code: a folder that is packed and shipped, and the script in it to run."""

    source_dir: Path = Field(description="Folder with the training code, relative to the spec file.")
    entry_point: str = Field(min_length=1, description="Script inside source_dir that SageMaker runs.")
    requirements: str | None = Field(None, description="requirements.txt inside source_dir, pip-installed first.")

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

    dockerfile: Path = Field(description="Dockerfile, relative to the spec file.")
    context: Path = Field(
        Path("."), validate_default=True, description="Build context folder, relative to the spec file."
    )
    repository: str = Field("cloudtrain-training", description="ECR repository the image is pushed to.")
    build_args: dict[str, str] = Field(default_factory=dict)

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

    framework_version: str | None = Field(None, pattern=VERSION_PATTERN)
    py_version: str | None = Field(None, pattern=PY_VERSION_PATTERN, description="With framework_version, e.g. py310.")
    uri: str | None = Field(None, min_length=1)
    build: ImageBuild | None = None

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
    enabled: bool = False
    max_wait: PositiveDuration | None = Field(None, description="Total time to wait for spot capacity and run.")


class ResourcesSpec(Strict):
    instance_type: str = Field("ml.g5.xlarge", pattern=INSTANCE_TYPE_PATTERN)
    instance_count: int = Field(1, ge=1, le=100)
    volume_size_gb: int = Field(30, ge=1, le=16384)
    max_runtime: PositiveDuration = Field(86400, le=28 * 86400)
    spot: SpotSpec = SpotSpec()
    keep_alive: Duration = Field(0, le=3600, description="SageMaker warm pool keep-alive period.")
    max_retry_attempts: int = Field(0, ge=0, le=30, description="SageMaker RetryStrategy; 0 for none.")

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
    strategy: Strategy = Strategy.multi_worker_mirrored
    communication: Literal["auto", "ring", "nccl"] = "auto"
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
    s3_uri: S3Uri | None = None
    local_path: str = "/opt/ml/checkpoints"


class OutputSpec(Strict):
    s3_uri: S3Uri | None = None


class MetricSpec(Strict):
    name: str = Field(pattern=METRIC_NAME_PATTERN)
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
    subnets: list[str] = Field(min_length=1, max_length=16)
    security_group_ids: list[str] = Field(min_length=1, max_length=5)


class AwsSpec(Strict):
    region: str | None = Field(None, pattern=REGION_PATTERN)
    profile: str | None = None
    role_arn: str | None = Field(None, pattern=ROLE_ARN_PATTERN)
    endpoint_url: str | None = Field(None, pattern=URL_PATTERN)
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
    environment: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], str] = Field(default_factory=dict)
    checkpoints: CheckpointSpec = CheckpointSpec()
    output: OutputSpec = OutputSpec()
    metrics: list[MetricSpec] = Field(default_factory=list, max_length=MAX_METRICS)
    aws: AwsSpec = AwsSpec()
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _channels(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        base = (info.context or {}).get("base_dir")
        out: dict[str, str] = {}
        for channel, location in v.items():
            if not location.strip():
                raise FieldError((channel,), "is empty; give a folder or an s3:// URI")
            if _URI_SCHEME.match(location):  # a URI, not a path: s3:/bucket must not become a folder named "s3:"
                if not location.lower().startswith("s3"):
                    raise FieldError((channel,), f"{quoted(location)}: only s3:// URIs and local folders are supported")
                try:
                    check_s3_uri(location)
                except ValueError as e:
                    raise FieldError((channel,), str(e)) from None
                out[channel] = location
            elif base is None:
                out[channel] = location
            else:
                try:
                    out[channel] = str(_existing_path(base, Path(location), "any"))
                except ValueError as e:
                    raise FieldError((channel,), str(e)) from None
        return out

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


class FieldError(ValueError):
    """A validator's error about a sub-field, so the reported location points at it.

    `field` is dotted (`spot.max_wait`) or a tuple of keys, for keys that may hold a dot (data channels).
    """

    def __init__(self, field: str | tuple[str, ...], message: str) -> None:
        self.field = field
        super().__init__(message)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.field.split(".")) if isinstance(self.field, str) else self.field


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

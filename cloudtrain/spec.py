"""The job spec: pydantic models of the YAML a user writes, and its loader.

Paths in a spec are relative to the spec file; the loader resolves them to absolute paths so that
backends never depend on the working directory. Every validation error becomes one `SpecError`
that names the file, the line and the field. The loader bounds what a spec may cost (size, values,
aliases, nesting), since it reads files a user may have been handed.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import os
import re
import stat
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from annotated_types import Ge, Gt
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from cloudtrain.errors import SpecError

if TYPE_CHECKING:
    from pydantic import GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

JOB_NAME_MAX = 50
NAME_PATTERN = r"^[A-Za-z0-9](-*[A-Za-z0-9])*$"
CHANNEL_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
VERSION_PATTERN = r"^\d+\.\d+(\.\d+)?$"
PY_VERSION_PATTERN = r"^py3\d*$"
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_.:/=+\-@%]{1,255}$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"
URL_PATTERN = r"^https?://"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = types.MappingProxyType({"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400})

# What a pattern means, for error messages (a regex is no help to someone who misspelled a region).
_PATTERN_HELP = types.MappingProxyType(
    {
        NAME_PATTERN: "letters, digits and hyphens, starting and ending with a letter or digit",
        CHANNEL_PATTERN: "1-64 letters, digits, '.', '_' or '-'",
        ENV_NAME_PATTERN: "letters, digits and '_', not starting with a digit",
        INSTANCE_TYPE_PATTERN: "a SageMaker instance type such as ml.g5.xlarge",
        VERSION_PATTERN: "a version such as 2.19",
        PY_VERSION_PATTERN: "a Python tag such as py310",
        METRIC_NAME_PATTERN: "1-255 letters, digits or _.:/=+-@%",
        REGION_PATTERN: "a region such as us-east-1",
        ROLE_ARN_PATTERN: "a role ARN such as arn:aws:iam::123456789012:role/SageMakerRole",
        URL_PATTERN: "a URL starting with http:// or https://",
    }
)

# The loader's limits. A job spec is a page of YAML; these bound the time and memory a hostile or
# broken file can cost (a "billion laughs" expands a few hundred bytes into gigabytes).
MAX_SPEC_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_VALUES = 10_000  # keys and values; SageMaker itself takes at most 100 hyperparameters and 50 tags
MAX_DEPTH = 50


def parse_duration(value: Any) -> int:
    """Seconds from `90s`, `30m`, `2h`, `1d` or a plain integer of seconds (bounds are checked after)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 30m, 2h, 1d or seconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    shown = repr(value) if isinstance(value, str) else str(value)
    raise ValueError(f"{shown} is not a duration such as 90s, 30m, 2h, 1d or seconds")


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
        raise ValueError(f"{value!r} is not an S3 URI of the form s3://bucket/prefix")
    bucket = value[len("s3://") :].split("/", 1)[0]
    raise ValueError(f"{value!r} has an invalid bucket name {bucket!r} (3-63 lowercase letters, digits, '.' and '-')")


S3Uri = Annotated[str, BeforeValidator(check_s3_uri)]


def _existing_path(base: Any, value: Path, kind: Literal["file", "folder", "any"]) -> Path:
    """`value` resolved against the spec's folder; a ValueError (never an OSError) if it is not there."""
    try:
        path = (Path(base) / value).resolve()
        ok = path.is_file() if kind == "file" else path.is_dir() if kind == "folder" else path.exists()
        exists = path.exists()
    except (OSError, RuntimeError, ValueError) as e:  # name too long, symlink loop, NUL byte
        raise ValueError(f"{_short(str(value))!r} cannot be read: {_reason(e)}") from None
    if not exists:
        raise ValueError(f"{str(value)!r} does not exist")
    if not ok:
        raise ValueError(f"{str(value)!r} is not a {kind}")
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
                raise FieldError(name, f"{_short(rel)!r} cannot be read: {_reason(e)}") from None
            if not path.is_relative_to(self.source_dir):
                # Only source_dir is shipped to the instances: a file outside it would not be there.
                raise FieldError(name, f"{rel!r} is outside source_dir {self.source_dir.name}/")
            if not is_file:
                raise FieldError(
                    name, f"{rel!r} not found in {self.source_dir.name}/" + _suggest_file(self.source_dir, rel)
                )
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
        return v


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
    metrics: list[MetricSpec] = Field(default_factory=list)
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
                    raise FieldError((channel,), f"{location!r}: only s3:// URIs and local folders are supported")
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
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------------------------------------
# Loading: bytes -> YAML with a line for every key -> JobSpec, every failure one SpecError.

Loc = tuple[str | int, ...]  # a place in a document: mapping keys and list indices


def load_spec(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> JobSpec:
    """Read, check and validate a job spec; paths in it are resolved against the spec file's folder.

    `overrides` are `--set dotted.path=value` strings applied before validation, each value read as
    YAML (`epochs=3` is a number, `data.train=s3://bucket/p` a string; a text field keeps the text, so
    `image.framework_version=2.10` stays "2.10"). Paths they give are, like the file's, relative to
    the spec file's folder. Raises one `SpecError` for any problem, naming the file (as given), the
    line and the field; `--set` in place of the file when an override is at fault.
    """
    shown = os.fspath(path)
    text = _read_text(Path(shown), shown)
    loader = _SpecLoader(text, shown)
    data = loader.load()
    if data is None:
        raise SpecError(shown, 1, None, "the spec is empty")
    if not isinstance(data, dict):
        raise SpecError(
            shown, loader.source.root_line, None, f"the top level must be a mapping of fields (got {_kind(data)})"
        )
    data, from_cli = _apply_overrides(data, overrides, loader.source)
    try:
        return JobSpec.model_validate(data, context={"base_dir": Path(shown).absolute().parent})
    except ValidationError as e:
        raise _spec_error(e, data, loader.source, shown, from_cli) from None


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


def _read_text(path: Path, shown: str) -> str:
    """The file's text, refusing what is not a small UTF-8 file before reading much of it."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang waiting for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise SpecError(shown, None, None, "no such file") from None
    except PermissionError:
        raise SpecError(shown, None, None, "cannot read the file: permission denied") from None
    except OSError as e:
        raise SpecError(shown, None, None, f"cannot read the file: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise SpecError(shown, None, None, f"cannot read the file: {e.strerror or e}") from None
    if (problem := _unreadable(mode)) is not None:
        os.close(fd)
        raise SpecError(shown, None, None, problem)
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_SPEC_BYTES + 1)
        except OSError as e:
            raise SpecError(shown, None, None, f"cannot read the file: {e.strerror or e}") from None
    if len(raw) > MAX_SPEC_BYTES:  # grew since fstat
        raise SpecError(shown, None, None, _too_big(len(raw)))
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        raise SpecError(
            shown,
            raw.count(b"\n", 0, e.start) + 1,
            None,
            f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start - line_start + 1}",
        ) from None
    # YAML refuses control characters; say which and where rather than "unacceptable character #x0000".
    if bad := _CONTROL.search(text):
        line_start = text.rfind("\n", 0, bad.start()) + 1
        raise SpecError(
            shown,
            text.count("\n", 0, bad.start()) + 1,
            None,
            f"control character U+{ord(bad.group()):04X} at column {bad.start() - line_start + 1}",
        )
    return text


def _unreadable(mode: os.stat_result) -> str | None:
    """Why a file of this kind or size is not read, if it is not."""
    if stat.S_ISDIR(mode.st_mode):
        return "is a folder, not a spec file"
    if not stat.S_ISREG(mode.st_mode):
        return "is not a regular file"
    return _too_big(mode.st_size) if mode.st_size > MAX_SPEC_BYTES else None


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _too_big(size: int) -> str:
    mib = f"{size / (1 << 20):.1f} MiB"
    shown = f"{size} bytes" if mib == f"{MAX_SPEC_BYTES / (1 << 20):.1f} MiB" else mib
    return f"spec file is {shown}; the limit is {MAX_SPEC_BYTES >> 20} MiB"


@dataclass(frozen=True)
class _Entry:
    line: int  # 1-based line of a mapping's key or a list's item
    raw: str | None  # source text of a plain scalar value, to show what the user wrote (2.10, not 2.1)


@dataclass
class _Lines:
    line: int  # where the mapping or list starts
    entries: dict[str | int, _Entry] = field(default_factory=dict)


class _SourceMap:
    """Where each key and item of a loaded document was written, to turn a field path into a line.

    Keyed by the identity of each dict and list (kept alive here, so identities stay unique); an
    alias shares its anchor's objects, so an error under an alias points at the anchored text.
    """

    def __init__(self) -> None:
        self.root_line = 1
        self._lines: dict[int, tuple[Any, _Lines]] = {}

    def add(self, obj: dict[str, Any] | list[Any], lines: _Lines) -> None:
        self._lines[id(obj)] = (obj, lines)

    def copied(self, copy: dict[str, Any] | list[Any], original: Any) -> None:
        """`copy` was written where `original` was."""
        if (lines := self.get(original)) is not None:
            self.add(copy, lines)

    def get(self, obj: Any) -> _Lines | None:
        found = self._lines.get(id(obj))
        return found[1] if found else None

    def locate(self, data: Any, loc: Loc) -> tuple[int, str | None, int]:
        """Line of the deepest part of `loc` written in the file, the raw text there, and how many parts that is."""
        line, raw, cur = self.root_line, None, data
        for depth, seg in enumerate(loc):
            lines = self.get(cur)
            entry = lines.entries.get(seg) if lines else None
            if entry is None:
                return line, None, depth
            line, raw, cur = entry.line, entry.raw, cur[seg]
        return line, raw, len(loc)


@dataclass
class _Frame:
    """A mapping or list being built from parser events."""

    obj: dict[str, Any] | list[Any]
    lines: _Lines
    path: Loc
    anchor: str | None
    key: str | None = None  # a mapping's key waiting for its value
    key_line: int = 0
    merging: bool = False  # the waiting key is `<<`
    merges: list[tuple[Any, int]] = field(default_factory=list)
    merge_line: int | None = None
    size: int = 1  # keys and values in the subtree, aliases expanded
    height: int = 1  # levels of nesting, this one included


@dataclass(frozen=True)
class _Anchor:
    value: Any
    size: int
    height: int
    raw: str | None


_BaseLoader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
_PLAIN_COLLECTION_TAGS = (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _SpecLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader, building the document itself from parser events.

    PyYAML keeps the last of duplicate keys without a word, expands aliases without limit and drops
    line numbers; a job spec wants none of that. Building from events (iteratively, so deep nesting
    cannot exhaust the stack) records each key's line, refuses duplicates and counts values as
    aliases would expand them. Mapping keys stay the text written (`NO:` is the key "NO", not False).
    """

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.text = text
        self.source = _SourceMap()
        self._anchors: dict[str, _Anchor] = {}
        self._values = 0
        self._aliases = 0

    def load(self) -> Any:
        """The single document in the text (None when there is none), or one SpecError."""
        try:
            return self._document()
        except yaml.MarkedYAMLError as e:
            raise self._yaml_error(e) from None
        except yaml.YAMLError as e:  # a ReaderError has no mark; the text was checked, so rare
            raise SpecError(self.file, None, None, f"invalid YAML: {_one_line(str(e))}") from None
        finally:
            self.dispose()

    def _document(self) -> Any:
        self.get_event()  # StreamStartEvent
        if self.check_event(yaml.StreamEndEvent):
            return None
        self.get_event()  # DocumentStartEvent
        if self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.ScalarEvent, yaml.AliasEvent):
            self.source.root_line = self.peek_event().start_mark.line + 1
        root = self._build()
        self.get_event()  # DocumentEndEvent
        if not self.check_event(yaml.StreamEndEvent):
            second = self.get_event()
            raise self._fail(second.start_mark, (), "a spec is one YAML document; remove the second '---'")
        return root

    def _build(self) -> Any:
        stack: list[_Frame] = []
        while True:
            event = self.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                path = self._child_path(stack, event, "a mapping or list")
                if len(stack) >= MAX_DEPTH:
                    raise self._fail(event.start_mark, path, f"nested more than {MAX_DEPTH} levels deep")
                if event.tag not in _PLAIN_COLLECTION_TAGS:
                    raise self._fail(event.start_mark, path, f"the tag {event.tag!r} is not supported")
                self._count(1, event, path, alias=False)
                obj: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
                frame = _Frame(obj, _Lines(line), path, event.anchor)
                self.source.add(obj, frame.lines)
                stack.append(frame)
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = stack.pop()
                if isinstance(done.obj, dict):
                    self._merge(done)
                value, size, height, raw, line = done.obj, done.size, done.height, None, done.lines.line
                if done.anchor is not None:
                    self._anchors[done.anchor] = _Anchor(value, size, height, None)
            elif isinstance(event, yaml.ScalarEvent):
                top = stack[-1] if stack else None
                if top is not None and isinstance(top.obj, dict) and top.key is None:
                    self._count(1, event, (*top.path, event.value), alias=False)
                    top.size += 1
                    self._key(top, event)
                    continue
                path = self._child_path(stack, event, "a value")
                value, size, height = self._scalar(event, path), 1, 0
                raw = event.value if not event.style else None  # plain: None here, '' from libyaml
                self._count(1, event, path, alias=False)
                if event.anchor is not None:
                    self._anchors[event.anchor] = _Anchor(value, 1, 0, raw)
            elif isinstance(event, yaml.AliasEvent):
                path = self._child_path(stack, event, "an alias")
                anchor = self._anchors.get(event.anchor)
                if anchor is None:
                    open_anchors = {f.anchor for f in stack}
                    problem = "refers to a mapping or list that contains it" if event.anchor in open_anchors else ""
                    raise self._fail(event.start_mark, path, f"alias *{event.anchor} {problem or 'is not defined'}")
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise self._fail(event.start_mark, path, f"more than {MAX_ALIASES} aliases; write the values out")
                if len(stack) + anchor.height > MAX_DEPTH:
                    raise self._fail(event.start_mark, path, f"alias *{event.anchor} nests deeper than {MAX_DEPTH}")
                self._count(anchor.size, event, path, alias=True)
                value, size, height, raw = anchor.value, anchor.size, anchor.height, anchor.raw
            else:  # the parser yields nothing else inside a document
                raise self._fail(event.start_mark, (), f"unexpected {type(event).__name__}")
            if not stack:
                return value
            self._add(stack[-1], value, size, height, raw, line, event)

    def _key(self, frame: _Frame, event: yaml.ScalarEvent) -> None:
        """Take a mapping key: its text, refused if the mapping has it already."""
        line = event.start_mark.line + 1
        merging = not event.style and event.tag is None and event.value == "<<"
        if merging:
            first = frame.merge_line
            frame.merge_line = line
        else:
            entry = frame.lines.entries.get(event.value) if event.value in frame.obj else None
            first = entry.line if entry else None
        if first is not None:
            raise self._fail(event.start_mark, (*frame.path, event.value), f"duplicate key (first at line {first})")
        frame.key, frame.key_line, frame.merging = event.value, line, merging

    def _add(self, frame: _Frame, value: Any, size: int, height: int, raw: str | None, line: int, event: Any) -> None:
        frame.size += size
        frame.height = max(frame.height, height + 1)
        if isinstance(frame.obj, list):
            frame.lines.entries[len(frame.obj)] = _Entry(line, raw)
            frame.obj.append(value)
            return
        key, frame.key = frame.key, None
        assert key is not None
        if frame.merging:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise self._fail(event.start_mark, (*frame.path, "<<"), "merges a mapping or a list of mappings")
            frame.merges.extend((s, frame.key_line) for s in sources)
            return
        frame.obj[key] = value
        frame.lines.entries[key] = _Entry(frame.key_line, raw)

    def _merge(self, frame: _Frame) -> None:
        """Apply `<<` merges: keys written in the mapping win, then earlier merged mappings."""
        obj = frame.obj
        assert isinstance(obj, dict)
        for source, line in frame.merges:
            lines = self.source.get(source)
            for key, value in source.items():
                if key not in obj:
                    obj[key] = value
                    frame.lines.entries[key] = lines.entries[key] if lines else _Entry(line, None)

    def _scalar(self, event: yaml.ScalarEvent, path: Loc) -> Any:
        tag = event.tag
        if tag in (None, "!"):
            tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        try:
            value = self.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self._fail(event.start_mark, path, f"the tag {tag!r} is not supported") from None
        except (ValueError, OverflowError) as e:  # an int of 5000 digits, a bad !!binary or timestamp
            reason = "too many digits" if "digits" in str(e) else _one_line(str(e))
            raise self._fail(event.start_mark, path, f"cannot read {_short(event.value, 40)!r}: {reason}") from None
        self.constructed_objects.pop(node, None)
        return value

    def _count(self, n: int, event: Any, path: Loc, *, alias: bool) -> None:
        self._values += n
        if self._values > MAX_VALUES:
            what = f"aliases expand the spec to more than {MAX_VALUES} values" if alias else ""
            raise self._fail(
                event.start_mark, path, what or f"more than {MAX_VALUES} keys and values; too big for a spec"
            )

    def _child_path(self, stack: list[_Frame], event: Any, what: str) -> Loc:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.obj, list):
            return (*top.path, len(top.obj))
        if top.key is None:
            raise self._fail(event.start_mark, top.path, f"a key must be plain text, not {what}")
        return (*top.path, top.key)

    def _fail(self, mark: Any, path: Loc, message: str) -> SpecError:
        return SpecError(self.file, mark.line + 1, _dotted(path) or None, message)

    def _yaml_error(self, e: yaml.MarkedYAMLError) -> SpecError:
        mark = e.problem_mark or e.context_mark
        context = e.context or ""
        if e.context_mark is not None and ("simple key" in context or "quoted scalar" in context):
            mark = e.context_mark  # where the unfinished key or string began, not where the parser gave up
        line = mark.line + 1 if mark is not None else None
        text_line = self._line_text(line)
        indentation = text_line[: len(text_line) - len(text_line.lstrip(" \t"))]
        column = e.problem_mark.column if mark is e.problem_mark and mark is not None else -1
        if "\t" in indentation or text_line[column : column + 1] == "\t":
            message = "a tab character; YAML indents with spaces only"
        else:
            message = f"invalid YAML: {_one_line(e.problem or context or 'syntax error')}"
            if context and e.context_mark is not None and e.context_mark.line + 1 != line:
                message += f" ({_one_line(context)} at line {e.context_mark.line + 1})"
        return SpecError(self.file, line, _key_path_near(self.text, line) if line else None, message)

    def _line_text(self, line: int | None) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if line and 0 < line <= len(lines) else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _dotted(path: Loc) -> str:
    return ".".join(str(p) for p in path)


_KEY_LINE = re.compile(r"""^("[^"]*"|'[^']*'|[^\s#'"{}\[\],&*!|>%@`-][^#]*?|-[^\s#][^#]*?)\s*:(?:\s|$)""")

_BARE_WORD = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)\s*$")  # `code` missing its colon


def _key_path_near(text: str, line: int) -> str | None:
    """Best guess of the field at `line` from indentation, for syntax errors (there is no document to ask).

    Follows block mappings and `- ` items, which is how specs are written; None when it cannot tell.
    """
    levels: list[list[Any]] = []  # open levels: [indent, key or index, is a list item, items under it so far]
    for number, text_line in enumerate(text.splitlines()[:line], start=1):
        body = text_line.expandtabs(8)
        rest = body.lstrip(" ")
        if not rest or rest.startswith(("#", "---", "...")):
            continue
        indent = len(body) - len(rest)
        while rest == "-" or rest.startswith("- "):
            while levels and (levels[-1][0] > indent or (levels[-1][0] == indent and levels[-1][2])):
                levels.pop()
            if not levels:
                return None  # a top-level list: no field names to give
            levels.append([indent, levels[-1][3], True, 0])
            levels[-2][3] += 1
            after = rest[1:].lstrip(" ")
            indent += len(rest) - len(after)
            rest = after
        key = _KEY_LINE.match(rest) or (_BARE_WORD.match(rest) if number == line else None)
        if key is None and number < line:
            continue  # a value's continuation
        while levels and levels[-1][0] >= indent:
            levels.pop()
        if key is not None:
            levels.append([indent, key.group(1).strip("'\""), False, 0])
    return _dotted(tuple(level[1] for level in levels)) or None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------
# --set overrides


def _apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], source: _SourceMap
) -> tuple[dict[str, Any], dict[Loc, str]]:
    """`data` with each `--set dotted.path=value` applied, and the text given for each path set.

    Mappings and lists along a path are copied, not changed: an alias may share them with another
    place in the spec. A missing or empty section on the way is created.
    """
    root: dict[str, Any] = dict(data)
    source.copied(root, data)
    from_cli: dict[Loc, str] = {}
    for override in overrides:
        dotted, sep, text = override.partition("=")
        segments = [segment.strip() for segment in dotted.split(".")]
        if not sep or not all(segments):
            raise SpecError("--set", None, dotted.strip() or None, f"expected dotted.path=value (got {override!r})")
        value = _override_value(dotted.strip(), text)
        path: list[str | int] = []
        parent: Any = root
        for i, segment in enumerate(segments):
            key: str | int = segment
            if isinstance(parent, list):
                if not segment.isdigit() or int(segment) >= len(parent):
                    raise SpecError(
                        "--set", None, _dotted((*path, segment)), f"no such item ({_dotted(path)} has {len(parent)})"
                    )
                key = int(segment)
            path.append(key)
            if i == len(segments) - 1:
                parent[key] = _typed_override(tuple(path), value, text.strip())
                break
            child = parent[key] if isinstance(parent, list) else parent.get(key)
            if child is None:
                child = {}
            elif isinstance(child, (dict, list)):
                original, child = child, (dict(child) if isinstance(child, dict) else list(child))
                source.copied(child, original)
            else:
                raise SpecError("--set", None, _dotted(path), f"is {_kind(child)}, so it has no {segments[i + 1]!r}")
            parent[key] = child
            parent = child
        from_cli[tuple(path)] = text.strip()
    return root, from_cli


def _override_value(dotted: str, text: str) -> Any:
    """An override's value, read as YAML with the spec's own limits."""
    try:
        return _SpecLoader(text, "--set").load()
    except SpecError as e:
        raise SpecError("--set", None, dotted, f"cannot read the value {_short(text.strip())!r}: {e.message}") from None


def _typed_override(path: Loc, value: Any, text: str) -> Any:
    """The text as given where the field takes text: `--set image.framework_version=2.10` means "2.10", not 2.1.

    In a file, quotes say so (and the error says to add them); on a command line they would need a
    second layer of shell quoting.
    """
    if isinstance(value, (bool, int, float, date)):
        tp = _bare(_type_at(path))
        if isinstance(tp, type) and issubclass(tp, (str, Path)) and not issubclass(tp, Enum):
            return text
    return value


# ----------------------------------------------------------------------------------------------------------
# The models' shape, for messages: which fields a location has, which are durations.


def _bare(tp: Any) -> Any:
    """`tp` without Annotated and without `| None`."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType) and len(args := [a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = args[0]
        else:
            return tp


def _step(tp: Any, segment: str | int) -> tuple[Any, FieldInfo | None]:
    """The type one step into `tp` (a model's field, a mapping's value, a list's item), and the FieldInfo if a field."""
    tp = _bare(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(segment) if isinstance(segment, str) else None
        return (info.annotation, info) if info else (None, None)
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1], None
    if origin is list and args:
        return args[0], None
    return None, None


def _type_at(loc: Loc) -> Any:
    tp: Any = JobSpec
    for segment in loc:
        tp, _ = _step(tp, segment)
    return tp


def _field_at(loc: Loc) -> FieldInfo | None:
    tp: Any = JobSpec
    info = None
    for segment in loc:
        tp, info = _step(tp, segment)
    return info


def _is_duration(info: FieldInfo | None) -> bool:
    if info is None:
        return False

    def metadata(tp: Any) -> Iterator[Any]:
        if get_origin(tp) is Annotated:
            yield from tp.__metadata__
        for arg in get_args(tp):
            yield from metadata(arg)

    return any(
        isinstance(m, BeforeValidator) and m.func is parse_duration
        for m in (*info.metadata, *metadata(info.annotation))
    )


def _model_fields(tp: Any) -> list[str]:
    tp = _bare(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _field_paths(tp: Any, prefix: Loc = ()) -> Iterator[Loc]:
    """Every field path of the model tree, to spot a field written at the wrong level."""
    for name in _model_fields(tp):
        yield (*prefix, name)
        yield from _field_paths(_step(tp, name)[0], (*prefix, name))


# ----------------------------------------------------------------------------------------------------------
# pydantic's errors -> one SpecError


@dataclass(frozen=True)
class _Problem:
    loc: Loc  # where in the document, as the user wrote it
    error: Any  # pydantic's ErrorDetails
    union_member: bool  # one member's complaint, of a union type (`str | int | float | bool`)
    about_key: bool  # about a mapping's key (an environment variable's name), not its value


def _spec_error(exc: ValidationError, data: Any, source: _SourceMap, file: str, from_cli: dict[Loc, str]) -> SpecError:
    """The one error to show: the first in the file, in words a user reads, at the line of its field."""
    groups: dict[Loc, list[_Problem]] = {}
    for error in exc.errors(include_url=False):
        problem = _problem(error, data)
        groups.setdefault(problem.loc, []).append(problem)
    found: list[tuple[bool, int, SpecError]] = []
    for loc, problems in groups.items():
        where, (line, raw, depth) = file, source.locate(data, loc)
        value = _value_at(data, loc)
        for path, text in from_cli.items():
            # The override set this place, or made the part of the path that the file does not have.
            if loc[: len(path)] == path or _common(loc, path) > depth:
                where, line, raw = "--set", None, text if loc == path else None
                break
        if len(problems) > 1 and all(p.union_member for p in problems):
            message = _union_message(problems, value, raw)
        else:
            message = _message(problems[0], value, raw)
        found.append((where == "--set", line or 0, SpecError(where, line, _dotted(loc) or None, message)))
    return min(found, key=lambda f: (f[0], f[1]))[2]


def _problem(error: Any, data: Any) -> _Problem:
    """Drop from pydantic's location what is not a place in the document (a union member's tag, `[key]`)."""
    loc: list[str | int] = []
    cur, union_member, about_key = data, False, False
    raw_loc = error["loc"]
    for i, segment in enumerate(raw_loc):
        if segment == "[key]":
            about_key = True
        elif _holds(cur, segment):
            loc.append(segment)
            cur = cur[segment]
        elif i == len(raw_loc) - 1 and error["type"] == "missing":
            loc.append(segment)
        else:
            union_member = True
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        loc.extend(cause.path)
    return _Problem(tuple(loc), error, union_member, about_key)


def _holds(container: Any, segment: str | int) -> bool:
    if isinstance(container, dict):
        return isinstance(segment, str) and segment in container
    return isinstance(container, list) and isinstance(segment, int) and 0 <= segment < len(container)


def _value_at(data: Any, loc: Loc) -> Any:
    """The value at `loc`, None where there is none."""
    for segment in loc:
        if not _holds(data, segment):
            return None
        data = data[segment]
    return data


def _common(a: Loc, b: Loc) -> int:
    """Length of the common prefix."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _got(value: Any, raw: str | None) -> str:
    """What the user wrote, as they wrote it."""
    if isinstance(value, str):
        return repr(_short(value))
    if raw is not None:
        return _short(raw) if raw else "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return _kind(value)
    return _short(str(value))


_COMPARISONS = types.MappingProxyType(
    {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
)
_EXPECTED = types.MappingProxyType(
    {
        "string_type": "a string",
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "dict_type": "a mapping",
        "model_type": "a mapping of fields",
        "model_attributes_type": "a mapping of fields",
        "list_type": "a list",
        "path_type": "a path",
    }
)


def _message(problem: _Problem, value: Any, raw: str | None) -> str:
    error, loc = problem.error, problem.loc
    kind, ctx = error["type"], error.get("ctx") or {}
    got = _got(value, raw)
    if problem.about_key:
        name = loc[-1] if loc else "?"
        if kind == "string_pattern_mismatch":
            return f"the name {name!r} is not allowed: use {_PATTERN_HELP.get(ctx.get('pattern'), ctx.get('pattern'))}"
        return f"the name {name!r} is not allowed: {_one_line(error['msg']).lower()}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_field(loc)
    if kind in _COMPARISONS:
        op, key = _COMPARISONS[kind]
        limit = ctx.get(key)
        if _is_duration(_field_at(loc)):
            limit = format_duration(limit) if isinstance(limit, int) and limit else limit
            got = value if isinstance(value, str) else got  # 30d, as written
        return f"must be {op} {limit} (got {got})"
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must be at least {n} characters (got {got})"
    if kind == "string_too_long":
        length = len(value) if isinstance(value, str) else got
        return f"must be at most {ctx.get('max_length')} characters (got {length})"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"needs {'at least' if kind == 'too_short' else 'at most'} {n} item{'s' if n != 1 else ''}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return f"must be {_PATTERN_HELP[pattern]} (got {got})" if pattern in _PATTERN_HELP else f"must match {pattern}"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        close = difflib.get_close_matches(str(value), re.findall(r"'([^']*)'", expected), n=1)
        return f"must be {expected} (got {got})" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind in ("value_error", "assertion_error") and ctx.get("error") is not None:
        return _one_line(str(ctx["error"]))
    if kind in _EXPECTED:
        noun = _EXPECTED[kind]
        if noun == "a string" and isinstance(value, (bool, int, float, date)) and raw:
            return f'expected a string (got {raw}; put it in quotes: "{raw}")'
        return f"expected {noun} (got {got})"
    return f"{_one_line(error['msg'])} (got {got})"


def _union_message(problems: list[_Problem], value: Any, raw: str | None) -> str:
    nouns = {"int": "a number", "float": "a number", "bool": "true/false", "string": "a string"}
    expected = list(dict.fromkeys(nouns.get(p.error["type"].split("_")[0], "something else") for p in problems))
    listed = ", ".join(expected[:-1]) + f" or {expected[-1]}" if len(expected) > 1 else expected[0]
    return f"expected {listed} (got {_got(value, raw)})"


def _unknown_field(loc: Loc) -> str:
    name = str(loc[-1])
    fields = _model_fields(_type_at(loc[:-1]))
    close = difflib.get_close_matches(name, fields, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    elsewhere = [path for path in _field_paths(JobSpec) if path[-1] == name]
    if elsewhere:
        return f"unknown field here (did you mean {_dotted(elsewhere[0])!r}?)"
    return f"unknown field (expected one of: {', '.join(fields)})"

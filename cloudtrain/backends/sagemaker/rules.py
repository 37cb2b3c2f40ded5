"""What SageMaker's API refuses, checked before anything is uploaded: one validator, used by cloudtrain's SageMaker
backend (and its sweeps) and by the tests' control plane stand-in, so neither can drift from the other.

AWS checks a request before it does anything with it, in two layers, and so does `violations`:

1. The service model's constraints, over the whole request: types and required members (botocore's own
   validator, which stops there), then every enum, string length, pattern, list or map size and integer
   range the model states. botocore's client checks none of those maxima, enums or patterns, so without this
   a request AWS refuses is found out only at CreateTrainingJob, after the uploads. Patterns match the whole
   value, as AWS's (Java) patterns do; the `regex` module reads their `\\p{L}`, and `.` stops at a newline.
2. What AWS documents but the model cannot express (`_training_rules`, `_tag_rules`, each citing where AWS says
   it): the 28-day MaxRuntimeInSeconds, the reserved `aws:` tag prefix in any case, unique tag keys, spot's
   MaxWaitTimeInSeconds, warm pools without spot, no volume key on instance storage, s3:// URIs, unique channel
   names. For CreateHyperParameterTuningJob they apply to each training job definition.

The one entry point is `check(operation, request)`: it raises `Refused`, whose `violations` each carry the
request path (for cloudtrain to name the spec field) and AWS's own text ("Value '...' at 'field.path' failed to
satisfy constraint: Member must ...", paths in AWS's lowerCamel form, `tags.1.member.key`), and whose message is
AWS's ValidationException message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

MAX_RUNTIME_S = 28 * 24 * 3600  # StoppingCondition.MaxRuntimeInSeconds: "The maximum value is 28 days."
S3_URI = re.compile(r"^s3://[^/]+(/.*)?$")
SHOWN = 60  # characters of a refused value echoed back (AWS echoes it; a 5,000-character value is cut)
# The SDK's `volume_size_supported`: instance types with local NVMe storage ("d" in the family, or these)
INSTANCE_STORAGE_FAMILIES = ("g5", "g6", "p5", "trn1")

Path = tuple[str | int, ...]  # a place in the request: member names, list indexes (from 0), map keys


@dataclass(frozen=True)
class Violation:
    """One rule a request breaks: where (`path` in the request's own terms), AWS's text, and the short reason."""

    path: Path
    text: str  # AWS's own words for it
    reason: str  # the constraint alone, for a one-line error that names the spec field instead


class Refused(Exception):
    """The request breaks AWS's rules; the message is AWS's ValidationException message."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        count = f"{len(violations)} validation error{'s' if len(violations) > 1 else ''} detected: "
        super().__init__(count + "; ".join(v.text for v in violations))


@cache
def _model() -> Any:
    from botocore.session import get_session

    return get_session().get_service_model("sagemaker")


@cache
def _pattern(pattern: str) -> Any:
    import regex

    return regex.compile(pattern)


def check(operation: str, request: Mapping[str, Any]) -> None:
    """Raise Refused where AWS would refuse `operation` (a SageMaker API name) with this request."""
    found = violations(operation, request)
    if found:
        raise Refused(found)


def violations(operation: str, request: Mapping[str, Any]) -> list[Violation]:
    """Every rule of the service model and of AWS's documentation that the request breaks, in request order."""
    from botocore.validate import ParamValidator

    shape = _model().operation_model(operation).input_shape
    report = ParamValidator().validate(dict(request), shape)
    if report.has_errors():  # wrong types or missing members: the rest cannot be read
        text = report.generate_report()
        return [Violation((), text, text)]
    found = _constraints(shape, request, (), "")
    if operation == "CreateTrainingJob":
        found += _training_rules(request, ())
        found += _tag_rules(request)
    elif operation == "CreateHyperParameterTuningJob":
        if "TrainingJobDefinition" in request:
            found += _training_rules(request["TrainingJobDefinition"], ("TrainingJobDefinition",))
        for i, definition in enumerate(request.get("TrainingJobDefinitions", [])):
            found += _training_rules(definition, ("TrainingJobDefinitions", i))
        found += _tag_rules(request)
    return found


def _constraints(shape: Any, value: Any, path: Path, where: str) -> list[Violation]:
    """Every enum, length, pattern, size and range the model states that `value` breaks."""
    meta, kind = shape.metadata, shape.type_name
    if kind == "structure":
        return [
            found
            for name, member in value.items()
            if name in shape.members
            for found in _constraints(
                shape.members[name], member, (*path, name), _join(where, name[0].lower() + name[1:])
            )
        ]
    found: list[Violation] = []
    if kind in ("list", "map"):
        found += _range(value, path, where, len(value), meta, "have length")
        if kind == "list":
            for i, item in enumerate(value):
                found += _constraints(shape.member, item, (*path, i), f"{where}.{i + 1}.member")
        else:
            for key, item in value.items():
                found += _constraints(shape.key, key, (*path, key), f"{where}.{key}.key")
                found += _constraints(shape.value, item, (*path, key), f"{where}.{key}.value")
    elif kind == "string":
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            found.append(_broken(value, path, where, f"Member must satisfy enum value set: {enum}"))
        found += _range(value, path, where, len(value), meta, "have length")
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            found.append(
                _broken(value, path, where, f"Member must satisfy regular expression pattern: {meta['pattern']}")
            )
    elif kind in ("integer", "long"):
        found += _range(value, path, where, value, meta, "have value")
    return found


def _range(value: Any, path: Path, where: str, amount: int, meta: Mapping[str, Any], what: str) -> list[Violation]:
    out = []
    if "min" in meta and amount < meta["min"]:
        out.append(_broken(value, path, where, f"Member must {what} greater than or equal to {meta['min']}"))
    if "max" in meta and amount > meta["max"]:
        out.append(_broken(value, path, where, f"Member must {what} less than or equal to {meta['max']}"))
    return out


def _broken(value: Any, path: Path, where: str, constraint: str) -> Violation:
    return Violation(path, f"{_value(value, where)} failed to satisfy constraint: {constraint}", constraint)


def _value(value: Any, where: str) -> str:
    shown = value if isinstance(value, int) else str(value)
    if isinstance(shown, str) and len(shown) > SHOWN:
        shown = shown[:SHOWN] + "..."
    return f"Value '{shown}' at '{where}'"


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _rule(path: Path, text: str) -> Violation:
    return Violation(path, text, text)


def has_instance_storage(instance_type: str) -> bool:
    """Instance types with local NVMe storage, which take no EBS volume key (the SDK's rule)."""
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else instance_type
    return "d" in family or family.startswith(INSTANCE_STORAGE_FAMILIES)


def _training_rules(p: Mapping[str, Any], at: Path) -> list[Violation]:
    """A training job's rules from AWS's API reference and guides that the service model does not carry."""
    found = []
    algorithm, resources = p.get("AlgorithmSpecification", {}), p.get("ResourceConfig", {})
    stopping = p.get("StoppingCondition", {})
    if at == () and not algorithm.get("TrainingImage") and not algorithm.get("AlgorithmName"):
        found.append(
            _rule((*at, "AlgorithmSpecification"), "AlgorithmSpecification needs a TrainingImage or an AlgorithmName")
        )
    if at == () and not resources.get("InstanceType") and not resources.get("InstanceGroups"):
        found.append(_rule((*at, "ResourceConfig"), "ResourceConfig needs an InstanceType or InstanceGroups"))
    runtime = stopping.get("MaxRuntimeInSeconds", 86400)
    if runtime > MAX_RUNTIME_S:  # StoppingCondition: "The default value is 1 day. The maximum value is 28 days."
        found.append(
            _broken(
                runtime,
                (*at, "StoppingCondition", "MaxRuntimeInSeconds"),
                "stoppingCondition.maxRuntimeInSeconds",
                f"Member must have value less than or equal to {MAX_RUNTIME_S}",
            )
        )
    spot = p.get("EnableManagedSpotTraining")
    if spot:  # MaxWaitTimeInSeconds: "It must be equal to or greater than MaxRuntimeInSeconds"
        wait = stopping.get("MaxWaitTimeInSeconds")
        if wait is None or wait < runtime:
            found.append(
                _rule(
                    (*at, "StoppingCondition", "MaxWaitTimeInSeconds"),
                    "MaxWaitTimeInSeconds is required with managed spot training and must be >= MaxRuntime",
                )
            )
    if spot and resources.get("KeepAlivePeriodInSeconds"):  # Warm pools guide
        found.append(
            _rule((*at, "ResourceConfig", "KeepAlivePeriodInSeconds"), "Warm pools cannot be used with spot instances.")
        )
    if resources.get("VolumeKmsKeyId") and has_instance_storage(resources.get("InstanceType") or ".."):
        # ResourceConfig.VolumeKmsKeyId: "Certain Nitro-based instances include local storage ... you can't
        # request a VolumeKmsKeyId when using an instance type with local storage."
        found.append(
            _rule(
                (*at, "ResourceConfig", "VolumeKmsKeyId"),
                f"Instance type {resources['InstanceType']} has instance storage and does not support VolumeKmsKeyId",
            )
        )
    uris: list[tuple[Path, str]] = []
    if "OutputDataConfig" in p:
        uris.append(((*at, "OutputDataConfig", "S3OutputPath"), p["OutputDataConfig"]["S3OutputPath"]))
    if "CheckpointConfig" in p:
        uris.append(((*at, "CheckpointConfig", "S3Uri"), p["CheckpointConfig"]["S3Uri"]))
    channels = p.get("InputDataConfig", [])
    uris += [
        ((*at, "InputDataConfig", i, "DataSource", "S3DataSource", "S3Uri"), c["DataSource"]["S3DataSource"]["S3Uri"])
        for i, c in enumerate(channels)
        if "S3DataSource" in c["DataSource"]
    ]
    found += [_rule(where, f"Value '{u[:SHOWN]}' is not an s3:// URI") for where, u in uris if not S3_URI.match(u)]
    names = [c["ChannelName"] for c in channels]
    if len(names) != len(set(names)):  # Channel: "The name of the channel" ... each one names a folder
        found.append(_rule((*at, "InputDataConfig"), "InputDataConfig: channel names must be unique"))
    return found


def _tag_rules(p: Mapping[str, Any]) -> list[Violation]:
    """Tagging AWS resources: "The aws: prefix is reserved for AWS use" (in any case: `AWS:team` too), and
    Tag.Key: "Tag keys must be unique per resource." """
    keys = [t["Key"] for t in p.get("Tags", [])]
    found = []
    if len(keys) != len(set(keys)):
        found.append(_rule(("Tags",), "Tags: tag keys must be unique per resource"))
    found += [
        _rule(("Tags", i, "Key"), f"Tag key '{k[:SHOWN]}' uses the reserved prefix 'aws:'")
        for i, k in enumerate(keys)
        if k.lower().startswith("aws:")
    ]
    return found

"""What SageMaker's API refuses, for the control plane stand-in (tests/sagemaker_control_plane.py).

AWS checks a request before it does anything with it, in two layers, and so does `check` here:

1. The service model's constraints, over the whole request: types and required members (botocore's own
   validator, which stops there), then every enum, string length, pattern, list or map size and integer
   range the model states. botocore's client checks none of those maxima, enums or patterns, so a request
   that a client sends unvalidated (or a client's bug) gets through to here and must be refused as AWS
   refuses it. Patterns match the whole value, as AWS's (Java) patterns do; `regex` reads their `\\p{L}`.
2. What AWS documents but the model cannot express (CreateTrainingJob's `_create_rules`, each citing where
   AWS says it): the 28-day MaxRuntimeInSeconds, the reserved `aws:` tag prefix, unique tag keys, spot's
   MaxWaitTimeInSeconds, s3:// URIs, unique channel names.

The answer is AWS's: `ValidationException`, "N validation error(s) detected: Value '...' at 'field.path'
failed to satisfy constraint: Member must ...", with paths in AWS's lowerCamel form (`tags.1.member.key`).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import regex

MAX_RUNTIME_S = 28 * 24 * 3600  # StoppingCondition.MaxRuntimeInSeconds: "The maximum value is 28 days."
S3_URI = re.compile(r"^s3://[^/]+(/.*)?$")
SHOWN = 60  # characters of a refused value echoed back (AWS echoes it; a 5,000-character value is cut)


class Invalid(Exception):
    """The request breaks AWS's rules: the message is ValidationException's."""


@cache
def _model() -> Any:
    from botocore.session import get_session

    return get_session().get_service_model("sagemaker")


@cache
def _pattern(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


def check(action: str, params: dict[str, Any]) -> None:
    """Raise Invalid with AWS's message where AWS would refuse `action` with these parameters."""
    from botocore.validate import ParamValidator

    shape = _model().operation_model(action).input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():  # wrong types or missing members: the rest cannot be read
        raise Invalid(report.generate_report())
    errors = constraint_errors(shape, params)
    if action == "CreateTrainingJob":
        errors += _create_rules(params)
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected: "
        raise Invalid(count + "; ".join(errors))


def constraint_errors(shape: Any, value: Any, path: str = "") -> list[str]:
    """Every enum, length, pattern, size and range the model states that `value` breaks, with AWS's paths."""
    meta, kind = shape.metadata, shape.type_name
    if kind == "structure":
        return [
            error
            for name, member in value.items()
            if name in shape.members
            for error in constraint_errors(shape.members[name], member, _join(path, name[0].lower() + name[1:]))
        ]
    errors: list[str] = []
    if kind in ("list", "map"):
        errors += _range(value, path, len(value), meta, "have length")
        if kind == "list":
            for i, item in enumerate(value, 1):
                errors += constraint_errors(shape.member, item, f"{path}.{i}.member")
        else:
            for key, item in value.items():
                errors += constraint_errors(shape.key, key, f"{path}.{key}.key")
                errors += constraint_errors(shape.value, item, f"{path}.{key}.value")
    elif kind == "string":
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            errors.append(
                f"{_value(value, path)} failed to satisfy constraint: Member must satisfy enum value set: {enum}"
            )
        errors += _range(value, path, len(value), meta, "have length")
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            errors.append(
                f"{_value(value, path)} failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {meta['pattern']}"
            )
    elif kind in ("integer", "long"):
        errors += _range(value, path, value, meta, "have value")
    return errors


def _range(value: Any, path: str, amount: int, meta: dict[str, Any], what: str) -> list[str]:
    broken = f"{_value(value, path)} failed to satisfy constraint: Member must {what}"
    out = []
    if "min" in meta and amount < meta["min"]:
        out.append(f"{broken} greater than or equal to {meta['min']}")
    if "max" in meta and amount > meta["max"]:
        out.append(f"{broken} less than or equal to {meta['max']}")
    return out


def _value(value: Any, path: str) -> str:
    shown = value if isinstance(value, int) else str(value)
    if isinstance(shown, str) and len(shown) > SHOWN:
        shown = shown[:SHOWN] + "..."
    return f"Value '{shown}' at '{path}'"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _create_rules(p: dict[str, Any]) -> list[str]:
    """CreateTrainingJob's rules from AWS's API reference and guides that the service model does not carry."""
    errors = []
    algorithm, resources, stopping = p["AlgorithmSpecification"], p["ResourceConfig"], p["StoppingCondition"]
    if not algorithm.get("TrainingImage") and not algorithm.get("AlgorithmName"):  # AlgorithmSpecification
        errors.append("AlgorithmSpecification needs a TrainingImage or an AlgorithmName")
    if not resources.get("InstanceType") and not resources.get("InstanceGroups"):  # ResourceConfig
        errors.append("ResourceConfig needs an InstanceType or InstanceGroups")
    runtime = stopping.get("MaxRuntimeInSeconds", 86400)
    if runtime > MAX_RUNTIME_S:  # StoppingCondition: "The default value is 1 day. The maximum value is 28 days."
        errors.append(
            f"Value '{runtime}' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: "
            f"Member must have value less than or equal to {MAX_RUNTIME_S}"
        )
    if p.get("EnableManagedSpotTraining"):  # MaxWaitTimeInSeconds: "It must be equal to or greater than MaxRuntime"
        wait = stopping.get("MaxWaitTimeInSeconds")
        if wait is None or wait < runtime:
            errors.append("MaxWaitTimeInSeconds is required with managed spot training and must be >= MaxRuntime")
    if p.get("EnableManagedSpotTraining") and resources.get("KeepAlivePeriodInSeconds"):  # Warm pools guide
        errors.append("Warm pools cannot be used with spot instances.")
    family = (resources.get("InstanceType") or "..").split(".")[1]
    if resources.get("VolumeKmsKeyId") and ("d" in family or family.startswith(("g5", "g6", "p5", "trn1"))):
        # ResourceConfig.VolumeKmsKeyId: "Certain Nitro-based instances include local storage ... you can't
        # request a VolumeKmsKeyId when using an instance type with local storage."
        errors.append(
            f"Instance type {resources['InstanceType']} has instance storage and does not support VolumeKmsKeyId"
        )
    keys = [t["Key"] for t in p.get("Tags", [])]
    if len(keys) != len(set(keys)):  # Tag.Key: "Tag keys must be unique per resource."
        errors.append("Tags: tag keys must be unique per resource")
    # Tagging AWS resources: "The aws: prefix is reserved for AWS use"; a request may not set such a key.
    errors += [f"Tag key '{k[:SHOWN]}' uses the reserved prefix 'aws:'" for k in keys if k.lower().startswith("aws:")]
    uris = [
        p["OutputDataConfig"]["S3OutputPath"],
        *([p["CheckpointConfig"]["S3Uri"]] if "CheckpointConfig" in p else []),
    ]
    uris += [
        c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in p.get("InputDataConfig", [])
        if "S3DataSource" in c["DataSource"]
    ]
    errors += [f"Value '{u[:SHOWN]}' is not an s3:// URI" for u in uris if not S3_URI.match(u)]
    names = [c["ChannelName"] for c in p.get("InputDataConfig", [])]
    if len(names) != len(set(names)):  # Channel: "The name of the channel" ... each one names a folder
        errors.append("InputDataConfig: channel names must be unique")
    return errors


def empty_channel(uri: str, region: str, role: str) -> str:
    """AWS's answer to CreateTrainingJob when an S3Prefix channel names no object (bucket or prefix missing).

    SageMaker lists every S3Prefix channel when the job is created and refuses it with this
    ValidationException (its text as AWS's users have quoted it); the job is never made.
    """
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    return (
        f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the bucket '
        f"exists in the selected region ({region}), that objects exist under that S3 prefix, and that the role "
        f'"{role}" has "s3:ListBucket" permissions on bucket "{bucket}".'
    )

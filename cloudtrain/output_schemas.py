"""JSON Schemas (draft 2020-12) of what each command prints with `--json`: the contract CI scripts rely on.

`cloudtrain schema --output-of NAME` prints one; docs/ci.md describes them. Stability: within a major
version fields are only added, never removed, renamed or retyped, so a consumer should ignore fields it
does not know (the schemas allow them). Each schema is self-contained (its own `$defs`).
"""

from __future__ import annotations

import copy
from typing import Any

VERSION = 1
DRAFT = "https://json-schema.org/draft/2020-12/schema"

_STR = {"type": "string"}
_NUM = {"type": "number"}
_OPT_STR = {"type": ["string", "null"]}
_OPT_NUM = {"type": ["number", "null"]}
_STATUS = {
    "enum": ["NotCreated", "InProgress", "Completed", "Failed", "Stopping", "Stopped"],
    "description": "SageMaker's statuses, on every backend. NotCreated: a dry run.",
}


def _object(properties: dict[str, Any], description: str = "", required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    if description:
        out["description"] = description
    out["properties"] = properties
    out["required"] = list(properties) if required is None else required
    return out


_TRANSITION = _object(
    {"status": _STR, "start": _NUM, "end": _OPT_NUM, "message": _STR},
    "One secondary-status step (SageMaker's SecondaryStatusTransitions). Times are seconds since the epoch.",
)

JOB = _object(
    {
        "name": {**_STR, "description": "The job name: the spec's name plus a 12-character suffix."},
        "backend": {"enum": ["local", "sagemaker"]},
        "status": _STATUS,
        "secondary_status": {**_STR, "description": "SageMaker's SecondaryStatus (Starting, Training, ...)."},
        "failure_reason": _OPT_STR,
        "created": {**_OPT_NUM, "description": "Seconds since the epoch."},
        "ended": _OPT_NUM,
        "instance_type": {**_STR, "description": "'local' on the local backend."},
        "instance_count": {"type": "integer", "minimum": 1},
        "transitions": {"type": "array", "items": {"$ref": "#/$defs/transition"}},
        "metrics": {
            "type": "object",
            "additionalProperties": _NUM,
            "description": "The final value of each metric the spec defines (SageMaker's FinalMetricDataList).",
        },
        "artifacts": {
            "type": "object",
            "additionalProperties": _STR,
            "description": "Where model.tar.gz, output.tar.gz, the checkpoints and the TensorBoard event files are: "
            "s3:// URIs, or paths locally.",
        },
        "billable_seconds": {
            "type": ["integer", "null"],
            "description": "Billable seconds per instance (SageMaker's BillableTimeInSeconds).",
        },
        "billable_instance_seconds": {
            "type": ["integer", "null"],
            "description": "What is billed: billable_seconds times instance_count.",
        },
        "spot_savings_percent": _OPT_NUM,
        "tags": {"type": "object", "additionalProperties": _STR},
        "kind": {"enum": ["job", "sweep"], "description": "sweep: a sweep's own row (status SWEEP shows its trials)."},
    },
    "One training job.",
)

_JOB_DEFS = {"job": JOB, "transition": _TRANSITION}
_COUNTS = {"type": "integer", "minimum": 0}
TRIAL = _object(
    {
        "name": {**_STR, "description": "The trial's training job: <sweep>-NNN-xxxxxxxx."},
        "status": _STATUS,
        "hyperparameters": {"type": "object", "description": "The tuned values this trial got."},
        "objective": {**_OPT_NUM, "description": "The objective's final value (the chief's last line)."},
        "failure_reason": {**_OPT_STR, "description": "Why it failed, or 'early stopping'."},
        "pruned": {"type": "boolean", "description": "Stopped by early stopping (status Stopped)."},
        "created": _OPT_NUM,
        "ended": _OPT_NUM,
        "billable_seconds": {"type": ["integer", "null"], "description": "Per instance."},
        "instance_count": {"type": "integer", "minimum": 1},
        "cost_usd": {**_OPT_NUM, "description": "Billed time at on-demand prices; 0 locally."},
        "history": {"type": "array", "items": _NUM, "description": "The objective each epoch (local sweeps)."},
    },
    "One trial of a sweep.",
)
SWEEP = _object(
    {
        "name": {**_STR, "description": "The sweep: at most 32 characters (a tuning job's name)."},
        "kind": {"const": "sweep"},
        "backend": {"enum": ["local", "sagemaker"]},
        "status": _STATUS,
        "objective": _object({"metric": _STR, "goal": {"enum": ["maximize", "minimize"]}}),
        "strategy": {"enum": ["bayesian", "random", "grid", "hyperband"]},
        "max_trials": {"type": "integer"},
        "max_parallel": {"type": "integer"},
        "counters": _object(
            {k: _COUNTS for k in ("Completed", "InProgress", "Stopping", "EarlyStopped", "Stopped", "Failed")},
            "Trials by state (early-stopped ones apart from other stopped ones).",
        ),
        "best_trial": _OPT_STR,
        "best_objective": _OPT_NUM,
        "trials": {"type": "array", "items": {"$ref": "#/$defs/trial"}, "description": "Best objective first."},
        "created": _OPT_NUM,
        "ended": _OPT_NUM,
        "failure_reason": _OPT_STR,
        "max_cost": _OPT_NUM,
        "spent_usd": {**_OPT_NUM, "description": "The trials' billed time at on-demand prices so far."},
        "notes": {"type": "array", "items": _STR},
    },
    "A sweep: a SageMaker tuning job or local trials chosen by Optuna.",
)
_SWEEP_DEFS = {"sweep": SWEEP, "trial": TRIAL}
_EVALUATION = {
    "type": ["object", "null"],
    "description": "Headline numbers of eval_report.json; null when the job wrote none.",
    "properties": {"accuracy": _OPT_NUM, "loss": _OPT_NUM},
    "required": ["accuracy", "loss"],
}


def _schema(name: str, title: str, body: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"$schema": DRAFT, "$id": f"urn:cloudtrain:output:{name}:v{VERSION}", "title": title}
    out.update(body)
    if defs:
        out["$defs"] = defs
    return out


_SCHEMAS: dict[str, dict[str, Any]] = {
    "submit": _schema(
        "submit",
        "cloudtrain submit --json",
        _object(
            {
                "job": {"$ref": "#/$defs/job"},
                "created": {
                    "type": "boolean",
                    "description": "False when the idempotency key matched an existing job (or on --dry-run).",
                },
                "plan": {
                    "type": "object",
                    "description": "--dry-run only: the backend's request, uploads and cost estimate (a sweep's: "
                    "also sweep_cost, its worst case and max_cost's runtime limit).",
                },
                "sweep": {"$ref": "#/$defs/sweep", "description": "A spec with sweep: only."},
            },
            "Printed once the job exists, whatever the exit code: with --wait, `job` is its state when the wait "
            "ended (completed, failed, timed out or interrupted).",
            required=["job", "created"],
        ),
        {**_JOB_DEFS, **_SWEEP_DEFS},
    ),
    "status": _schema("status", "cloudtrain status JOB --json", {"$ref": "#/$defs/job"}, _JOB_DEFS),
    "status-sweep": _schema(
        "status-sweep", "cloudtrain status SWEEP --json (and stop SWEEP --json)", {"$ref": "#/$defs/sweep"}, _SWEEP_DEFS
    ),
    "status-list": _schema(
        "status-list",
        "cloudtrain status --json",
        {"type": "array", "items": {"$ref": "#/$defs/job"}, "description": "Recent jobs, newest first."},
        _JOB_DEFS,
    ),
    "stop": _schema(
        "stop",
        "cloudtrain stop JOB --json",
        {"$ref": "#/$defs/job", "description": "The job after the stop request (after it ended, with --wait)."},
        _JOB_DEFS,
    ),
    "fetch-model": _schema(
        "fetch-model",
        "cloudtrain fetch-model JOB --json",
        _object(
            {
                "job": _STR,
                "model": {**_OPT_STR, "description": "Folder holding the extracted model.tar.gz; null if none."},
                "output": {**_OPT_STR, "description": "Folder holding the extracted output.tar.gz; null if none."},
                "checkpoints": _OPT_STR,
                "tensorboard": {
                    **_OPT_STR,
                    "description": "Folder holding the job's TensorBoard event files (tensorboard --logdir); null if "
                    "none.",
                },
                "eval_report": {**_OPT_STR, "description": "Path of eval_report.json; null if the job wrote none."},
                "evaluation": _EVALUATION,
                "checked": {
                    "type": "object",
                    "additionalProperties": _STR,
                    "description": "How each downloaded tarball was verified against S3: SHA256, SHA1, CRC64NVME, "
                    "CRC32C, CRC32 (S3's full-object checksum), MD5 (a plain ETag) or 'size only ...'; {} locally. "
                    "Every tarball's gzip CRC-32 is checked besides, on both backends.",
                },
                "trial": {**_STR, "description": "Of a sweep only: the trial whose model this is."},
                "sweep_report": {**_STR, "description": "Of a sweep only: sweep_report.html."},
                "sweep_trials": {**_STR, "description": "Of a sweep only: sweep_trials.csv."},
            },
            required=["job", "model", "output", "checkpoints", "tensorboard", "eval_report", "evaluation", "checked"],
        ),
    ),
    "validate": _schema(
        "validate",
        "cloudtrain validate SPEC... --json",
        {
            "type": "array",
            "description": "One entry per spec, in the order given. Exit code 2 if any is invalid.",
            "items": {
                "oneOf": [
                    _object(
                        {
                            "file": _STR,
                            "name": _STR,
                            "valid": {"const": True},
                            "warnings": {
                                "type": "array",
                                "items": _STR,
                                "description": "Only when there are any: one line each, as on stderr.",
                            },
                        },
                        "A valid spec, its job name and its traps on AWS images, if any (docs/container-contract.md).",
                        required=["file", "name", "valid"],
                    ),
                    _object(
                        {
                            "file": _STR,
                            "valid": {"const": False},
                            "error": {**_STR, "description": "The one-line error, as on stderr."},
                            "line": {"type": ["integer", "null"]},
                            "field": _OPT_STR,
                        },
                        "An invalid spec: the first problem in it.",
                    ),
                ]
            },
        },
    ),
    "logs": _schema(
        "logs",
        "cloudtrain logs JOB --json (one document per line)",
        _object(
            {"timestamp": {**_NUM, "description": "Seconds since the epoch."}, "host": _STR, "message": _STR},
            "One log line of one host. `logs --json` prints one such object per line (JSON Lines).",
        ),
    ),
    "compare": _schema(
        "compare",
        "cloudtrain compare JOB1 JOB2 --json",
        _object(
            {
                "jobs": {
                    "type": "array",
                    "minItems": 2,
                    "items": _object(
                        {
                            "name": _STR,
                            "backend": {"enum": ["local", "sagemaker"]},
                            "status": _STATUS,
                            "code_sha256": {
                                **_OPT_STR,
                                "description": "sha256 of the code tarball's file names, modes and contents "
                                "(the cloudtrain:code-sha256 tag).",
                            },
                            "metrics": {"type": "object", "additionalProperties": _NUM},
                            "evaluation": {
                                **_EVALUATION,
                                "properties": {**_EVALUATION["properties"], "source": _STR},
                                "required": ["accuracy", "loss", "source"],
                            },
                        }
                    ),
                },
                "same_code": {"type": ["boolean", "null"], "description": "null when a code hash is unknown."},
                "spec_diff": {
                    "type": ["array", "null"],
                    "description": "The spec fields (dotted) whose values differ, one value per job (null: not "
                    "set); null when a job's spec is unknown.",
                    "items": _object({"field": _STR, "values": {"type": "array"}}),
                },
                "metrics": {
                    "type": "array",
                    "description": "Each final metric and evaluation number (eval.accuracy, eval.loss), one value "
                    "per job (null: the job has none).",
                    "items": _object({"name": _STR, "values": {"type": "array", "items": _OPT_NUM}}),
                },
                "notes": {"type": "array", "items": _STR},
            }
        ),
    ),
    "config": _schema(
        "config",
        "cloudtrain config --json",
        _object(
            {
                "path": {**_STR, "description": "Where the config file is looked for."},
                "exists": {"type": "boolean"},
                "profile": _OPT_STR,
                "settings": {
                    "type": "object",
                    "description": "backend, region, role_arn, output_s3_uri, endpoint_url.",
                    "additionalProperties": _object({"value": _OPT_STR, "source": _STR}),
                },
            }
        ),
    ),
    "build": _schema(
        "build",
        "cloudtrain build --json",
        _object(
            {
                "image": {**_STR, "description": "The image URI, <registry>/<repository>:<tag>."},
                "repository": _STR,
                "tag": {**_STR, "description": "16 hex characters of the build inputs' sha256."},
                "content_hash": _STR,
                "platform": _STR,
                "dry_run": {"type": "boolean"},
                "exists": {"type": ["boolean", "null"], "description": "ECR held the tag already (null: unknown)."},
                "built": {"type": "boolean"},
                "pushed": {"type": "boolean"},
                "repository_created": {"type": "boolean"},
                "builder": _OPT_STR,
                "context_dir": {**_OPT_STR, "description": "Dry run: the folder holding exactly the context."},
                "manifest_path": _OPT_STR,
                "files": {"type": "integer"},
                "context_bytes": {"type": "integer"},
                "skipped_reason": {**_OPT_STR, "description": "Why nothing was built or pushed (e.g. in ECR already)."},
                "commands": {
                    "type": "array",
                    "items": _STR,
                    "description": "The shell lines run (dry run: that would run), in order; never with a secret.",
                },
                "argv": {
                    "type": "array",
                    "items": {"type": "array", "items": _STR},
                    "description": "The same commands as argument lists.",
                },
                "notes": {"type": "array", "items": _STR},
            },
            "What `cloudtrain build` did, or with --dry-run would do (cloudtrain.image.build.BuildResult).",
        ),
    ),
    "doctor": _schema(
        "doctor",
        "cloudtrain doctor --json",
        _object(
            {
                "ok": {"type": "boolean", "description": "No check failed (the exit code is 0)."},
                "checks": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": {"enum": ["region", "credentials", "role", "bucket"]},
                            "status": {"enum": ["ok", "warn", "fail"]},
                            "detail": _STR,
                        }
                    ),
                },
            },
            "The checks of the AWS set-up, in order; a failed region or credentials check ends them.",
        ),
    ),
}


def names() -> list[str]:
    """The commands (and variants) that have an output schema."""
    return list(_SCHEMAS)


def output_schema(name: str) -> dict[str, Any]:
    """A copy of one output schema; KeyError for an unknown name."""
    return copy.deepcopy(_SCHEMAS[name])

"""The job contract, written once: what both backends (and the test control plane) hand a training script.

Script mode's hyperparameters (as the sagemaker SDK's TensorFlow estimator sends them), the CLOUDTRAIN_*
variables `cloudtrain.runtime` reads, the kinds of artifact a job leaves, and the names AWS accepts for a
training job and its role. The runtime ships alone in the code tarball, so the names it reads are defined
there (`cloudtrain.runtime.env`, `cloudtrain.runtime.contract`) and handed over from here. docs/container-contract.md
says what a script sees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cloudtrain.jobs import ARTIFACT_KINDS, TARBALL_KINDS
from cloudtrain.runtime.contract import MWMS_HYPERPARAMETER
from cloudtrain.runtime.env import (
    CHECKPOINT_DIR_VARIABLE,
    COMMUNICATION_VARIABLE,
    HOST_ADDRESSES_VARIABLE,
    LOCAL_VARIABLE,
    OPT_ML_VARIABLE,
    STRATEGY_VARIABLE,
)
from cloudtrain.spec.patterns import ROLE_ARN_PATTERN

if TYPE_CHECKING:  # the spec's pydantic models cost more to import than boto3: `status` never needs them
    from cloudtrain.spec.models import JobSpec

__all__ = [
    "ARTIFACT_KINDS",
    "CHECKPOINT_DIR_VARIABLE",
    "COMMUNICATION_VARIABLE",
    "CONTAINER_LOG_LEVEL",
    "HOST_ADDRESSES_VARIABLE",
    "JOB_NAME",
    "LOCAL_VARIABLE",
    "MWMS_HYPERPARAMETER",
    "OPT_ML_VARIABLE",
    "RESERVED_HYPERPARAMETERS",
    "ROLE_ARN",
    "STRATEGY_VARIABLE",
    "TARBALL_KINDS",
    "hyperparameters",
    "runtime_environment",
    "script_mode",
]

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's TrainingJobName
ROLE_ARN = re.compile(ROLE_ARN_PATTERN)
CONTAINER_LOG_LEVEL = 20  # logging.INFO, the SDK's default container_log_level
# What `script_mode` sets besides the strategy flag: a spec may not set these (nor any other `sagemaker_` name).
RESERVED_HYPERPARAMETERS = (
    "sagemaker_submit_directory",
    "sagemaker_program",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "sagemaker_region",
    "model_dir",
    MWMS_HYPERPARAMETER,
)


def script_mode(spec: JobSpec, job_name: str, *, submit_directory: str, region: str, model_dir: str) -> dict[str, Any]:
    """Script mode's hyperparameters for the job, in the SDK's order: the code tarball, the entry point, the log
    level, the job and its region, the strategy's flag, and `model_dir`, the script's `--model_dir` (on SageMaker
    an S3 prefix every host shares; on the local backend a folder of the job every host shares)."""
    values: dict[str, Any] = {
        "sagemaker_submit_directory": submit_directory,
        "sagemaker_program": spec.code.entry_point,
        "sagemaker_container_log_level": CONTAINER_LOG_LEVEL,
        "sagemaker_job_name": job_name,
        "sagemaker_region": region,
    }
    if spec.distribution.strategy.value == "multi_worker_mirrored":
        values[MWMS_HYPERPARAMETER] = True
    values["model_dir"] = model_dir
    return values


def hyperparameters(spec: JobSpec, script_mode_values: Mapping[str, Any]) -> dict[str, str]:
    """The spec's hyperparameters and script mode's, every value JSON-encoded as the SDK's
    `_json_encode_hyperparameters` does (strings get quotes): what hyperparameters.json holds on every host."""
    return {str(k): json.dumps(v) for k, v in {**spec.hyperparameters, **script_mode_values}.items()}


def runtime_environment(strategy: str, communication: str, checkpoint_dir: str | None) -> dict[str, str]:
    """The CLOUDTRAIN_* variables every host's script gets: the spec's strategy and its communication, and where
    checkpoints go (None: the runtime's default, `<root>/checkpoints`)."""
    environment = {STRATEGY_VARIABLE: strategy, COMMUNICATION_VARIABLE: communication}
    if checkpoint_dir is not None:
        environment[CHECKPOINT_DIR_VARIABLE] = checkpoint_dir
    return environment

"""What AWS's training toolkit hands a script, computed as sagemaker-training 4.8.3 computes it.

AWS's stock TensorFlow images run a script through `sagemaker-training` (4.8.3, pinned by
`sagemaker-tensorflow-training` 20.5.0): `environment.Environment` reads the three config files,
`to_env_vars` turns its properties into SM_* variables, `mapping.to_cmd_args` the user's hyperparameters
into `--name value` arguments, and the TF toolkit adds TF_CONFIG and `s3_utils.configure`'s variables.
This module is the same computation, name for name and value for value, so a script sees the same
thing under cloudtrain's launcher (local backend, cloudtrain's image) as under AWS's toolkit. Where the
two differ on purpose, docs/container-contract.md says so. Stdlib only: it ships in the code tarball.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from cloudtrain.runtime.env import LOCAL_VARIABLE

# params.SAGEMAKER_HYPERPARAMETERS: held back from the script and from SM_FRAMEWORK_PARAMS.
SAGEMAKER_HYPERPARAMETERS = (
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
SAGEMAKER_PREFIX = "sagemaker_"
# What the SDK's TensorFlow estimator sends for `distribution={"multi_worker_mirrored_strategy": ...}`.
MWMS_HYPERPARAMETER = "sagemaker_multi_worker_mirrored_strategy_enabled"
# Flags that make the current instance group a distribution group (get_distribution_instance_groups_...).
_DISTRIBUTION_FLAGS = (
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    MWMS_HYPERPARAMETER,
    "sagemaker_torch_distributed_enabled",
)
# AWS's TF training images set SAGEMAKER_TRAINING_MODULE to this (their Dockerfiles' `ENV`).
FRAMEWORK_MODULE = "sagemaker_tensorflow_container.training:main"
DEFAULT_GROUP = "homogeneousCluster"
LOG_LEVEL_INFO = 20
# s3_utils.configure: forced whatever the job's environment says.
TF_CPP_MIN_LOG_LEVEL = "1"

EntryPointType = Literal["package", "program", "command"]


def split_hyperparameters(hps: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's, SageMaker's): `mapping.split_by_criteria(keys=SAGEMAKER_HYPERPARAMETERS, prefix="sagemaker_")`."""
    sagemaker = {k: v for k, v in hps.items() if k in SAGEMAKER_HYPERPARAMETERS or k.startswith(SAGEMAKER_PREFIX)}
    user = {k: v for k, v in hps.items() if k not in sagemaker}
    return user, sagemaker


def framework_parameters(hps: Mapping[str, Any]) -> dict[str, Any]:
    """additional_framework_parameters: SageMaker's hyperparameters other than SAGEMAKER_HYPERPARAMETERS."""
    return {k: v for k, v in split_hyperparameters(hps)[1].items() if k not in SAGEMAKER_HYPERPARAMETERS}


def user_hyperparameters(hps: Mapping[str, Any], job_name: str | None = None) -> dict[str, Any]:
    """What the script gets; for a tuning job the TF toolkit appends the job's name to an S3 model_dir."""
    user = split_hyperparameters(hps)[0]
    if "_tuning_objective_metric" in hps:
        model_dir = hps.get("model_dir")
        if not (model_dir and str(model_dir).startswith("/opt/ml")):
            user["model_dir"] = f"{model_dir}/{job_name}/model"
    return user


def _decode(value: Any) -> str:
    return "" if value is None else str(value)


def cmd_args(hps: Mapping[str, Any]) -> list[str]:
    """`mapping.to_cmd_args`: `--name value` sorted by name (`-n` for one letter), a dict as `k=v,k=v`."""
    args: list[str] = []
    for name in sorted(hps):
        value = hps[name]
        text = ",".join(f"{k}={v}" for k, v in sorted(value.items())) if isinstance(value, dict) else _decode(value)
        key = _decode(name)
        args += [(f"--{key}" if len(key) > 1 else f"-{key}") if key else "", text]
    return args


def env_value(value: Any) -> str:
    """`mapping.to_env_vars`'s format_value: strings as they are, None as "", anything else compact sorted JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _distribution(resources: Mapping[str, Any], framework: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(distribution instance groups, distribution hosts) as Environment computes them."""
    if "sagemaker_distribution_instance_groups" in framework:
        groups = list(framework["sagemaker_distribution_instance_groups"])
    elif any(framework.get(flag, False) for flag in _DISTRIBUTION_FLAGS):
        groups = [resources.get("current_group_name", DEFAULT_GROUP)]
    else:
        groups = []
    configured = resources.get("instance_groups") or []
    if not configured:
        return groups, list(resources["hosts"])
    return groups, [h for g in configured if g["instance_group_name"] in groups for h in g["hosts"]]


def training_env(
    root: Path,
    hps: Mapping[str, Any],
    resources: Mapping[str, Any],
    input_data_config: Mapping[str, Any],
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """SM_TRAINING_ENV: every property of sagemaker-training 4.8.3's `Environment`, by name."""
    user, sagemaker = split_hyperparameters(hps)
    framework = framework_parameters(hps)
    groups_config = resources.get("instance_groups") or []
    current_group = resources.get("current_group_name", DEFAULT_GROUP)
    distribution_groups, distribution_hosts = _distribution(resources, framework)
    hosts = list(resources["hosts"])
    master = distribution_hosts[0] if distribution_hosts else hosts[0]
    entry = environ.get("SAGEMAKER_PROGRAM") or sagemaker.get("sagemaker_program")
    module_name = str(entry)
    mp = environ.get("SM_HP_MP_PARAMETERS")
    return {
        "additional_framework_parameters": framework,
        "channel_input_dirs": {c: str(root / "input" / "data" / c) for c in input_data_config},
        "current_host": resources["current_host"],
        "current_instance_group": current_group,
        "current_instance_group_hosts": next(
            (g["hosts"] for g in groups_config if g["instance_group_name"] == current_group), []
        ),
        "current_instance_type": resources.get("current_instance_type", "local"),
        "distribution_hosts": distribution_hosts,
        "distribution_instance_groups": distribution_groups,
        "framework_module": environ.get("SAGEMAKER_TRAINING_MODULE", FRAMEWORK_MODULE),
        "hosts": hosts,
        "hyperparameters": user,
        "input_config_dir": str(root / "input" / "config"),
        "input_data_config": dict(input_data_config),
        "input_dir": str(root / "input"),
        "instance_groups": [g["instance_group_name"] for g in groups_config],
        "instance_groups_dict": {g["instance_group_name"]: g for g in groups_config},
        "is_hetero": len(groups_config) > 1,
        "is_master": resources["current_host"] == master,
        "is_modelparallel_enabled": mp and mp != "{}",
        "is_smddpmprun_installed": shutil.which("smddpmprun") is not None,
        "is_smddprun_installed": shutil.which("smddprun") is not None,
        "job_name": environ.get("TRAINING_JOB_NAME"),
        "log_level": sagemaker.get("sagemaker_container_log_level", LOG_LEVEL_INFO),
        "master_hostname": master,
        "model_dir": str(root / "model"),
        "module_dir": str(sagemaker.get("sagemaker_submit_directory", root / "code")),
        "module_name": module_name[:-3] if module_name.endswith(".py") else module_name,
        "network_interface_name": resources.get("network_interface_name", "eth0"),
        "num_cpus": os.cpu_count() or 1,
        "num_gpus": _num_gpus(environ),
        "num_neurons": 0,
        "output_data_dir": str(root / "output" / "data"),
        "output_dir": str(root / "output"),
        "output_intermediate_dir": str(root / "output" / "intermediate"),
        "resource_config": dict(resources),
        "user_entry_point": entry,
    }


def _num_gpus(environ: Mapping[str, str]) -> int:
    """GPUs visible to the container (none on the local backend, which is CPU only)."""
    if environ.get(LOCAL_VARIABLE):
        return 0
    return sum(1 for _ in Path("/dev").glob("nvidia[0-9]*"))


def sm_variables(env: Mapping[str, Any], user_hps: Mapping[str, Any]) -> dict[str, str]:
    """`Environment.to_env_vars()`: the SM_* variables, from SM_TRAINING_ENV's content."""
    names = (
        "hosts",
        "network_interface_name",
        "user_entry_point",
        "resource_config",
        "input_data_config",
        "output_data_dir",
        "current_host",
        "current_instance_type",
        "current_instance_group",
        "current_instance_group_hosts",
        "instance_groups",
        "instance_groups_dict",
        "distribution_instance_groups",
        "is_hetero",
        "module_name",
        "log_level",
        "framework_module",
        "input_dir",
        "input_config_dir",
        "output_dir",
        "num_cpus",
        "num_gpus",
        "num_neurons",
        "model_dir",
        "module_dir",
        "output_intermediate_dir",
    )
    values: dict[str, Any] = {name: env[name] for name in names}
    values.update(
        hps=dict(user_hps),
        framework_params=env["additional_framework_parameters"],
        channels=sorted(env["channel_input_dirs"]),
        training_env={**env, "hyperparameters": dict(user_hps)},
        user_args=cmd_args(user_hps),
    )
    values.update({f"channel_{c}": path for c, path in env["channel_input_dirs"].items()})
    values.update({f"hp_{k}": v for k, v in user_hps.items()})
    return {f"SM_{str(k).upper()}": env_value(v) for k, v in values.items() if k}


def entry_point_type(code_dir: Path, entry: str) -> EntryPointType:
    """`_entry_point_type.get`: `.sh` a command, else a package if the code has a setup.py, else by extension."""
    if entry.endswith(".sh"):
        return "command"
    if (code_dir / "setup.py").exists():
        return "package"
    return "program" if entry.endswith(".py") else "command"


def command(kind: EntryPointType, python: str, entry: str, args: list[str]) -> list[str]:
    """The script's command line as `ProcessRunner._create_command` builds it (5.1.4's argument vector, no shell
    around a Python entry point; 4.8.3 joins the same words with spaces and runs them through `/bin/sh -c`)."""
    if kind == "package":
        return [python, "-m", entry[:-3] if entry.endswith(".py") else entry, *args]
    if kind == "program":
        return [python, entry, *args]
    return ["/bin/sh", "-c", f"./{shlex.quote(entry)} {' '.join(shlex.quote(a) for a in args)}"]


def s3_variables(model_dir: Any, region: str, bucket_region: str | None = None) -> dict[str, str]:
    """`s3_utils.configure`: S3_REGION (the model_dir bucket's region when it is on S3), the forced log level."""
    s3 = isinstance(model_dir, str) and model_dir.startswith("s3://")
    return {
        "S3_REGION": (bucket_region or region) if s3 else region,
        "TF_CPP_MIN_LOG_LEVEL": TF_CPP_MIN_LOG_LEVEL,
        "S3_USE_HTTPS": "1",
    }

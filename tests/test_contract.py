"""cloudtrain's launcher hands a script what AWS's sagemaker-training toolkit hands it, name for name.

The expected values were computed by the toolkit itself (4.8.3, which AWS's TF images run, and 5.1.4) from the
same config files: tests/fixtures/toolkit/generate.py wrote them. Running the real toolkit side by side with
the local backend is tests/sagemaker_control_plane.py's job; this is the quick check of the computation.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from cloudtrain.backends.sagemaker.describe import job_info
from cloudtrain.runtime import contract
from cloudtrain.runtime.env import write_failure
from cloudtrain.runtime.failures import KERAS3_MWMS_REASON
from cloudtrain.runtime.launcher import ContainerConfig, install, prepare, script_command, script_environment
from cloudtrain.spec.models import JobSpec, legacy_keras
from cloudtrain.spec.models import script_environment as spec_environment

FIXTURES = Path(__file__).parent / "fixtures" / "toolkit"
VERSIONS = ("4.8.3", "5.1.4")
ONLY_IN_5 = {"topology"}  # SM_TRAINING_ENV's one key that 4.8.3 does not have


def golden(version: str, root: Path) -> dict[str, Any]:
    text = (FIXTURES / f"toolkit-{version}.json").read_text()
    return json.loads(text.replace("{root}", str(root)).replace("{num_cpus}", str(os.cpu_count())))


@pytest.fixture
def opt_ml(tmp_path: Path) -> Path:
    """An /opt/ml as SageMaker lays it out for the fixture's config files (host algo-2 of 2)."""
    root = tmp_path / "opt-ml"
    shutil.copytree(FIXTURES / "config", root / "input" / "config")
    for channel in ("train", "eval"):
        (root / "input" / "data" / channel).mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "train.py").write_text("")
    return root


def launcher_view(root: Path, environ: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    cfg = ContainerConfig.read(root)
    env = script_environment(cfg, root / "code", {**environ, "CLOUDTRAIN_LOCAL": "1"})
    user = contract.user_hyperparameters(cfg.hyperparameters)
    return script_command(root / "code", cfg.entry_point, contract.cmd_args(user))[1], env


@pytest.mark.parametrize("version", VERSIONS)
def test_every_sm_variable_has_the_toolkits_name_and_value(opt_ml: Path, version: str) -> None:
    expected = golden(version, opt_ml)
    _, env = launcher_view(opt_ml, expected["environ"])

    ours = {k: v for k, v in env.items() if k.startswith("SM_")}
    theirs = dict(expected["env"])
    ours_training, theirs_training = json.loads(ours.pop("SM_TRAINING_ENV")), json.loads(theirs.pop("SM_TRAINING_ENV"))
    assert ours == theirs  # no SM_IS_MASTER, SM_JOB_NAME, SM_MASTER_HOSTNAME, nothing of cloudtrain's own
    assert ours_training == {k: v for k, v in theirs_training.items() if k not in ONLY_IN_5}
    assert "sagemaker_job_name" not in json.loads(ours["SM_FRAMEWORK_PARAMS"])
    assert {k: env[k] for k in expected["set_in_os_environ"]} == expected["set_in_os_environ"]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_script_gets_the_toolkits_argv_including_model_dir(opt_ml: Path, version: str) -> None:
    expected = golden(version, opt_ml)
    command, _ = launcher_view(opt_ml, expected["environ"])

    # 5.1.4 runs `python -- train.py ...`, 4.8.3 `python train.py ...`: the script's sys.argv is the same.
    assert command[1:] == [a for a in expected["command"] if a != "--"]
    assert command[2:] == expected["args"]
    assert command[command.index("--model_dir") + 1] == "s3://ct-out/runs/digits-1/model"
    assert command[command.index("--note") + 1] == "two words"  # one argument (4.8.3's shell splits it in two)


def test_the_log_level_is_forced_and_s3_variables_set_as_the_tf_toolkit_does(opt_ml: Path) -> None:
    _, env = launcher_view(opt_ml, {"TF_CPP_MIN_LOG_LEVEL": "3", "TRAINING_JOB_NAME": "digits-1"})

    assert (env["TF_CPP_MIN_LOG_LEVEL"], env["S3_USE_HTTPS"], env["S3_REGION"]) == ("1", "1", "us-east-1")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(opt_ml / "code")
    tf_config = json.loads(env["TF_CONFIG"])
    assert tf_config == {
        "cluster": {"worker": ["algo-1:8890", "algo-2:8890"]},
        "environment": "cloud",
        "task": {"index": 1, "type": "worker"},
    }


def test_entry_points_follow_the_toolkits_rules(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("")
    (code / "run.sh").write_text("#!/bin/bash\n")
    args = ["--note", "two words"]

    assert contract.command("program", "py", "train.py", args) == ["py", "train.py", "--note", "two words"]
    assert contract.entry_point_type(code, "run.sh") == "command"
    assert contract.command("command", "py", "run.sh", args) == ["/bin/sh", "-c", "./run.sh --note 'two words'"]
    install("command", code, "run.sh", {"CLOUDTRAIN_LOCAL": "1"})
    assert stat.S_IMODE((code / "run.sh").stat().st_mode) == 0o777  # as the toolkit's chmod 511

    (code / "setup.py").write_text("from setuptools import setup\nsetup(name='trainer', py_modules=['train'])\n")
    assert contract.entry_point_type(code, "train.py") == "package"
    assert contract.command("package", "py", "train.py", args) == ["py", "-m", "train", "--note", "two words"]


def test_a_package_is_installed_apart_from_the_users_python(opt_ml: Path) -> None:
    """With a setup.py the toolkit runs `pip install .` and `python -m`; locally the package goes to a folder of
    its own on PYTHONPATH, without dependencies, never into the user's environment."""
    code = opt_ml / "code"
    (code / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='trainer', version='1', packages=['helpers'], package_dir={'': 'src'})\n"
    )
    (code / "src" / "helpers").mkdir(parents=True)
    (code / "src" / "helpers" / "__init__.py").write_text("VALUE = 7\n")

    job = prepare(opt_ml, {"CLOUDTRAIN_LOCAL": "1", "TRAINING_JOB_NAME": "digits-1"})
    try:
        assert job.command[1:3] == ["-m", "train"] and job.package_site is not None
        assert (job.package_site / "helpers" / "__init__.py").is_file()
        assert str(job.package_site) in job.env["PYTHONPATH"].split(os.pathsep)
    finally:
        shutil.rmtree(job.package_site or opt_ml / "none", ignore_errors=True)


def _spec(folder: Path, script: str = "import tensorflow as tf\n", **distribution: Any) -> JobSpec:
    (folder / "train.py").write_text(script)
    return JobSpec.model_validate(
        {
            "name": "k",
            "code": {"source_dir": str(folder), "entry_point": "train.py"},
            "resources": {"instance_count": distribution.pop("instance_count", 2)},
            "distribution": distribution,
            "environment": distribution.pop("environment", {}),
        }
    )


@pytest.mark.parametrize(
    ("distribution", "legacy"),
    [
        ({}, True),  # auto: MWMS on 2 instances, a plain Keras script
        ({"script": "from cloudtrain.runtime import fit, make_strategy\n"}, False),  # its own loop runs on Keras 3
        ({"instance_count": 1}, False),
        ({"strategy": "mirrored"}, False),
        ({"keras": "keras3"}, False),
        ({"keras": "legacy", "instance_count": 1}, True),
        ({"keras": "legacy", "script": "import cloudtrain.runtime\n"}, True),
        ({"keras": "legacy", "environment": {"TF_USE_LEGACY_KERAS": "0"}}, False),  # the user's own wins
    ],
)
def test_keras_auto_picks_tf_keras_exactly_where_model_fit_needs_it(
    tmp_path: Path, distribution: dict[str, Any], legacy: bool
) -> None:
    spec = _spec(tmp_path, **distribution)
    assert legacy_keras(spec) is legacy
    assert (spec_environment(spec).get("TF_USE_LEGACY_KERAS") == "1") is legacy


def test_a_keras3_mwms_failure_reads_as_one_line_whoever_wrote_it(tmp_path: Path) -> None:
    """AWS's toolkit puts the script's error output into FailureReason; the SageMaker backend shows one line."""
    dump = "ValueError: Attempt to convert a value (PerReplica:{\n  0: <tf.Tensor: shape=(64, 10) ...>\n}) with an "
    toolkit_reason = f'ExecuteUserScriptError:\nExitCode 1\nErrorMessage "{dump}unsupported type"\nCommand "..."'
    raw = {"TrainingJobName": "j-1", "TrainingJobStatus": "Failed", "FailureReason": toolkit_reason}
    assert job_info(raw).failure_reason == KERAS3_MWMS_REASON
    assert job_info({**raw, "FailureReason": "AlgorithmError: out of memory"}).failure_reason == (
        "AlgorithmError: out of memory"
    )

    write_failure(dump, {"SM_OUTPUT_DIR": str(tmp_path)})  # what cloudtrain.runtime.report_failures writes
    assert (tmp_path / "failure").read_text() == KERAS3_MWMS_REASON + "\n"

"""cloudtrain.runtime.env: TF_CONFIG, the worker's view of the container contract, failure reasons. No TensorFlow."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtrain.runtime.env import TrainingEnv, build_tf_config, coerce, failure_file, report_failures, write_failure

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "cloudtrain" / "runtime"


# --- TF_CONFIG ------------------------------------------------------------------------------------------------


# TF_CONFIG as AWS's toolkit sets it: `json.dumps(_build_tf_config_for_mwms(hosts, current_host))` in
# sagemaker-tensorflow-training 20.5.0 (sagemaker_tensorflow_container/training.py), run for these inputs.
TOOLKIT_TF_CONFIG = [
    (
        ["algo-1"],
        "algo-1",
        '{"cluster": {"worker": ["algo-1:8890"]}, "environment": "cloud", "task": {"index": 0, "type": "worker"}}',
    ),
    (
        ["algo-1", "algo-2"],
        "algo-2",
        '{"cluster": {"worker": ["algo-1:8890", "algo-2:8890"]}, "environment": "cloud", '
        '"task": {"index": 1, "type": "worker"}}',
    ),
    (
        ["algo-1", "algo-2", "algo-3", "algo-4"],
        "algo-3",
        '{"cluster": {"worker": ["algo-1:8890", "algo-2:8890", "algo-3:8890", "algo-4:8890"]}, '
        '"environment": "cloud", "task": {"index": 2, "type": "worker"}}',
    ),
]


@pytest.mark.parametrize(("hosts", "current", "toolkit"), TOOLKIT_TF_CONFIG)
def test_tf_config_is_the_sagemaker_toolkits(hosts: list[str], current: str, toolkit: str) -> None:
    assert json.dumps(build_tf_config(hosts, current)) == toolkit


def test_tf_config_with_loopback_addresses() -> None:
    hosts = ["algo-1", "algo-2"]
    addresses = {"algo-2": "127.0.0.1:40002", "algo-1": "127.0.0.1:40001"}
    config = build_tf_config(hosts, "algo-2", addresses)
    assert config["cluster"]["worker"] == ["127.0.0.1:40001", "127.0.0.1:40002"]  # in host order
    assert config["task"] == {"index": 1, "type": "worker"}
    json.dumps(config)  # goes into an environment variable


@pytest.mark.parametrize(
    ("hosts", "current", "addresses", "message"),
    [
        (["algo-1"], "algo-2", None, "not one of"),
        ([], "algo-1", None, "empty"),
        (["algo-1", "algo-1"], "algo-1", None, "duplicates"),
        (["algo-1", "algo-2"], "algo-1", {"algo-1": "127.0.0.1:1"}, "no address for algo-2"),
    ],
)
def test_tf_config_rejects_inconsistent_input(
    hosts: list[str], current: str, addresses: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_tf_config(hosts, current, addresses)


# --- TrainingEnv ----------------------------------------------------------------------------------------------


def test_defaults_without_any_variable(tmp_path: Path) -> None:
    """A script run by hand: everything relative to the root, one host, chief, no hyperparameters."""
    (tmp_path / "input" / "data" / "train").mkdir(parents=True)
    (tmp_path / "input" / "data" / "eval").mkdir()
    env = TrainingEnv.from_environ({"CLOUDTRAIN_OPT_ML": str(tmp_path)})
    assert env.root == tmp_path
    assert (env.hosts, env.current_host) == (["algo-1"], "algo-1")
    assert env.channels == {"eval": tmp_path / "input/data/eval", "train": tmp_path / "input/data/train"}
    assert env.hyperparameters == {}
    assert env.model_dir == tmp_path / "model"
    assert env.output_dir == tmp_path / "output"
    assert env.output_data_dir == tmp_path / "output" / "data"
    assert env.checkpoint_dir == tmp_path / "checkpoints"
    assert env.failure_file == tmp_path / "output" / "failure"
    assert env.num_gpus == 0 and env.num_cpus >= 1
    assert env.tf_config is None
    assert env.is_chief and env.num_workers == 1 and env.task_index == 0 and not env.workers_share_host


def test_default_root_is_opt_ml() -> None:
    env = TrainingEnv.from_environ({})
    assert env.root == Path("/opt/ml") and env.model_dir == Path("/opt/ml/model")
    assert env.checkpoint_dir == Path("/opt/ml/checkpoints")


def test_config_files_without_sm_variables(tmp_path: Path) -> None:
    """An image without the toolkit has only /opt/ml/input/config: hyperparameter values are JSON strings there."""
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    hps = {"epochs": "12", "learning_rate": "0.002", "name": '"digits"', "raw": "not json", "sagemaker_program": '"t"'}
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    env = TrainingEnv.from_environ({"CLOUDTRAIN_OPT_ML": str(tmp_path)})
    assert (env.hosts, env.current_host) == (["algo-1", "algo-2"], "algo-2")
    assert env.hyperparameters == {"epochs": 12, "learning_rate": 0.002, "name": "digits", "raw": "not json"}


def test_sm_variables_win(tmp_path: Path) -> None:
    tf_config = build_tf_config(["algo-1", "algo-2"], "algo-2", {"algo-1": "127.0.0.1:1", "algo-2": "127.0.0.1:2"})
    environ = {
        "CLOUDTRAIN_OPT_ML": str(tmp_path / "root"),
        "CLOUDTRAIN_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "SM_HOSTS": '["algo-1", "algo-2"]',
        "SM_CURRENT_HOST": "algo-2",
        "SM_CHANNELS": '["train", "eval"]',
        "SM_CHANNEL_TRAIN": str(tmp_path / "t"),
        "SM_CHANNEL_EVAL": str(tmp_path / "e"),
        "SM_HPS": json.dumps({"epochs": 12, "batch_size": 64, "learning_rate": 0.002, "augment": True}),
        "SM_MODEL_DIR": str(tmp_path / "m"),
        "SM_OUTPUT_DIR": str(tmp_path / "o"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "od"),
        "SM_NUM_GPUS": "4",
        "SM_NUM_CPUS": "8",
        "TF_CONFIG": json.dumps(tf_config),
    }
    env = TrainingEnv.from_environ(environ)
    assert env.channels == {"train": tmp_path / "t", "eval": tmp_path / "e"}
    assert env.channel("train") == tmp_path / "t"
    assert env.hyperparameters == {"epochs": 12, "batch_size": 64, "learning_rate": 0.002, "augment": True}
    assert env.model_dir == tmp_path / "m"
    assert env.output_data_dir == tmp_path / "od"
    assert env.failure_file == tmp_path / "o" / "failure" == failure_file(environ)
    assert env.checkpoint_dir == tmp_path / "ckpt"
    assert (env.num_gpus, env.num_cpus) == (4, 8)
    assert env.tf_config == tf_config
    assert not env.is_chief and env.task_index == 1 and env.num_workers == 2 and env.workers_share_host


def test_unknown_channel_names_the_channels(tmp_path: Path) -> None:
    env = TrainingEnv.from_environ({"SM_CHANNELS": '["train"]', "SM_CHANNEL_TRAIN": str(tmp_path)})
    with pytest.raises(KeyError, match=r"no channel 'eval' \(channels: train\)"):
        env.channel("eval")


@pytest.mark.parametrize(
    ("task", "cluster", "chief"),
    [
        ({"type": "worker", "index": 0}, {"worker": ["a:1", "b:1"]}, True),
        ({"type": "worker", "index": 1}, {"worker": ["a:1", "b:1"]}, False),
        ({"type": "chief", "index": 0}, {"chief": ["a:1"], "worker": ["b:1"]}, True),
        ({"type": "worker", "index": 0}, {"chief": ["a:1"], "worker": ["b:1"]}, False),
    ],
)
def test_chief(task: dict[str, object], cluster: dict[str, list[str]], chief: bool) -> None:
    env = TrainingEnv.from_environ({"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})})
    assert env.is_chief is chief
    assert env.num_workers == 2


def test_workers_on_real_hosts_do_not_share_a_machine() -> None:
    env = TrainingEnv.from_environ(
        {"SM_HOSTS": '["algo-1", "algo-2"]', "TF_CONFIG": json.dumps(build_tf_config(["algo-1", "algo-2"], "algo-1"))}
    )
    assert env.is_chief and not env.workers_share_host


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SM_HPS": "{epochs: 1}"}, "SM_HPS is not valid JSON"),
        ({"SM_HPS": "[1]"}, "SM_HPS must be a JSON object"),
        ({"TF_CONFIG": "{"}, "TF_CONFIG is not valid JSON"),
        ({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-9"}, "not one of the hosts"),
    ],
)
def test_malformed_variables_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingEnv.from_environ(environ)


# --- hyperparameter typing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "like", "expected"),
    [
        (12, 0, 12),
        ("12", 0, 12),
        (12.0, 0, 12),
        ("12.0", 0, 12),
        ("0.002", 0.1, 0.002),
        (3, 0.1, 3.0),
        ("true", False, True),
        ("False", True, False),
        ("1", False, True),
        (True, False, True),
        (12, "", "12"),
        ("adam", "", "adam"),
    ],
)
def test_coerce(value: object, like: object, expected: object) -> None:
    result = coerce(value, like)  # type: ignore[type-var]
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(("value", "like"), [("12.5", 0), (12.5, 0), (True, 0), ("maybe", False), ("x", 0.1)])
def test_coerce_rejects(value: object, like: object) -> None:
    with pytest.raises(ValueError):
        coerce(value, like)  # type: ignore[type-var]


def test_hp_defaults_and_errors() -> None:
    env = TrainingEnv.from_environ({"SM_HPS": json.dumps({"epochs": "12", "learning_rate": 0.002, "bad": "x"})})
    assert env.hp("epochs", 3) == 12
    assert env.hp("learning_rate", 0.1) == 0.002
    assert env.hp("batch_size", 64) == 64
    with pytest.raises(ValueError, match="hyperparameter bad"):
        env.hp("bad", 1)


# --- failure reasons ------------------------------------------------------------------------------------------


def test_report_failures_writes_one_line_and_reraises(tmp_path: Path) -> None:
    environ = {"CLOUDTRAIN_OPT_ML": str(tmp_path)}
    with pytest.raises(FileNotFoundError), report_failures(environ):
        raise FileNotFoundError("no digits.npz in\n/opt/ml/input/data/train")
    assert (tmp_path / "output" / "failure").read_text() == (
        "FileNotFoundError: no digits.npz in /opt/ml/input/data/train\n"
    )


def test_report_failures_ignores_a_clean_exit(tmp_path: Path) -> None:
    environ = {"CLOUDTRAIN_OPT_ML": str(tmp_path)}
    with pytest.raises(SystemExit), report_failures(environ):
        sys.exit(0)
    assert not (tmp_path / "output" / "failure").exists()
    with pytest.raises(SystemExit), report_failures(environ):
        sys.exit(3)
    assert (tmp_path / "output" / "failure").read_text() == "exited with status 3\n"


def test_write_failure_is_bounded_and_never_raises(tmp_path: Path) -> None:
    write_failure("x" * 5000, {"SM_OUTPUT_DIR": str(tmp_path)})
    assert len((tmp_path / "failure").read_text()) == 1024 + 1
    (tmp_path / "file").write_text("")
    write_failure("oops", {"SM_OUTPUT_DIR": str(tmp_path / "file" / "sub")})  # cannot write: prints, no error


# --- what the runtime may import ------------------------------------------------------------------------------


def test_env_imports_neither_tensorflow_nor_numpy() -> None:
    code = (
        "import sys, cloudtrain.runtime, cloudtrain.runtime.env; "
        "bad = {'tensorflow', 'numpy', 'keras'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_runtime_imports_only_what_training_images_have() -> None:
    """cloudtrain.runtime ships in the code tarball and runs in AWS's stock images: stdlib, numpy, TF, matplotlib.

    An import inside `try: ... except ImportError` is optional and may name anything.
    """
    allowed = set(sys.stdlib_module_names) | {"numpy", "tensorflow", "matplotlib", "keras", "tf_keras"}
    for path in sorted(RUNTIME.glob("*.py")):
        tree = ast.parse(path.read_text())
        optional = {
            id(node)
            for guard in ast.walk(tree)
            if isinstance(guard, ast.Try) and any(_catches_import_error(h) for h in guard.handlers)
            for statement in guard.body
            for node in ast.walk(statement)
        }
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or name.startswith("cloudtrain.runtime"), f"{path.name} imports {name}"


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds)

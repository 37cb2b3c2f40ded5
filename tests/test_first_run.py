"""The warnings that save a new user a wasted run, each as the user meets it: a command and what it prints.

A project made by `cloudtrain init`, changed the way a user bringing their own script would change it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirun import cloudtrain

STRICT_SCRIPT = """\
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()
print("training for", args.epochs)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    made = cloudtrain("init", str(tmp_path / "proj"), home=tmp_path / "home")
    assert made.code == 0, made.err
    return tmp_path / "proj"


def test_validate_warns_about_a_strict_parse_args_without_model_dir(project: Path, tmp_path: Path) -> None:
    (project / "code" / "train.py").write_text(STRICT_SCRIPT)
    checked = cloudtrain("validate", str(project / "job.yaml"), home=tmp_path / "home")
    assert checked.code == 0, checked.err
    warnings = [line for line in checked.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, checked.err
    assert "code.entry_point: train.py calls parse_args() and never declares --model_dir" in warnings[0]
    assert 'parser.add_argument("--model_dir")' in warnings[0] and "parse_known_args()" in warnings[0]


def test_the_scripts_init_writes_get_no_such_warning(project: Path, tmp_path: Path) -> None:
    for entry_point in ("train.py", "train_keras.py"):
        checked = cloudtrain(
            "validate", str(project / "job.yaml"), "--set", f"code.entry_point={entry_point}", home=tmp_path / "home"
        )
        assert checked.code == 0 and "warning" not in checked.err, checked.err


def test_set_of_a_hyperparameter_the_spec_lacks_asks_whether_it_was_meant(project: Path, tmp_path: Path) -> None:
    typo = cloudtrain("validate", str(project / "job.yaml"), "--set", "hyperparameters.epoch=3", home=tmp_path / "home")
    assert typo.code == 0, typo.err
    assert typo.err.count("\n") == 1, typo.err  # one line, not an error
    assert "--set hyperparameters.epoch: the spec has no hyperparameter 'epoch' (did you mean 'epochs'?)" in typo.err
    meant = cloudtrain(
        "validate", str(project / "job.yaml"), "--set", "hyperparameters.epochs=3", home=tmp_path / "home"
    )
    assert meant.code == 0 and meant.err == "", meant.err


def test_submit_says_it_too(project: Path, tmp_path: Path) -> None:
    dry = cloudtrain(
        "submit",
        str(project / "job.yaml"),
        "--backend",
        "local",
        "--dry-run",
        "--set",
        "hyperparameters.learning=0.1",
        home=tmp_path / "home",
    )
    assert dry.code == 0, dry.err
    assert "the spec has no hyperparameter 'learning' (did you mean 'learning_rate'?)" in dry.err


# --- which backend and region, and why -------------------------------------------------------------------------


def aws_files(home: Path, *, region: str | None = "eu-west-1") -> dict[str, str]:
    """AWS configured only in ~/.aws files (as `aws configure` leaves it): nothing AWS_* in the environment."""
    aws = home / ".aws"
    aws.mkdir(parents=True)
    (aws / "credentials").write_text("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = x\n")
    if region:
        (aws / "config").write_text(f"[default]\nregion = {region}\n")
    return {"HOME": str(home)}


def test_config_shows_the_backend_and_region_aws_files_give(tmp_path: Path) -> None:
    env = aws_files(tmp_path / "user")
    shown = cloudtrain("config", home=tmp_path / "home", env=env)
    assert shown.code == 0, shown.err
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in shown.out.splitlines()[1:] if line.strip()}
    assert rows["backend"] == ["sagemaker", "~/.aws/credentials (AWS is configured)"]
    assert rows["region"] == ["eu-west-1", "~/.aws/config [default]"]
    as_json = cloudtrain("config", "--json", home=tmp_path / "home", env=env).json()["settings"]
    assert as_json["backend"] == {"value": "sagemaker", "source": "~/.aws/credentials (AWS is configured)"}


def test_config_with_aws_keys_in_the_environment_and_with_none(tmp_path: Path) -> None:
    keys = {"HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"}
    shown = cloudtrain("config", "--json", home=tmp_path / "home", env={**keys, "AWS_DEFAULT_REGION": "us-west-2"})
    settings = shown.json()["settings"]
    assert settings["backend"] == {
        "value": "sagemaker",
        "source": "AWS_ACCESS_KEY_ID in the environment (AWS is configured)",
    }
    assert settings["region"] == {"value": "us-west-2", "source": "AWS_DEFAULT_REGION"}
    assert "AKIAEXAMPLE" not in shown.out
    bare = cloudtrain("config", "--json", home=tmp_path / "home", env={"HOME": str(tmp_path)}).json()["settings"]
    assert bare["backend"] == {"value": "local", "source": "no AWS configuration"}
    assert bare["region"] == {"value": None, "source": "not set"}


def test_submit_says_which_backend_it_chose_and_why(project: Path, tmp_path: Path) -> None:
    env = aws_files(tmp_path / "user")
    dry = cloudtrain("submit", str(project / "job.yaml"), "--dry-run", home=tmp_path / "home", env=env)
    assert (
        "note: no backend named: sagemaker, since AWS is configured (~/.aws/credentials); --backend local trains on "
        "this machine" in dry.err
    ), dry.err
    named = cloudtrain("submit", str(project / "job.yaml"), "--dry-run", "--backend", "local", home=tmp_path / "home")
    assert named.code == 0 and "no backend named" not in named.err, named.err


def test_local_submit_warns_when_this_tensorflow_is_not_the_images(project: Path, tmp_path: Path) -> None:
    from cloudtrain.spec.lint import tensorflow_here

    here = tensorflow_here()
    if here is None:
        pytest.skip("TensorFlow is not installed here: nothing to compare the image's version with")
    minor = ".".join(here.split(".")[:2])
    other = "2.16" if minor != "2.16" else "2.19"
    spec = str(project / "job.yaml")
    differs = cloudtrain(
        "submit",
        spec,
        "--backend",
        "local",
        "--dry-run",
        "--set",
        f"image.framework_version={other}",
        home=tmp_path / "home",
    )
    assert differs.code == 0, differs.err
    assert (
        f"warning: {spec}: image.framework_version: this machine trains with TensorFlow {here}, the job's image on "
        f"SageMaker runs {other};" in differs.err
    ), differs.err
    same = cloudtrain(
        "submit",
        spec,
        "--backend",
        "local",
        "--dry-run",
        "--set",
        f"image.framework_version={minor}",
        home=tmp_path / "home",
    )
    assert same.code == 0 and "warning" not in same.err, same.err


# --- a job that ends without metrics, or without a model -------------------------------------------------------

NO_MODEL_SCRIPT = """\
import argparse, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
args, _ = parser.parse_known_args()
for epoch in range(args.epochs):
    print(f"Epoch {epoch + 1}: loss 0.5", flush=True)
pathlib.Path("model.txt").write_text("weights")  # the working folder: never part of the model
"""
QUICK = ["--backend", "local", "--set", "resources.instance_count=1", "--set", "distribution.keras=keras3"]


def finished_job(project: Path, home: Path, *sets: str) -> str:
    (project / "code" / "train.py").write_text(NO_MODEL_SCRIPT)
    done = cloudtrain("submit", str(project / "job.yaml"), *QUICK, *sets, "--wait", "--json", home=home)
    assert done.code == 0, done.err
    assert done.json()["job"]["status"] == "Completed"
    return str(done.json()["job"]["name"])


def test_a_job_without_metrics_regexes_says_why_it_has_no_metrics(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    job = finished_job(project, home, "--set", "metrics=[]")
    shown = cloudtrain("status", job, home=home)
    assert shown.code == 0, shown.err
    assert "metrics     none: the spec has no metrics: regexes" in shown.out, shown.out


def test_a_job_whose_log_matches_no_regex_says_so(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    job = finished_job(project, home)  # init's regexes look for `epoch=N loss=...`: this script prints otherwise
    shown = cloudtrain("status", job, home=home)
    assert (
        f"metrics     none: no log line matched the spec's metrics regexes (compare them with cloudtrain logs {job};"
        in (shown.out)
    ), shown.out


def test_fetch_model_says_the_model_folder_is_empty(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    job = finished_job(project, home)
    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "fetched"), home=home)
    assert fetched.code == 0, fetched.err
    assert "the model folder is empty: the script saved nothing in SM_MODEL_DIR (/opt/ml/model)" in fetched.out


# --- the text dry-run --------------------------------------------------------------------------------------------


def test_the_text_dry_run_shows_its_notes_files_and_upload_sizes(project: Path, tmp_path: Path) -> None:
    offline = {  # AWS configured, but not reachable: the plan is made with a placeholder account, and says so
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens
        "CLOUDTRAIN_ROLE_ARN": "arn:aws:iam::123456789012:role/SageMakerTraining",
    }
    dry = cloudtrain(
        "submit", str(project / "job.yaml"), "--backend", "sagemaker", "--dry-run", home=tmp_path / "h", env=offline
    )
    assert dry.code == 0, dry.err
    lines = dry.out.splitlines()
    assert "  train.py" in lines and "  train_keras.py" in lines
    assert any(line.startswith("code files (") for line in lines)
    uploads = [line.split() for line in lines if line.startswith(("  code ", "  data "))]
    assert [row[:2] for row in uploads] == [["code", "sourcedir.tar.gz"], ["data", "train"], ["data", "eval"]]
    assert all(row[3] in ("B", "KiB") for row in uploads), uploads
    assert any(line.startswith("  at most ") and line.endswith(" to upload") for line in lines)
    note = next(line for line in lines if line.startswith("note: AWS not reached"))
    assert "account shown as ACCOUNT-ID" in note
    assert lines[-1] == "dry run: nothing was created"


# --- TensorFlow's start-up noise in `logs` -----------------------------------------------------------------------

# What TensorFlow 2.19's GPU build prints on import (AWS's image), each worker, before the script's first line.
TF_STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "E0000 00:00:1733475600.123456      77 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
    "register factory for plugin cuDNN when one has already been registered",
    "2026-12-07 00:00:00.123456: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors from different computation orders.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
]
NOISY_SCRIPT = f"""\
import os, pathlib, sys
for line in {TF_STARTUP!r}:
    print(line, file=sys.stderr, flush=True)
print("epoch=1 loss=0.5000 accuracy=0.9000 val_loss=0.5000 val_accuracy=0.9000", file=sys.stderr, flush=True)
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.txt").write_text("weights")
"""  # all on stderr: one stream, so the order is the script's


def test_logs_fold_tensorflows_startup_lines_into_one_per_host(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (project / "code" / "train.py").write_text(NOISY_SCRIPT)
    two = ["--backend", "local", "--set", "distribution.keras=keras3", "--wait", "--json"]
    done = cloudtrain("submit", str(project / "job.yaml"), *two, home=home)
    assert done.code == 0, done.err
    job = done.json()["job"]["name"]
    assert "oneDNN custom operations are on" not in done.err  # --wait streams the logs folded too
    assert done.err.count("TensorFlow start-up line(s) folded") == 2, done.err

    shown = cloudtrain("logs", job, home=home)
    assert shown.code == 0, shown.err
    assert "oneDNN custom operations are on" not in shown.out
    folded = [line for line in shown.out.splitlines() if "TensorFlow start-up line(s) folded" in line]
    assert len(folded) == 2, shown.out  # one per host
    for host, line in zip(("algo-1", "algo-2"), sorted(folded, key=lambda line: line.split()[1]), strict=True):
        assert line.split()[1] == host
        assert "[4 TensorFlow start-up line(s) folded: oneDNN, absl, CPU-instruction and CUDA notices" in line
        assert f"harmless (cloudtrain logs {job} --all shows them)]" in line
    assert "epoch=1 loss=0.5000" in shown.out

    everything = cloudtrain("logs", job, "--all", home=home)
    assert everything.out.count("oneDNN custom operations are on") == 2 and "folded" not in everything.out
    as_json = cloudtrain("logs", job, "--json", home=home)
    assert as_json.out.count("oneDNN custom operations are on") == 2  # machine output is never folded


def test_fetch_model_says_how_to_load_the_model(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (project / "code" / "train.py").write_text(
        "import os, pathlib\npathlib.Path(os.environ['SM_MODEL_DIR'], 'model.keras').write_bytes(b'PK')\n"
    )
    done = cloudtrain("submit", str(project / "job.yaml"), *QUICK, "--wait", "--json", home=home)
    assert done.code == 0, done.err
    fetched = cloudtrain("fetch-model", done.json()["job"]["name"], "--to", str(tmp_path / "fetched"), home=home)
    assert fetched.code == 0, fetched.err
    model = tmp_path / "fetched" / "model" / "model.keras"
    assert f"  load it      tf.keras.models.load_model({str(model)!r})" in fetched.out.splitlines()


def test_logs_show_a_keras_progress_bar_as_its_last_state(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    states = [f"{step}/4 [{'=' * step}{'.' * (4 - step)}] - loss: {1 / step:.4f}" for step in range(1, 5)]
    bar = "\b" * 40  # Keras's verbose=1 redraws its bar with backspaces: all of it lands on one log line
    (project / "code" / "train.py").write_text(f"print({bar.join(states)!r}, flush=True)\n")
    done = cloudtrain("submit", str(project / "job.yaml"), *QUICK, "--wait", "--json", home=home)
    assert done.code == 0, done.err
    job = done.json()["job"]["name"]
    shown = cloudtrain("logs", job, home=home)
    assert shown.code == 0, shown.err
    assert [line.split(" ", 2)[2] for line in shown.out.splitlines() if "/4 [" in line] == ["4/4 [====] - loss: 0.2500"]
    raw = cloudtrain("logs", job, "--all", home=home)
    assert "1/4 [=...] - loss: 1.0000" in raw.out  # shown inert (\x08), but whole

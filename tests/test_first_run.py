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

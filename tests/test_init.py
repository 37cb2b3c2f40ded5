"""`cloudtrain init`: a project that validates as written, and whose printed next steps lead to a fetched model."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.clirun import Result, cloudtrain

FILES = ("job.yaml", "code/train.py", "code/train_keras.py", "data/train/train.csv", "data/eval/eval.csv")


def run(*args: str, cwd: Path, home: Path, timeout: float = 600) -> Result:
    """`cloudtrain ARGS` in `cwd`, as a user in that folder types it (no AWS, a config folder of its own)."""
    return cloudtrain(*args, home=home, env={"CI": "true"}, timeout=timeout, cwd=cwd)


def next_commands(output: str) -> list[list[str]]:
    """The commands init prints under "next:", without their comments."""
    block = output.split("next:\n", 1)[1]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("  cloudtrain ")]
    return [shlex.split(line)[1:] for line in lines]


def test_init_writes_a_project_that_validates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = run("init", "My Project", cwd=tmp_path, home=home)
    assert made.code == 0, made.err
    for name in FILES:
        assert (tmp_path / "My Project" / name).is_file(), name
    checked = run("validate", "My Project/job.yaml", "--json", cwd=tmp_path, home=home)
    assert checked.code == 0, checked.err
    assert checked.json() == [{"file": "My Project/job.yaml", "name": "my-project", "valid": True}]
    assert [c[0] for c in next_commands(made.out)] == ["validate", "submit", "fetch-model"]
    assert next_commands(made.out)[0] == ["validate", "My Project/job.yaml"]  # quoted for the shell
    rows = (tmp_path / "My Project" / "data" / "train" / "train.csv").read_text().splitlines()
    assert rows[0] == "x0,x1,x2,x3,label" and len(rows) == 601
    assert {row.rsplit(",", 1)[1] for row in rows[1:]} == {"0", "1", "2"}


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run("init", "--name", "first", cwd=tmp_path, home=home).code == 0
    spec = tmp_path / "job.yaml"
    spec.write_text(spec.read_text() + "# my edit\n")
    again = run("init", cwd=tmp_path, home=home)
    assert again.code == 2 and again.out == ""
    assert again.err.startswith("error: not overwriting job.yaml, code/train.py") and "--force" in again.err
    assert len(again.err.splitlines()) == 1
    assert spec.read_text().endswith("# my edit\n")  # nothing was written

    forced = run("init", "--force", "--name", "second", cwd=tmp_path, home=home)
    assert forced.code == 0, forced.err
    assert "name: second" in spec.read_text() and "# my edit" not in spec.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("init", "--name", "bad_name"), "--name 'bad_name': use letters, digits and hyphens"),
        (("init", "a-file"), "a-file exists and is not a folder"),
    ],
)
def test_init_bad_input_is_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "a-file").write_text("x")
    result = run(*args, cwd=tmp_path, home=tmp_path / "home")
    assert result.code == 2 and result.err.startswith(f"error: {message}")
    assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err


def test_help_leads_a_newcomer_from_init_to_a_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    top = run("--help", cwd=tmp_path, home=home).out
    assert "cloudtrain init my-job" in top and "cloudtrain fetch-model JOB" in top
    assert "cloudtrain validate" in run("init", "--help", cwd=tmp_path, home=home).out
    submit = run("submit", "--help", cwd=tmp_path, home=home).out
    assert "cloudtrain logs JOB --follow" in submit and "cloudtrain fetch-model JOB" in submit
    assert "eval_report.json" in run("fetch-model", "--help", cwd=tmp_path, home=home).out


@pytest.mark.slow
def test_init_then_the_printed_commands_train_and_fetch_a_model(tmp_path: Path) -> None:
    """init, then exactly the commands it prints (JOB: the name submit reports): two TensorFlow workers."""
    home = tmp_path / "home"
    made = run("init", "proj", cwd=tmp_path, home=home)
    assert made.code == 0, made.err
    validate, submit, fetch = next_commands(made.out)

    assert run(*validate, cwd=tmp_path, home=home).code == 0
    trained = run(*submit, cwd=tmp_path, home=home)
    assert trained.code == 0, trained.err[-3000:]
    job = re.search(r"job (\S+) submitted on local", trained.err).group(1)
    assert f"cloudtrain fetch-model {job}" in trained.out
    assert "  metric      val_accuracy = " in trained.out

    fetched = run(*[job if word == "JOB" else word for word in fetch], cwd=tmp_path, home=home)
    assert fetched.code == 0, fetched.err
    report = json.loads((tmp_path / "fetched" / "output" / "eval_report.json").read_text())
    assert report["num_workers"] == 2 and report["accuracy"] > 0.8
    assert (tmp_path / "fetched" / "model" / "model.keras").is_file()
    assert "  load it      tf.keras.models.load_model(" in fetched.out
    assert "evaluation: accuracy=" in fetched.out


@pytest.mark.slow
def test_init_plain_keras_script_trains_on_two_workers_unchanged(tmp_path: Path) -> None:
    """The scaffold's other way: train_keras.py, plain Keras model.fit under MultiWorkerMirroredStrategy."""
    home = tmp_path / "home"
    assert run("init", "proj", cwd=tmp_path, home=home).code == 0
    assert "import cloudtrain" not in (tmp_path / "proj" / "code" / "train_keras.py").read_text()

    spec = ["proj/job.yaml", "--backend", "local", "--set", "code.entry_point=train_keras.py"]
    trained = run("submit", *spec, "--wait", "--json", cwd=tmp_path, home=home)
    assert trained.code == 0, trained.err[-3000:]
    job = trained.json()["job"]
    assert job["instance_count"] == 2 and job["metrics"]["val_accuracy"] > 0.8

    fetched = run("fetch-model", job["name"], "--to", "fetched", cwd=tmp_path, home=home)
    assert fetched.code == 0, fetched.err
    assert (tmp_path / "fetched" / "model" / "model.keras").is_file()
    assert "  load it      tf.keras.models.load_model(" in fetched.out

"""The command line as a user meets it: help, bad input, JSON output, exit codes (fast: no TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.clirun import REPO, cloudtrain


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


TINY_SPEC = """\
name: tiny
code: {source_dir: code, entry_point: train.py}
resources: {instance_count: 2}
data: {train: data}
hyperparameters: {epochs: 2}
metrics:
  - {name: score, regex: "score=([0-9.]+)"}
"""


def write_job(folder: Path, script: str, extra: str = "", spec: str = TINY_SPEC) -> Path:
    """A small job whose entry point is plain Python: the contract without TensorFlow's start-up time."""
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "train.py").write_text(textwrap.dedent(script))
    (folder / "data").mkdir()
    (folder / "data" / "numbers.txt").write_text("1 2 3\n")
    path = folder / "job.yaml"
    path.write_text(spec + extra)
    return path


TINY = """\
    import json, os, sys
    host = os.environ["SM_CURRENT_HOST"]
    print(f"hello from {host} with {sys.argv[1:]}", flush=True)
    print(f"score=0.{len(os.listdir(os.environ['SM_CHANNEL_TRAIN']))}5", flush=True)
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
        open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "w").write("w")
        open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "eval_report.json"), "w").write('{"accuracy": 0.5}')
    """


def test_help_is_fast_and_imports_nothing_heavy(home: Path) -> None:
    result = cloudtrain("--help", home=home)
    assert result.code == 0
    for command in ("submit", "status", "logs", "stop", "fetch-model", "validate", "schema"):
        assert command in result.out
    heavy = "('tensorflow', 'boto3', 'botocore', 'pydantic')"
    probe = f"import sys, cloudtrain.cli.app; print(sorted(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert loaded.stdout.strip() == "[]"
    # the top-level help does not even import typer: only os, sys and the text itself
    imported = modules_imported_by("--help", env={"COLUMNS": "200"})
    assert "cloudtrain.cli.help_text" in imported and not {"typer", "shutil", "typing"} & imported


def modules_imported_by(*args: str, env: dict[str, str]) -> set[str]:
    """Every module `python -m cloudtrain ARGS` imports (from -X importtime); the command must succeed."""
    timed = [sys.executable, "-X", "importtime", "-m", "cloudtrain", *args]
    run = subprocess.run(timed, env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-500:]
    return {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}


def test_status_imports_neither_pydantic_nor_the_spec(home: Path) -> None:
    """`status` is what CI loops call: no spec is read, so nothing validates (typer itself must not either)."""
    imported = modules_imported_by("status", "--json", env={"CLOUDTRAIN_HOME": str(home)})
    assert "cloudtrain.api" in imported and not {"pydantic", "cloudtrain.spec.models", "yaml"} & imported


def test_help_and_version_are_typers_own_text_for_every_command(home: Path) -> None:
    """`--help`, `--version` and each command's `--help` skip typer (cloudtrain.cli.entrypoint, help_text); what they
    print must be what typer renders now, and every command the app has must be there."""
    import typer

    from cloudtrain.cli.app import app
    from cloudtrain.cli.help_text import HELP

    commands = list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    expected = [("--help",), ("--version",), *((name, "--help") for name in commands)]
    assert sorted(HELP) == sorted(expected), "commands changed: run scripts/render-help"
    env = {**os.environ, "COLUMNS": "200"}
    for args in expected:
        code = f"import sys; sys.argv = ['cloudtrain', *{list(args)!r}]; from cloudtrain.cli.app import main; main()"
        rendered = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
        assert rendered.stdout == HELP[args], f"`cloudtrain {' '.join(args)}` changed: run scripts/render-help"
        assert cloudtrain(*args, home=home).out == HELP[args]
    imported = modules_imported_by("submit", "--help", env={"COLUMNS": "200"})
    assert "cloudtrain.cli.help_text" in imported and not {"typer", "shutil", "typing"} & imported


def test_help_on_a_narrow_terminal_is_typers(home: Path) -> None:
    """Below 80 columns click wraps help to the terminal: the text rendered ahead is not that, typer answers."""
    from cloudtrain.cli.help_text import HELP

    narrow = cloudtrain("submit", "--help", home=home, env={"COLUMNS": "60"})
    assert narrow.code == 0 and narrow.out.startswith("Usage: cloudtrain submit")
    assert narrow.out != HELP[("submit", "--help")]  # rewrapped at 60 columns


@pytest.mark.parametrize("columns", ["200", "60"])
def test_bare_cloudtrain_prints_the_help_as_a_usage_mistake(home: Path, columns: str) -> None:
    result = cloudtrain(home=home, env={"COLUMNS": columns})
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("Usage: cloudtrain [OPTIONS] COMMAND") and "error:" not in result.err


def test_no_help_text_shows_a_raw_formatting_mark(home: Path) -> None:
    """click's \\b (keep this paragraph as written) only works at a paragraph's start; elsewhere it prints."""
    for command in (
        "",
        "init",
        "validate",
        "submit",
        "build",
        "status",
        "logs",
        "stop",
        "fetch-model",
        "compare",
        "config",
        "schema",
    ):
        result = cloudtrain(*command.split(), "--help", home=home)
        assert result.code == 0 and "\b" not in result.out, command


def test_version(home: Path) -> None:
    result = cloudtrain("--version", home=home)
    assert result.code == 0 and result.out.startswith("cloudtrain ")


def test_bad_spec_is_one_line_with_file_line_and_field(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, TINY, "resources: {instance_cuont: 2}\n").read_text()
    (tmp_path / "job.yaml").write_text(spec.replace("resources: {instance_count: 2}\n", ""))
    result = cloudtrain("validate", str(tmp_path / "job.yaml"), home=home)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "job.yaml:7: resources.instance_cuont" in lines[0]
    assert "did you mean 'instance_count'" in lines[0]
    assert "Traceback" not in result.err


def test_usage_error_is_exit_2(home: Path) -> None:
    result = cloudtrain("submit", home=home)
    assert result.code == 2
    assert "Traceback" not in result.err


def test_validate_ok_and_schema(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, TINY)
    result = cloudtrain("validate", str(spec), "--json", home=home)
    assert result.code == 0
    assert result.json() == [{"file": str(spec), "name": "tiny", "valid": True}]
    schema = cloudtrain("schema", home=home)
    assert schema.code == 0
    # What an editor does with it: the spec that validates passes, a wrong type or an unknown field does not.
    validator = jsonschema.Draft202012Validator(schema.json())
    validator.check_schema(schema.json())
    document = yaml.safe_load(spec.read_text())
    assert list(validator.iter_errors(document)) == []
    wrong = [e.json_path for e in validator.iter_errors({**document, "resources": {"instance_count": "two"}})]
    assert wrong == ["$.resources.instance_count"]
    unknown = list(validator.iter_errors({**document, "resource": {"instance_count": 2}}))
    assert len(unknown) == 1 and "'resource'" in unknown[0].message


def test_status_of_unknown_job_is_bad_input(home: Path) -> None:
    result = cloudtrain("status", "no-such-job", "--backend", "local", home=home)
    assert result.code == 2
    assert "no-such-job" in result.err and len(result.err.strip().splitlines()) == 1


def test_empty_job_table(home: Path) -> None:
    result = cloudtrain("status", "--backend", "local", home=home)
    assert result.code == 0
    assert "no jobs yet" in result.out


def test_local_job_end_to_end_with_json(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, TINY)
    submitted = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home)
    assert submitted.code == 0, submitted.err
    doc = submitted.json()  # stdout is exactly one JSON document
    job = doc["job"]["name"]
    assert doc["created"] is True and doc["job"]["status"] == "Completed"
    assert job.startswith("tiny-")
    assert doc["job"]["metrics"] == {"score": 0.15}

    logs = cloudtrain("logs", job, home=home)  # the job's backend comes from its record
    assert logs.code == 0
    hosts = {line.split()[1] for line in logs.out.splitlines() if "hello from" in line}
    assert hosts == {"algo-1", "algo-2"}
    assert "--epochs 2" in logs.out.replace("'", "").replace(",", "")

    only = cloudtrain("logs", job, "--host", "algo-2", "--json", home=home)
    events = [json.loads(line) for line in only.out.splitlines()]
    assert events and {e["host"] for e in events} == {"algo-2"}

    status = cloudtrain("status", job, "--json", home=home)
    assert status.json()["status"] == "Completed"
    table = cloudtrain("status", home=home)
    assert job in table.out and "Completed" in table.out

    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
    assert fetched.code == 0, fetched.err
    assert (tmp_path / "out" / "model" / "weights.bin").read_text() == "w"
    assert "accuracy=0.5000" in fetched.out


def test_failed_job_exits_1_with_reason(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, "import sys\nprint('about to fail', flush=True)\nsys.exit('CUDA out of memory')\n")
    result = cloudtrain("submit", str(spec), "--backend", "local", "--wait", home=home)
    assert result.code == 1
    assert "Failed" in result.err
    assert "CUDA out of memory" in result.err.strip().splitlines()[-1]
    assert "Traceback" not in result.err.strip().splitlines()[-1]


def test_a_failure_reason_that_looks_like_markup_is_shown_as_written(tmp_path: Path, home: Path) -> None:
    """`[/opt/ml/...]` is a closing tag to rich: printed as markup, an unmatched one is a traceback."""
    reason = "no such file: [/opt/ml/input/data/train] [bold]x"
    spec = write_job(tmp_path, f"import sys\nsys.exit({reason!r})\n")
    submitted = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home)
    assert submitted.code == 1, submitted.err
    shown = cloudtrain("status", submitted.json()["job"]["name"], home=home)
    assert shown.code == 0 and "Traceback" not in shown.err, shown.err
    assert any(line.startswith("  failure ") and line.endswith(reason) for line in shown.out.splitlines()), shown.out


def test_idempotent_submit(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, TINY)
    first = cloudtrain("submit", str(spec), "--backend", "local", "--idempotency-key", "pr-42", "--json", home=home)
    again = cloudtrain(
        "submit", str(spec), "--backend", "local", "--json", home=home, env={"CLOUDTRAIN_IDEMPOTENCY_KEY": "pr-42"}
    )
    assert first.code == 0 and again.code == 0, again.err
    assert first.json()["created"] is True and again.json()["created"] is False
    assert first.json()["job"]["name"] == again.json()["job"]["name"]
    table = cloudtrain("status", "--json", "--backend", "local", home=home).json()
    assert len(table) == 1


def test_a_long_or_odd_job_name_is_shown_cut_and_escaped_in_the_error(tmp_path: Path) -> None:
    for name in ("a" * 5000, "a\x1b[31mred"):
        result = cloudtrain("status", name, home=tmp_path)
        assert result.code == 2 and result.out == "", result.err
        assert result.err.count("\n") == 1 and len(result.err) < 120 and "\x1b" not in result.err, result.err

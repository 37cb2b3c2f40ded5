"""Issue 12: hostile scripts, specs, folders and signals against the real command (local backend, dry runs).

Each test is a user's command and what they see: nothing lost, nothing leaked, nothing hangs.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.clirun import REPO, cloudtrain

SPEC = """\
name: hostile
code: {source_dir: code, entry_point: train.py}
resources: {instance_count: 1}
data: {train: data}
"""

MODEL = """\
import os
open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "w").write("w")
open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "eval_report.json"), "w").write('{"accuracy": 0.5}')
print("trained", flush=True)
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def write_job(folder: Path, script: str, extra: str = "") -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "train.py").write_text(textwrap.dedent(script))
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "numbers.txt").write_text("1 2 3\n")
    path = folder / "job.yaml"
    path.write_text(SPEC + extra)
    return path


def run_job(tmp_path: Path, home: Path, script: str, extra: str = "", *args: str, **kw: object) -> dict:
    """`submit --wait --json` of a small job; the submit document."""
    spec = write_job(tmp_path, script, extra)
    result = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", *args, home=home, **kw)
    assert result.code in (0, 1), result.err
    return {"doc": result.json(), "result": result}


# -- 1, 14: fetch-model and an existing DIR ---------------------------------------------------------------


def test_fetch_model_never_deletes_what_dir_holds(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    project = tmp_path / "project"
    (project / "model").mkdir(parents=True)
    (project / "model" / "NOTES.txt").write_text("mine")
    (project / "model" / "__init__.py").write_text("")

    result = cloudtrain("fetch-model", job, "--to", str(project), home=home)

    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "model" in result.err and "not empty" in result.err
    assert (project / "model" / "NOTES.txt").read_text() == "mine"
    assert sorted(p.name for p in project.iterdir()) == ["model"]

    again = tmp_path / "fresh"
    assert cloudtrain("fetch-model", job, "--to", str(again), home=home).code == 0
    assert cloudtrain("fetch-model", job, "--to", str(again), home=home).code == 2  # fetched before: kept too


def test_fetch_model_of_a_running_job_is_refused_and_creates_nothing(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, "import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home).json()["job"]["name"]
    try:
        result = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
        assert result.code == 2 and "InProgress" in result.err, result.err
        assert not (tmp_path / "out").exists()
    finally:
        cloudtrain("stop", job, "--wait", home=home)


def test_a_failed_fetch_leaves_no_empty_dir(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, "import sys\nsys.exit(3)\n")["doc"]["job"]["name"]
    result = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
    assert result.code != 0 and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "out").exists()


# -- 2: --wait shows every line ------------------------------------------------------------------------------


@pytest.mark.slow
def test_submit_wait_shows_every_log_line_of_a_chatty_job(tmp_path: Path, home: Path) -> None:
    script = "for i in range(300_000):\n    print(f'line {i}')\nprint('the end', flush=True)\n"
    job = run_job(tmp_path, home, script)["result"]
    shown = [line for line in job.err.splitlines() if " algo-1 line " in line]
    assert len(shown) == 300_000 and "algo-1 the end" in job.err


# -- 7: text from a job cannot drive the terminal -------------------------------------------------------------

ESCAPES = r"""
import sys
print("clip \x1b]52;c;ZXZpbA==\x07 title \x1b]0;pwned\x07 clear \x1b[2J hidden \x1b[8msecret\x1b[0m cr\rover", flush=True)
sys.exit("bad \x1b]0;title\x07 reason")
"""


def test_escape_sequences_from_a_job_reach_no_terminal(tmp_path: Path, home: Path) -> None:
    ran = run_job(tmp_path, home, ESCAPES, env={"NO_COLOR": "1", "CI": "1"})
    job = ran["doc"]["job"]["name"]
    outputs = [
        ran["result"].err,
        cloudtrain("logs", job, home=home).out,
        cloudtrain("status", job, home=home).out,
        cloudtrain("submit", str(tmp_path / "job.yaml"), "--backend", "local", "--wait", home=home).err,
    ]
    for text in outputs:
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text, text
    assert "clip \\x1b]52;c;ZXZpbA==\\x07 title" in outputs[1]
    assert "bad \\x1b]0;title\\x07 reason" in outputs[2]

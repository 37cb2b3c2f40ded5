"""The README demo, as tests: real 2-worker TensorFlow training on the local backend through the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirun import REPO, cloudtrain

pytestmark = pytest.mark.slow
SPEC = str(REPO / "job_specs" / "digits.yaml")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`--set` arguments pointing the example's channels at freshly prepared data."""
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(out)], check=True)
    return ["--set", f"data.train={out / 'train'}", "--set", f"data.eval={out / 'eval'}"]


def test_two_workers_submit_status_logs_fetch(tmp_path: Path, digits: list[str]) -> None:
    home = tmp_path / "home"
    submitted = cloudtrain("submit", SPEC, "--backend", "local", *digits, "--json", home=home)
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]

    followed = cloudtrain("logs", job, "--follow", home=home)  # returns when the job ends
    assert followed.code == 0, followed.err
    lines = followed.out.splitlines()
    assert any(" algo-1 " in line and "epoch=12 " in line for line in lines)
    assert any(" algo-2 " in line for line in lines), "the second worker's stream is merged in"

    status = cloudtrain("status", job, "--json", home=home).json()
    assert status["status"] == "Completed", status
    assert [t["status"] for t in status["transitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert status["metrics"]["val_accuracy"] >= 0.90

    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "model"), home=home)
    assert fetched.code == 0, fetched.err
    report = json.loads((tmp_path / "model" / "output" / "eval_report.json").read_text())
    assert report["accuracy"] >= 0.90
    assert len(report["confusion_matrix"]) == 10
    assert (tmp_path / "model" / "output" / "learning_curves.png").stat().st_size > 0
    assert (tmp_path / "model" / "model" / "model.keras").is_file()
    assert (tmp_path / "model" / "model" / "1" / "saved_model.pb").is_file()
    assert any((tmp_path / "model" / "checkpoints").iterdir())


def test_killed_worker_fails_the_job_and_resume_continues(tmp_path: Path, digits: list[str]) -> None:
    home = tmp_path / "home"
    # Small batches make each epoch long enough (about half a second) for the kill to land mid-run.
    epochs = ["--set", "hyperparameters.epochs=40", "--set", "hyperparameters.batch_size=8"]
    first = cloudtrain("submit", SPEC, "--backend", "local", *digits, *epochs, "--json", home=home)
    job = first.json()["job"]["name"]

    last_epoch = wait_for_epoch(home, job, at_least=3)
    workers = json.loads((home / "jobs" / job / "workers.json").read_text())
    os.kill(int(workers["algo-2"]), signal.SIGKILL)

    failed = cloudtrain("status", job, "--json", home=home)
    deadline = time.monotonic() + 120
    while failed.json()["status"] not in ("Failed", "Completed") and time.monotonic() < deadline:
        time.sleep(1)
        failed = cloudtrain("status", job, "--json", home=home)
    assert failed.json()["status"] == "Failed"
    assert "algo-2" in failed.json()["failure_reason"]

    resumed = cloudtrain("submit", SPEC, "--backend", "local", *digits, *epochs, "--resume", job, "--wait", home=home)
    assert resumed.code == 0, resumed.err
    match = re.search(r"resumed from epoch (\d+)", resumed.err)
    assert match, "the resumed job says where it continued"
    assert int(match.group(1)) >= max(1, last_epoch - 1), "continues from the last checkpointed epoch, not from 0"
    assert "epoch=1 " not in resumed.err


def wait_for_epoch(home: Path, job: str, at_least: int, timeout: float = 180) -> int:
    """The chief's latest epoch, once it has logged `epoch=at_least` (read from its log stream file)."""
    stream = home / "jobs" / job / "logs" / "algo-1.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        epochs = [int(m) for m in re.findall(r"epoch=(\d+) ", stream.read_text())] if stream.exists() else []
        if epochs and max(epochs) >= at_least:
            return max(epochs)
        time.sleep(0.2)
    raise AssertionError(f"{job} never reached epoch {at_least}")


def test_the_readme_api_example_runs_from_a_fresh_clone(tmp_path: Path) -> None:
    """The README's Python example, as written, in what a fresh clone holds (the tracked files, no data/ and no
    job folders): it trains, and fetch-model writes out/."""
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(from cloudtrain import api\n.*?)```", readme, re.S)
    assert example is not None
    clone = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in filter(None, tracked.stdout.split("\0")):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    assert not (clone / "data").exists()
    env = {**os.environ, "CLOUDTRAIN_HOME": str(tmp_path / "home"), "PYTHONPATH": str(clone)}
    ran = subprocess.run([sys.executable, "-c", example.group(1)], cwd=clone, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("Completed ")
    assert (clone / "out" / "model" / "model.keras").is_file()
    assert (clone / "out" / "output" / "eval_report.json").is_file()

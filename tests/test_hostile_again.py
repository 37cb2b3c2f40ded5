"""Issue 20: a second hostile afternoon against the real command: each test is the issue's reproduction.

A user's command and what they see: the job ends when its script does, a fetch ends on Ctrl-C, the user's
files and devices are untouched, nothing is left running or half-written, no traceback, no raw escape,
valid JSON.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirun import cloudtrain, environment
from tests.faultproxy import Fault, FaultProxy
from tests.test_faults import aws_env, finished_sagemaker_job
from tests.test_hostile import _alive, run_job


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _processes_running(argv: list[str]) -> list[int]:
    """The live processes whose command line is exactly argv."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# -- 1: a script that leaves a child process behind ---------------------------------------------------------------

LEAVES_A_CHILD = """\
import os, subprocess
subprocess.Popen(["sleep", "781"])
subprocess.Popen(["sleep", "782"], start_new_session=True, env={"PATH": os.environ["PATH"]})
print("done", flush=True)
"""


def test_a_job_whose_script_leaves_a_child_process_ends_when_the_script_ends(tmp_path: Path, home: Path) -> None:
    started = time.monotonic()
    ran = run_job(tmp_path, home, LEAVES_A_CHILD, "", "--set", "resources.max_runtime=120")

    assert ran["result"].code == 0, ran["result"].err
    assert ran["doc"]["job"]["status"] == "Completed"
    assert time.monotonic() - started < 60
    logs = cloudtrain("logs", ran["doc"]["job"]["name"], home=home).out
    (note,) = [line for line in logs.splitlines() if "left running" in line]
    assert "ended 2 process(es)" in note and "sleep" in note, logs
    assert _processes_running(["sleep", "781"]) == [] and _processes_running(["sleep", "782"]) == []


# -- 2: fetch-model and two Ctrl-Cs ---------------------------------------------------------------------------------


def _started_with(home: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`cloudtrain ARGS` in the background, as a user's terminal runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "cloudtrain", *args],
        env=environment(home, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def test_fetch_model_of_a_sagemaker_job_ends_after_two_ctrl_cs(aws_endpoint: str, tmp_path: Path, home: Path) -> None:
    finished_sagemaker_job("interrupted", model_mib=20)
    dest = tmp_path / "fetched"
    stuck = [Fault("delay", service="s3", operation="GetObject", seconds=120, times=1000)]  # every GET stuck
    with FaultProxy(aws_endpoint, stuck) as proxy:
        fetch = _started_with(home, aws_env(proxy.url), "fetch-model", "interrupted", "--to", str(dest))
        deadline = time.monotonic() + 60
        while not proxy.seen("GetObject") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        fetch.send_signal(signal.SIGINT)
        time.sleep(0.3)
        fetch.send_signal(signal.SIGINT)
        try:
            _, err = fetch.communicate(timeout=30)
        finally:
            fetch.kill()

    assert fetch.returncode == 130 and "Traceback" not in err, err
    assert not dest.exists() or list(dest.iterdir()) == []

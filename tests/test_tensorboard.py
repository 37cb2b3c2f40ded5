"""TensorBoard: the event files every job writes, `fetch-model` bringing them back, and `cloudtrain tensorboard`
serving one run per job (asked through TensorBoard's own HTTP data API, and seen in headless Chromium).

The slow tests train the digits example for real: two local 2-worker jobs, and one on the SageMaker control plane
that `cloudtrain tensorboard` follows while it trains (its files reach S3 as SageMaker uploads them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloudtrain.errors import UserError
from cloudtrain.transfer.events import EventFile, mirror
from tests.clirun import REPO, cloudtrain
from tests.tbevents import METRICS, epochs_of, scalars
from tests.test_ci_contract import takes_ctrl_c  # noqa: F401  (a fixture)
from tests.test_cli import write_job
from tests.test_sagemaker_e2e import wait_for

DIGITS = str(REPO / "job_specs" / "digits.yaml")
EPOCHS = 5
FAKE_EVENTS = """\
    import json, os
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
        folder = os.path.join(os.environ["SM_OUTPUT_DIR"], "tensorboard")
        os.makedirs(folder)
        open(os.path.join(folder, "events.out.tfevents.1.algo-1.7.0.v2"), "wb").write(b"records")
    print("score=0.5", flush=True)
    """
HIDE_TENSORBOARD = """\
import sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Hide())
"""


# --- fast ----------------------------------------------------------------------------------------


def test_event_files_grow_in_place(tmp_path: Path) -> None:
    """A file that grew gets only its new bytes, appended to the same file (TensorBoard reads it on)."""
    source = {"events.out.tfevents.1": b"first record;"}
    reads: list[tuple[str, int]] = []

    def read(file: EventFile, start: int) -> bytes:
        reads.append((file.name, start))
        return source[file.name][start : file.size]

    listing = lambda: [EventFile(name, len(data)) for name, data in source.items()]  # noqa: E731
    assert mirror(listing(), tmp_path, read) == 13
    inode = (tmp_path / "events.out.tfevents.1").stat().st_ino
    source["events.out.tfevents.1"] += b"second record;"
    source["sub/events.out.tfevents.2"] = b"other run"
    assert mirror(listing(), tmp_path, read) == 14 + 9
    assert (tmp_path / "events.out.tfevents.1").read_bytes() == b"first record;second record;"
    assert (tmp_path / "events.out.tfevents.1").stat().st_ino == inode
    assert reads[-2:] == [("events.out.tfevents.1", 13), ("sub/events.out.tfevents.2", 0)]
    assert mirror(listing(), tmp_path, read) == 0  # nothing new: nothing read

    source["events.out.tfevents.1"] = b"rewritten"  # shorter: fetched again whole
    mirror(listing(), tmp_path, read)
    assert (tmp_path / "events.out.tfevents.1").read_bytes() == b"rewritten"
    with pytest.raises(UserError, match="unsafe name"):
        mirror([EventFile("../escape", 1)], tmp_path, read)


def test_fetch_model_brings_the_event_files_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = write_job(tmp_path / "job", FAKE_EVENTS)
    done = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home)
    assert done.code == 0, done.err
    job = done.json()["job"]["name"]
    assert done.json()["job"]["artifacts"]["tensorboard"].endswith("/hosts/algo-1/output/tensorboard")

    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), "--json", home=home)
    assert fetched.code == 0, fetched.err
    assert fetched.json()["tensorboard"] == str(tmp_path / "out" / "tensorboard")
    assert (tmp_path / "out" / "tensorboard" / "events.out.tfevents.1.algo-1.7.0.v2").read_bytes() == b"records"


def test_without_tensorboard_one_line_says_what_to_install(tmp_path: Path) -> None:
    hider = tmp_path / "hide"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(HIDE_TENSORBOARD)
    env = {"PYTHONPATH": f"{hider}{os.pathsep}{REPO}", "PATH": "/usr/bin:/bin"}
    result = cloudtrain("tensorboard", "some-job", "--no-browser", home=tmp_path / "home", env=env)
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "error: tensorboard is not installed: pip install tensorboard "
        "(it comes with pip install 'cloudtrain[tensorflow]')"
    ]


def test_tensorboard_of_an_unknown_job_is_one_line(tmp_path: Path) -> None:
    result = cloudtrain("tensorboard", "no-such-job", "--backend", "local", home=tmp_path / "home")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "no-such-job" in result.err


# --- slow: real training, real TensorBoard ----------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(out)], check=True)
    return ["--set", f"data.train={out / 'train'}", "--set", f"data.eval={out / 'eval'}"]


@pytest.fixture(scope="module")
def two_local_jobs(tmp_path_factory: pytest.TempPathFactory, digits: list[str]) -> tuple[Path, list[str]]:
    """Two 2-worker digits jobs on the local backend, at two learning rates (so their curves differ)."""
    home = tmp_path_factory.mktemp("tensorboard") / "home"
    jobs = []
    for rate in ("0.002", "0.0005"):
        args = ["--set", f"hyperparameters.epochs={EPOCHS}", "--set", f"hyperparameters.learning_rate={rate}"]
        done = cloudtrain("submit", DIGITS, "--backend", "local", *digits, *args, "--wait", "--json", home=home)
        assert done.code == 0, done.err[-3000:]
        jobs.append(done.json()["job"]["name"])
    return home, jobs


@pytest.mark.slow
def test_local_two_worker_job_writes_one_point_per_epoch(two_local_jobs: tuple[Path, list[str]], tmp_path: Path):
    home, (job, _) = two_local_jobs
    chief = home / "jobs" / job / "hosts" / "algo-1" / "output" / "tensorboard"
    assert epochs_of(chief) == {tag: list(range(1, EPOCHS + 1)) for tag in METRICS}
    assert not (home / "jobs" / job / "hosts" / "algo-2" / "output" / "tensorboard").exists()  # the chief only
    points = scalars(chief)
    assert [v for _, v in points["learning_rate"]] == pytest.approx([0.002] * EPOCHS)
    assert all(v > 0 for _, v in points["steps_per_second"])
    log = cloudtrain("logs", job, "--host", "algo-1", home=home).out  # the same numbers as the metric lines
    last = re.findall(rf"epoch={EPOCHS} loss=(\S+) accuracy=(\S+) val_loss=(\S+) val_accuracy=(\S+)", log)
    assert [float(x) for x in last[0]] == pytest.approx([points[t][-1][1] for t in METRICS], abs=1e-4)

    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
    assert fetched.code == 0, fetched.err
    assert epochs_of(tmp_path / "out" / "tensorboard") == {tag: list(range(1, EPOCHS + 1)) for tag in METRICS}


@pytest.mark.slow
@pytest.mark.usefixtures("takes_ctrl_c")
def test_tensorboard_serves_both_jobs_and_shows_their_curves(
    two_local_jobs: tuple[Path, list[str]], tmp_path: Path
) -> None:
    home, jobs = two_local_jobs
    with serving(home, jobs) as board:
        assert board.wait_for_runs(jobs) == sorted(jobs)
        tags = board.get("data/plugin/scalars/tags")
        for job in jobs:
            assert set(METRICS) | {"learning_rate", "steps_per_second"} <= set(tags[job])
            for tag in METRICS:
                assert [step for _, step, _ in board.scalars(job, tag)] == list(range(1, EPOCHS + 1))
        rates = [board.scalars(job, "learning_rate")[0][2] for job in jobs]
        assert rates == pytest.approx([0.002, 0.0005])

        chromium = shutil.which("chromium")
        if chromium is None:
            pytest.skip("chromium is not installed (scripts/setup installs Debian's chromium package)")
        picture = screenshot(chromium, board.url, tmp_path)
        assert picture.read_bytes().startswith(b"\x89PNG") and picture.stat().st_size > 20_000


@pytest.mark.slow
@pytest.mark.usefixtures("takes_ctrl_c")
def test_tensorboard_follows_a_sagemaker_job_while_it_trains(
    sagemaker_endpoint: Any, digits: list[str], tmp_path: Path
) -> None:
    """The control plane uploads the chief's event files as SageMaker does; `cloudtrain tensorboard`, started
    while the job runs, downloads them as they come, until the last epoch."""
    home = tmp_path / "home"
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "CLOUDTRAIN_ROLE_ARN"}
    epochs = ["--set", "hyperparameters.epochs=8"]
    submitted = cloudtrain("submit", DIGITS, "--backend", "sagemaker", *digits, *epochs, "--json", home=home, env=aws)
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]
    assert cloudtrain("status", job, "--json", home=home, env=aws).json()["status"] == "InProgress"

    with serving(home, [job], env=aws) as board:
        board.wait_for_runs([job])
        wait_for("all 8 epochs in TensorBoard", lambda: len(board.scalars(job, "val_accuracy")) == 8, timeout=600)
    assert cloudtrain("status", job, "--json", home=home, env=aws).json()["status"] == "Completed"

    uri = json.loads(cloudtrain("status", job, "--json", home=home, env=aws).out)["artifacts"]["tensorboard"]
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    assert prefix.endswith(f"/{job}/tensorboard-output")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert keys and all(re.search(r"/tensorboard-output/events\.out\.tfevents\.", k) for k in keys)
    out = tmp_path / "out"
    assert cloudtrain("fetch-model", job, "--to", str(out), home=home, env=aws).code == 0
    assert epochs_of(out / "tensorboard") == {tag: list(range(1, 9)) for tag in METRICS}


# --- helpers -----------------------------------------------------------------------------------------


class Board:
    """A running `cloudtrain tensorboard`, asked through TensorBoard's HTTP data API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            return json.loads(answer.read())

    def scalars(self, run: str, tag: str) -> list[list[float]]:
        """[[wall time, step, value], ...]: what the scalars dashboard draws; [] before the run has the tag."""
        try:
            return self.get("data/plugin/scalars/scalars?" + urllib.parse.urlencode({"run": run, "tag": tag}))
        except urllib.error.HTTPError:
            return []

    def wait_for_runs(self, runs: list[str]) -> list[str]:
        """TensorBoard finds runs on its next reload of the folder."""
        return sorted(wait_for("the runs", lambda: set(runs) <= set(self.get("data/runs")) and self.get("data/runs")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class serving:
    """`cloudtrain tensorboard JOBS --no-browser --port P` until the block ends, then Ctrl-C: it exits 130, its
    TensorBoard is gone and so is its temporary folder."""

    def __init__(self, home: Path, jobs: list[str], env: dict[str, str] | None = None) -> None:
        self.home, self.jobs, self.env = home, jobs, env or {}
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Board:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
        env = base | {"CLOUDTRAIN_HOME": str(self.home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"} | self.env
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cloudtrain", "tensorboard", *self.jobs, "--no-browser", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        line = self.process.stdout.readline()  # the first line, once TensorBoard answers
        if line != f"TensorBoard at http://127.0.0.1:{port}/  (Ctrl-C to stop)\n":
            self.process.kill()
            pytest.fail(f"no URL but {line!r}; stderr:\n{self.process.stderr.read()[-3000:]}")
        return Board(f"http://127.0.0.1:{port}/")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        folder = tensorboard_folder(self.process.pid)
        self.process.send_signal(signal.SIGINT)
        try:
            assert self.process.wait(timeout=60) == 130
        finally:
            self.process.kill()
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        assert err.strip().splitlines()[-1] == "TensorBoard stopped", err
        assert folder is not None and not folder.exists(), "the temporary folder is deleted"
        assert not processes_using(folder), "TensorBoard and its data server have ended"


def tensorboard_folder(pid: int) -> Path | None:
    """The temporary folder of the TensorBoard that `cloudtrain tensorboard` (pid) started: from its command line."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and "--logdir" in argv:
            return Path(argv[argv.index("--logdir") + 1]).parent
    return None


def processes_using(folder: Path) -> list[str]:
    """Live processes whose command line names the folder."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if str(folder) in cmdline and state != "Z":
            found.append(cmdline.replace("\0", " "))
    return found


def screenshot(chromium: str, url: str, folder: Path) -> Path:
    """The page as a person sees it: headless Chromium, its scripts given time to draw the charts."""
    dest = folder / "tensorboard.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # as root (CI)
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={folder / 'chromium-profile'}",
            "--window-size=1600,1200",
            "--virtual-time-budget=15000",
            f"--screenshot={dest}",
            url + "#scalars",  # the Scalars dashboard: headless Chromium draws its charts without a GPU
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return dest

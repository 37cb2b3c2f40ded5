"""The training runtime for real: job_specs/digits/train.py on one worker and on two (MultiWorkerMirroredStrategy).

The slow tests run the example as SageMaker would, as subprocesses with a temporary /opt/ml root
(CLOUDTRAIN_OPT_ML), from a copy of the code holding only the training script and the shipped package
(`cloudtrain/__init__.py` and `cloudtrain/runtime/`), so they also show that the runtime needs nothing else.
The report's metrics are checked against scikit-learn without TensorFlow.
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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cloudtrain.runtime.env import build_tf_config
from cloudtrain.runtime.report import classification_metrics
from tests.tbevents import METRICS, scalars

REPO = Path(__file__).resolve().parent.parent
METRIC_LINE = re.compile(
    r"^epoch=(\d+) loss=(\d+\.\d{4}) accuracy=(\d+\.\d{4}) val_loss=(\d+\.\d{4}) val_accuracy=(\d+\.\d{4})$", re.M
)
RESUMED = re.compile(r"^resumed from epoch (\d+)$", re.M)
SPEC_ARGS = ["--batch_size", "64", "--learning_rate", "0.002"]  # job_specs/digits.yaml, with its 12 epochs
WORKER_TIMEOUT = 240  # s; a worker whose peer is gone can wait forever


# --- the report's metrics (fast) ------------------------------------------------------------------------------


def test_metrics_match_scikit_learn() -> None:
    metrics_module = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 4, 500))
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: its precision is 0, not NaN
    confusion = metrics_module.confusion_matrix(y_true, y_pred, labels=range(4))
    report = classification_metrics(confusion, ["a", "b", "c", "d"])
    expected = metrics_module.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    assert report["accuracy"] == pytest.approx(expected["accuracy"])
    assert report["num_examples"] == 500
    for index, name in enumerate("abcd"):
        ours, theirs = report["per_class"][name], expected[str(index)]
        assert ours["precision"] == pytest.approx(theirs["precision"])
        assert ours["recall"] == pytest.approx(theirs["recall"])
        assert ours["f1"] == pytest.approx(theirs["f1-score"])
        assert ours["support"] == theirs["support"]
    for average in ("macro", "weighted"):
        for key, their_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert report[f"{average}_avg"][key] == pytest.approx(expected[f"{average} avg"][their_key])
    assert report["confusion_matrix"] == confusion.tolist()


def test_a_torn_checkpoint_folder_restores_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    """SageMaker syncs checkpoint files in no set order: the index may name a checkpoint whose data never came."""
    from cloudtrain.runtime.training import complete_checkpoints

    for name in ("ckpt-10.index", "ckpt-10.data-00000-of-00001", "ckpt-11.index", "ckpt-11.data-00000-of-00001"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "ckpt-12.index").write_bytes(b"x")  # its data shard never arrived
    (tmp_path / "ckpt-13.data-00000-of-00002").write_bytes(b"x")  # one of two shards, no index
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-12"\n')

    assert complete_checkpoints(tmp_path) == [str(tmp_path / "ckpt-11"), str(tmp_path / "ckpt-10")]
    assert complete_checkpoints(tmp_path / "missing") == []
    # a worker killed between writing ckpt-11 and naming it leaves `checkpoint` one behind: ckpt-11 still comes first
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"\n')
    assert complete_checkpoints(tmp_path)[0] == str(tmp_path / "ckpt-11")


def test_metrics_of_an_empty_or_bad_matrix() -> None:
    assert classification_metrics(np.zeros((2, 2)))["accuracy"] == 0.0
    with pytest.raises(ValueError, match="square"):
        classification_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        classification_metrics(np.zeros((2, 2)), ["a", "b", "c"])


# --- running the example --------------------------------------------------------------------------------------


@dataclass
class Run:
    output: str
    returncode: int

    @property
    def epochs(self) -> list[int]:
        return [int(m.group(1)) for m in METRIC_LINE.finditer(self.output)]

    @property
    def resumed_from(self) -> int | None:
        found = RESUMED.findall(self.output)
        return int(found[0]) if found else None


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the code tarball holds: the example and the shipped runtime package, nothing else of cloudtrain."""
    folder = tmp_path_factory.mktemp("code")
    shutil.copy(REPO / "job_specs" / "digits" / "train.py", folder)
    (folder / "cloudtrain").mkdir()
    (folder / "cloudtrain" / "__init__.py").write_text('"""Only the runtime ships to the training image."""\n')
    shutil.copytree(REPO / "cloudtrain" / "runtime", folder / "cloudtrain" / "runtime", ignore=_pycache)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(folder)], check=True)
    return folder


def _pycache(_folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def _environ(**variables: str) -> dict[str, str]:
    """This process's environment without any contract variable of its own, plus `variables`."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SM_", "CLOUDTRAIN_", "TF_CONFIG", "PYTHONPATH", "TF_USE_LEGACY_KERAS"))
    }
    return {**base, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **variables}


def _start(code: Path, root: Path, args: list[str], log: Path, **variables: str) -> subprocess.Popen[bytes]:
    environ = _environ(CLOUDTRAIN_OPT_ML=str(root), **variables)
    with log.open("wb") as out:  # a file, not a pipe: a chatty worker must never block on a full pipe
        return subprocess.Popen(
            [sys.executable, "train.py", *args],
            cwd=code,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _finish(process: subprocess.Popen[bytes], log: Path, timeout: float = WORKER_TIMEOUT) -> Run:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        pytest.fail(f"worker still running after {timeout} s:\n{log.read_text()[-3000:]}")
    return Run(log.read_text(), process.returncode)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: TensorFlow catches SIGTERM, and a worker waiting for its peers ignores it for minutes."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def cluster(code: Path, data: Path, tmp_path: Path) -> Iterator[ClusterRunner]:
    runner = ClusterRunner(code, data, tmp_path)
    yield runner
    runner.kill()


class ClusterRunner:
    """Two workers on loopback ports, each with its own root (as on the local backend), one checkpoint folder."""

    hosts = ("algo-1", "algo-2")

    def __init__(self, code: Path, data: Path, base: Path) -> None:
        self.code, self.data, self.base = code, data, base
        self.checkpoints = base / "checkpoints"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.round = 0

    def root(self, host: str) -> Path:
        return self.base / "hosts" / host

    def start(self, args: list[str]) -> None:
        self.round += 1
        hosts = list(self.hosts)
        addresses = {h: f"127.0.0.1:{port}" for h, port in zip(hosts, _free_ports(len(hosts)), strict=True)}
        self.processes, self.logs = [], []
        for host in hosts:
            log = self.base / f"{host}.{self.round}.log"
            channels = {f"SM_CHANNEL_{c.upper()}": str(self.data / c) for c in ("train", "eval")}
            self.processes.append(
                _start(
                    self.code,
                    self.root(host),
                    args,
                    log,
                    TF_CONFIG=json.dumps(build_tf_config(hosts, host, addresses)),
                    SM_HOSTS=json.dumps(hosts),
                    SM_CURRENT_HOST=host,
                    SM_CHANNELS='["train", "eval"]',
                    CLOUDTRAIN_CHECKPOINT_DIR=str(self.checkpoints),
                    **channels,
                )
            )
            self.logs.append(log)

    def wait_for(self, pattern: str, timeout: float = WORKER_TIMEOUT) -> None:
        """Until the chief's log matches `pattern`."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.logs[0].read_text(), re.M):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                self.kill()
                pytest.fail(f"no {pattern!r} in the chief's log:\n{self.logs[0].read_text()[-3000:]}")
            time.sleep(0.2)

    def finish(self) -> list[Run]:
        return [_finish(p, log) for p, log in zip(self.processes, self.logs, strict=True)]

    def kill(self) -> None:
        """SIGKILL every worker first, then reap: a survivor must not see its peer go and write a failure."""
        alive = [p for p in self.processes if p.poll() is None]
        for process in alive:
            os.killpg(process.pid, signal.SIGKILL)
        for process in alive:
            process.wait()


def _report(root: Path) -> dict[str, object]:
    return json.loads((root / "output" / "data" / "eval_report.json").read_text())


def _check_outputs(root: Path, epochs: int, resumed_from: int) -> dict[str, object]:
    """The chief's model, report and plots; the report's fields; no failure."""
    report = _report(root)
    assert report["epochs"] == epochs
    assert report["resumed_from_epoch"] == resumed_from
    assert report["epochs_this_run"] == epochs - resumed_from
    assert report["num_examples"] == 360
    assert set(report["per_class"]) == {str(d) for d in range(10)}
    assert all(set(c) == {"precision", "recall", "f1", "support"} for c in report["per_class"].values())
    assert sum(c["support"] for c in report["per_class"].values()) == 360
    assert set(report["macro_avg"]) == {"precision", "recall", "f1"}
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 360
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 360)
    assert report["loss"] > 0
    history = report["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))  # survives the resume
    assert history[-1]["val_accuracy"] == pytest.approx(report["accuracy"])
    for name in ("learning_curves.png", "confusion_matrix.png"):
        assert (root / "output" / "data" / name).read_bytes().startswith(b"\x89PNG")
    assert (root / "model" / "model.keras").is_file()
    assert (root / "model" / "1" / "saved_model.pb").is_file()
    assert not (root / "output" / "failure").exists()
    return report


@pytest.mark.slow
def test_one_worker_trains_then_resumes(code: Path, data: Path, tmp_path: Path) -> None:
    """3 epochs (hyperparameters from SM_HPS), then 12 (script-mode arguments win): resumes at 3, trains 9."""
    root = tmp_path / "opt_ml"
    for channel in ("train", "eval"):
        (root / "input" / "data").mkdir(parents=True, exist_ok=True)
        (root / "input" / "data" / channel).symlink_to(data / channel)  # found without SM_CHANNELS
    hps = json.dumps({"epochs": 3, "batch_size": 64, "learning_rate": 0.002})

    first = _finish(_start(code, root, [], tmp_path / "1.log", SM_HPS=hps), tmp_path / "1.log")
    assert first.returncode == 0, first.output[-3000:]
    assert first.epochs == [1, 2, 3] and first.resumed_from is None
    assert _report(root)["epochs"] == 3

    args = ["--epochs", "12", *SPEC_ARGS]
    second = _finish(_start(code, root, args, tmp_path / "2.log", SM_HPS=hps), tmp_path / "2.log")
    assert second.returncode == 0, second.output[-3000:]
    assert second.resumed_from == 3
    assert second.epochs == list(range(4, 13))  # one metric line per epoch, only the remaining epochs
    report = _check_outputs(root, epochs=12, resumed_from=3)
    assert report["accuracy"] >= 0.90, report["accuracy"]
    # TensorBoard: one point per epoch for each metric, the first run's and the resumed run's files together
    points = scalars(root / "output" / "tensorboard")
    assert {tag: [step for step, _ in points[tag]] for tag in METRICS} == {tag: list(range(1, 13)) for tag in METRICS}
    assert [v for _, v in points["learning_rate"]] == pytest.approx([0.002] * 12)
    assert len(points["steps_per_second"]) == 12 and all(v > 0 for _, v in points["steps_per_second"])


@pytest.mark.slow
def test_a_checkpoint_index_cut_short_resumes_from_the_one_before(code: Path, data: Path, tmp_path: Path) -> None:
    """A worker killed while writing ckpt-3's index: the resume says so and restores ckpt-2 instead of failing."""
    root = tmp_path / "opt_ml"
    for channel in ("train", "eval"):
        (root / "input" / "data").mkdir(parents=True, exist_ok=True)
        (root / "input" / "data" / channel).symlink_to(data / channel)
    first = _finish(_start(code, root, ["--epochs", "3", *SPEC_ARGS], tmp_path / "1.log"), tmp_path / "1.log")
    assert first.returncode == 0, first.output[-3000:]
    index = root / "checkpoints" / "ckpt-3.index"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])

    second = _finish(_start(code, root, ["--epochs", "4", *SPEC_ARGS], tmp_path / "2.log"), tmp_path / "2.log")
    assert second.returncode == 0, second.output[-3000:]
    assert "note: ckpt-3 cannot be read" in second.output
    assert second.resumed_from == 2 and second.epochs == [3, 4]
    _check_outputs(root, epochs=4, resumed_from=2)


@pytest.mark.slow
def test_two_workers_survive_a_kill(cluster: ClusterRunner) -> None:
    """MultiWorkerMirroredStrategy on 2 workers at the spec's settings; both killed mid-run, then restarted."""
    # Small batches make each epoch last long enough for the kill to land mid-run.
    args = ["--epochs", "12", "--batch_size", "8", "--learning_rate", "0.001"]
    cluster.start(args)
    cluster.wait_for(r"^epoch=3 ")
    cluster.kill()

    cluster.start(args)
    chief, worker = cluster.finish()
    assert chief.returncode == 0, chief.output[-3000:]
    assert worker.returncode == 0, worker.output[-3000:]
    resumed = chief.resumed_from
    assert resumed is not None and 2 <= resumed < 12, chief.output[-3000:]
    assert chief.epochs == list(range(resumed + 1, 13))
    assert worker.epochs == [] and worker.resumed_from is None  # only the chief prints

    report = _check_outputs(cluster.root("algo-1"), epochs=12, resumed_from=resumed)
    assert report["num_workers"] == 2
    assert report["accuracy"] >= 0.90, report["accuracy"]
    other = cluster.root("algo-2")  # the non-chief wrote to temporary folders only
    assert not (other / "model").exists() and not (other / "output").exists()
    assert sorted(p.name for p in cluster.checkpoints.glob("ckpt-*.index")) == ["ckpt-11.index", "ckpt-12.index"]

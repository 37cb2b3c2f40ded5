"""The local backend end to end, with tiny non-TensorFlow scripts (each job takes well under a second).

Every job runs the real path: LocalBackend.submit -> detached local.runner -> one launcher per host ->
the script. A fixture fails any test that leaves a process running under the test's folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudtrain.backends.local.backend import LocalBackend
from cloudtrain.errors import JobExists, JobNotFound, UserError
from cloudtrain.jobs import JobInfo
from cloudtrain.spec.models import JobSpec
from cloudtrain.store import REDACTED, SCHEMA_VERSION, JobRecord, JobStore
from tests.clirun import cloudtrain

WAIT_S = 20.0
API_KEY_SHA256 = hashlib.sha256(b"s3cr3t").hexdigest()

TRAIN = """
import argparse, hashlib, json, os, pathlib, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--optimizer")
parser.add_argument("--model_dir")  # script mode passes it, as AWS's toolkit does
args = parser.parse_args()
host = os.environ["SM_CURRENT_HOST"]
checkpoints = pathlib.Path(os.environ["CLOUDTRAIN_CHECKPOINT_DIR"])
print("SEEN " + json.dumps({
    "args": sys.argv[1:],
    "hosts": json.loads(os.environ["SM_HOSTS"]),
    "hps": json.loads(os.environ["SM_HPS"]),
    "train_files": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])),
    "tf_config": json.loads(os.environ.get("TF_CONFIG") or "null"),
    "restored": sorted(p.name for p in checkpoints.iterdir()),
    "api_key_sha256": hashlib.sha256(os.environ.get("API_KEY", "").encode()).hexdigest(),
    "cwd": os.getcwd(),
}))
for epoch in range(args.epochs):
    print(f"epoch={epoch} loss={1 / (epoch + 1):.4f} accuracy={epoch / 10:.2f}", flush=True)
    time.sleep(0.02)
if host == "algo-1":
    pathlib.Path(os.environ["SM_MODEL_DIR"], "model.txt").write_text("weights")
    pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "report.json").write_text("{}")
    (checkpoints / f"ckpt-{args.epochs}").write_text("state")
print(f"{host} done", file=sys.stderr)
"""

FAIL_TRACEBACK = """
raise ValueError("learning rate too high")
"""

FAIL_WITH_FILE = """
import os, pathlib, sys
pathlib.Path(os.environ["SM_OUTPUT_DIR"], "failure").write_text("ClientError: the data has no labels")
sys.exit(2)
"""

# Writes a model, then waits to be stopped (the default SIGTERM action ends it).
SLEEP = """
import os, pathlib, time
pathlib.Path(os.environ["SM_MODEL_DIR"], "partial.txt").write_text("half-trained")
print("ready", flush=True)
time.sleep(60)
"""

# Like a TensorFlow worker: ignores SIGTERM, and the chief waits forever for a peer that died.
HANG_AND_DIE = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ["SM_CURRENT_HOST"] == "algo-2":
    time.sleep(0.3)
    print("peer lost its data", file=sys.stderr)
    sys.exit(3)
print("waiting for peers", flush=True)
time.sleep(120)
"""


def _processes_under(root: Path) -> list[int]:
    """Live processes whose command line or working folder is under root (zombies have neither)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path) -> Iterator[None]:
    """Fail (and clean up after) a test that leaves a runner, launcher or script running."""
    yield
    root = tmp_path
    deadline = time.monotonic() + 5.0  # a runner exits a moment after it records the end
    while (left := _processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDTRAIN_STOP_GRACE", "0.5")
    monkeypatch.setenv("CLOUDTRAIN_FAILURE_GRACE", "0.5")
    return tmp_path / "home"


@pytest.fixture
def backend(home: Path) -> LocalBackend:
    return LocalBackend(home)


def make_spec(
    base: Path, script: str, *, files: dict[str, str] | None = None, requirements: str | None = None, **fields: Any
) -> JobSpec:
    """A spec whose code folder holds `script` as train.py (plus `files`; `requirements` names one of them)."""
    source = base / f"src-{abs(hash(script)) % 10**8}"
    source.mkdir(exist_ok=True)
    (source / "train.py").write_text(textwrap.dedent(script))
    for name, text in (files or {}).items():
        (source / name).write_text(text)
    data = {
        "name": "test",
        "code": {"source_dir": str(source), "entry_point": "train.py", "requirements": requirements},
        "distribution": {"strategy": "none"},
        **fields,
    }
    return JobSpec.model_validate(data, context={"base_dir": base})


def wait_done(backend: LocalBackend, name: str) -> JobInfo:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        info = backend.describe(name)
        if info.done:
            return info
        time.sleep(0.05)
    raise AssertionError(f"{name} still {backend.describe(name).status} after {WAIT_S}s")


def wait_for_line(backend: LocalBackend, name: str, text: str, host: str | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if any(text in e.message for e in backend.logs(name, host=host)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} never printed {text!r}")


def seen(backend: LocalBackend, name: str, host: str) -> dict[str, Any]:
    """What the training script reported about its environment on one host."""
    line = next(e.message for e in backend.logs(name, host=host) if e.message.startswith("SEEN "))
    return json.loads(line[len("SEEN ") :])


def train_spec(base: Path, **fields: Any) -> JobSpec:
    train = base / "data" / "train"
    train.mkdir(parents=True, exist_ok=True)
    (train / "part-0.csv").write_text("1,2\n")
    defaults: dict[str, Any] = {
        "resources": {"instance_count": 2},
        "distribution": {"strategy": "multi_worker_mirrored"},
        "data": {"train": "data/train"},
        "hyperparameters": {"epochs": 3, "optimizer": "adam"},
        "metrics": [{"name": "loss", "regex": r"loss=([0-9.]+)"}, {"name": "acc", "regex": r"accuracy=([0-9.]+)"}],
        "environment": {"API_KEY": "s3cr3t", "db_password": "hunter2", "GITHUB_TOKEN": "ghp_x", "PLAIN": "visible"},
    }
    return make_spec(base, TRAIN, **{**defaults, **fields})


def test_completed_job_end_to_end(backend: LocalBackend, tmp_path: Path) -> None:
    submitted = backend.submit(train_spec(tmp_path), "train-1")
    assert (submitted.status, submitted.secondary_status) == ("InProgress", "Starting")

    info = wait_done(backend, "train-1")

    assert (info.status, info.secondary_status, info.failure_reason) == ("Completed", "Completed", None)
    assert [t.status for t in info.transitions] == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all(t.end is not None and t.end >= t.start for t in info.transitions)
    assert info.metrics == {"loss": pytest.approx(1 / 3, abs=1e-4), "acc": pytest.approx(0.2)}  # last values
    assert info.instance_count == 2 and info.ended is not None
    chief, worker = seen(backend, "train-1", "algo-1"), seen(backend, "train-1", "algo-2")
    model_dir = str(backend.job_dir("train-1") / "model_dir")
    assert chief["args"] == ["--epochs", "3", "--model_dir", model_dir, "--optimizer", "adam"]
    assert chief["hps"] == {"epochs": 3, "model_dir": model_dir, "optimizer": "adam"}
    assert chief["hosts"] == ["algo-1", "algo-2"]
    assert chief["train_files"] == ["part-0.csv"] and chief["api_key_sha256"] == API_KEY_SHA256
    assert chief["cwd"].endswith("hosts/algo-1/code")
    code = backend.job_dir("train-1") / "hosts/algo-1/code"
    assert (code / "train.py").is_file() and (code / "cloudtrain/runtime/env.py").is_file()  # as SageMaker gets it
    assert [chief["tf_config"]["task"]["index"], worker["tf_config"]["task"]["index"]] == [0, 1]
    addresses = chief["tf_config"]["cluster"]["worker"]
    assert len(set(addresses)) == 2 and all(a.startswith("127.0.0.1:") for a in addresses)
    hps = json.loads((backend.job_dir("train-1") / "hosts/algo-2/input/config/hyperparameters.json").read_text())
    assert hps["epochs"] == "3" and hps["optimizer"] == '"adam"' and hps["sagemaker_program"] == '"train.py"'
    assert hps["sagemaker_multi_worker_mirrored_strategy_enabled"] == "true"
    assert hps["sagemaker_container_log_level"] == "20" and hps["sagemaker_region"] == '"local"'
    assert [j.name for j in backend.list_jobs()] == ["train-1"]


def test_logs_of_both_hosts_are_tagged_and_time_ordered(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(train_spec(tmp_path), "logs-1")
    followed = list(backend.logs("logs-1", follow=True))  # returns once the job ended and all is read

    assert backend.describe("logs-1").done
    assert {e.host for e in followed} == {"algo-1", "algo-2"}
    assert [e.timestamp for e in followed] == sorted(e.timestamp for e in followed)
    for host in ("algo-1", "algo-2"):
        assert any(e.host == host and e.message == f"{host} done" for e in followed)  # stderr is in the stream
    assert list(backend.logs("logs-1")) == followed
    assert {e.host for e in backend.logs("logs-1", host="algo-2")} == {"algo-2"}
    with pytest.raises(UserError, match="no host 'algo-3'"):
        backend.logs("logs-1", host="algo-3")


def test_fetch_artifacts_extracts_model_output_and_checkpoints(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(train_spec(tmp_path), "fetch-1")
    assert wait_done(backend, "fetch-1").status == "Completed"

    got = backend.fetch_artifacts("fetch-1", tmp_path / "out")

    assert got.model is not None and (got.model / "model.txt").read_text() == "weights"
    assert got.output is not None and (got.output / "report.json").is_file()
    assert got.checkpoints is not None and [p.name for p in got.checkpoints.iterdir()] == ["ckpt-3"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoints", "model", "output"]
    with pytest.raises(JobNotFound):
        backend.fetch_artifacts("no-such-job", tmp_path / "out")


def test_resume_from_copies_the_chief_checkpoints_into_every_host(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(train_spec(tmp_path), "first")
    assert wait_done(backend, "first").status == "Completed"

    backend.submit(train_spec(tmp_path, hyperparameters={"epochs": 5}), "second", resume_from="first")

    assert wait_done(backend, "second").status == "Completed"
    assert seen(backend, "second", "algo-1")["restored"] == ["ckpt-3"]
    assert seen(backend, "second", "algo-2")["restored"] == ["ckpt-3"]
    chief = backend.job_dir("second") / "hosts" / "algo-1" / "checkpoints"
    assert sorted(p.name for p in chief.iterdir()) == ["ckpt-3", "ckpt-5"]
    with pytest.raises(JobNotFound):
        backend.submit(train_spec(tmp_path), "third", resume_from="never-ran")


def test_failure_reasons(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(make_spec(tmp_path, FAIL_TRACEBACK), "fails-1")
    backend.submit(make_spec(tmp_path, FAIL_WITH_FILE), "fails-2")

    traceback, own_file = wait_done(backend, "fails-1"), wait_done(backend, "fails-2")

    assert (traceback.status, traceback.secondary_status) == ("Failed", "Failed")
    assert traceback.failure_reason == "AlgorithmError: algo-1 exited with code 1: ValueError: learning rate too high"
    assert [t.status for t in traceback.transitions] == ["Starting", "Downloading", "Training", "Failed"]
    assert own_file.failure_reason == "ClientError: the data has no labels"  # the script's output/failure wins
    assert not (backend.job_dir("fails-1") / "model.tar.gz").exists()


def test_dead_peer_gets_the_hanging_chief_killed(backend: LocalBackend, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, HANG_AND_DIE, resources={"instance_count": 2})
    started = time.monotonic()
    backend.submit(spec, "hang-1")

    info = wait_done(backend, "hang-1")

    assert time.monotonic() - started < 10  # the chief ignores SIGTERM: it took SIGKILL after the 0.5 s grace
    assert info.status == "Failed"
    assert info.failure_reason == "AlgorithmError: algo-2 exited with code 3: peer lost its data"
    assert _processes_under(backend.job_dir("hang-1") / "hosts") == []  # gone before the job was marked ended


def test_stop_ends_the_job_as_stopped_and_uploads_the_model(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(make_spec(tmp_path, SLEEP, resources={"instance_count": 2}), "stop-1")
    wait_for_line(backend, "stop-1", "ready", host="algo-1")  # the chief's model is the job's: it has written it

    answer = backend.stop("stop-1")

    assert answer.status == "Stopping"
    info = wait_done(backend, "stop-1")
    assert (info.status, info.secondary_status, info.failure_reason) == ("Stopped", "Stopped", None)
    assert [t.status for t in info.transitions][-3:] == ["Stopping", "Uploading", "Stopped"]
    got = backend.fetch_artifacts("stop-1", tmp_path / "out")
    assert got.model is not None and (got.model / "partial.txt").read_text() == "half-trained"
    assert backend.stop("stop-1").status == "Stopped"  # stopping an ended job changes nothing


def test_max_runtime_stops_the_job(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(make_spec(tmp_path, HANG_AND_DIE.replace("algo-2", "none"), resources={"max_runtime": 1}), "slow-1")

    info = wait_done(backend, "slow-1")

    assert (info.status, info.secondary_status) == ("Stopped", "MaxRuntimeExceeded")
    assert info.failure_reason is not None and "max_runtime of 1s" in info.failure_reason


def test_dead_runner_is_noticed(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(make_spec(tmp_path, SLEEP), "orphan-1")
    wait_for_line(backend, "orphan-1", "ready")
    pid = backend.store.get("local", "orphan-1").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    info = wait_done(backend, "orphan-1")

    assert (info.status, info.failure_reason) == ("Failed", "local runner process died")
    # and the worker it left behind was killed (the leftover fixture checks it)


def test_missing_requirement_fails_with_one_clear_line(backend: LocalBackend, tmp_path: Path) -> None:
    requirements = "pytest  # installed\nno-such-package-xyz>=1\n"
    spec = make_spec(tmp_path, "print('never runs')", files={"deps.txt": requirements}, requirements="deps.txt")
    backend.submit(spec, "reqs-1")

    info = wait_done(backend, "reqs-1")

    assert info.status == "Failed" and info.failure_reason is not None
    assert "never pip-installs into your environment): no-such-package-xyz>=1; install them" in info.failure_reason
    assert "\n" not in info.failure_reason


def test_submit_rejects_taken_names_and_channels_only_sagemaker_serves(backend: LocalBackend, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "print('hi')")
    backend.submit(spec, "once")
    with pytest.raises(JobExists):
        backend.submit(spec, "once")
    pipe = make_spec(tmp_path, "print('hi')", data={"train": {"uri": "s3://bucket/train", "mode": "pipe"}})
    with pytest.raises(UserError, match=r"pipe mode .* is not run by the local backend"):
        backend.submit(pipe, "pipe-job")
    assert not backend.job_dir("pipe-job").exists()
    with pytest.raises(JobNotFound):
        backend.describe("pipe-job")
    assert wait_done(backend, "once").status == "Completed"


def test_secrets_are_redacted_in_the_store(backend: LocalBackend, home: Path, tmp_path: Path) -> None:
    backend.submit(train_spec(tmp_path), "secret-1")
    wait_done(backend, "secret-1")

    env = backend.store.get("local", "secret-1").spec["environment"]

    assert env == {"API_KEY": REDACTED, "db_password": REDACTED, "GITHUB_TOKEN": REDACTED, "PLAIN": "visible"}
    assert seen(backend, "secret-1", "algo-1")["api_key_sha256"] == API_KEY_SHA256  # the script got the real value
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert b"s3cr3t" not in data and b"hunter2" not in data, path


def test_store_transitions_keep_stops_and_ends(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create(JobRecord(JobInfo("j", "local", "InProgress")))
    with pytest.raises(JobExists):
        store.create(JobRecord(JobInfo("j", "local", "InProgress")))
    store.create(JobRecord(JobInfo("j", "sagemaker", "InProgress", created=time.time() + 1)))

    store.transition("local", "j", "Stopping", status="Stopping")
    after = store.transition("local", "j", "Uploading", status="InProgress")  # a runner still reporting progress
    assert (after.info.status, after.info.secondary_status) == ("Stopping", "Uploading")
    store.transition("local", "j", "Stopped", status="Stopped")
    final = store.transition("local", "j", "Failed", status="Failed", failure_reason="late")
    assert (final.info.status, final.info.failure_reason) == ("Stopped", None)  # an ended job stays ended
    assert [t.status for t in final.info.transitions] == ["Stopping", "Uploading", "Stopped"]
    assert store.backend_of("j") == "sagemaker" and store.backend_of("k") is None
    assert [r.info.backend for r in store.list_jobs()] == ["sagemaker", "local"]


def test_a_job_store_an_older_cloudtrain_wrote_gains_the_new_columns_and_keeps_its_jobs(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "jobs.db") as db:  # as the first release wrote it: no tags, spec or pid yet
        db.execute(
            "CREATE TABLE jobs (name TEXT NOT NULL, backend TEXT NOT NULL, status TEXT NOT NULL, "
            "secondary_status TEXT NOT NULL DEFAULT '', failure_reason TEXT, created REAL, ended REAL, "
            "instance_type TEXT NOT NULL DEFAULT '', instance_count INTEGER NOT NULL DEFAULT 1, "
            "transitions TEXT NOT NULL DEFAULT '[]', metrics TEXT NOT NULL DEFAULT '{}', "
            "artifacts TEXT NOT NULL DEFAULT '{}', billable_seconds INTEGER, spot_savings_percent REAL, "
            "PRIMARY KEY (backend, name))"
        )
        db.execute("INSERT INTO jobs (name, backend, status, created) VALUES ('old', 'local', 'Completed', 1.0)")
    store = JobStore(tmp_path)
    old = store.get("local", "old")
    assert (old.info.status, old.info.tags, old.spec, old.pid) == ("Completed", {}, {}, None)
    store.create(JobRecord(JobInfo("new", "local", "InProgress", created=2.0, tags={"team": "a"})))
    assert [r.name for r in store.list_jobs()] == ["new", "old"]
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_job_store_a_newer_cloudtrain_wrote_is_refused_in_one_line(tmp_path: Path, home: Path) -> None:
    JobStore(home)
    with sqlite3.connect(home / "jobs.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    result = cloudtrain("status", home=home)
    assert result.code == 3 and result.err.count("\n") == 1, result.err
    assert "was written by a newer cloudtrain" in result.err and "Traceback" not in result.err


WRITER = """
import pathlib, sys, time
from cloudtrain.jobs import JobInfo
from cloudtrain.store import JobRecord, JobStore
home, tag, go = sys.argv[1:4]
store = JobStore(pathlib.Path(home))
pathlib.Path(home, f"ready-{tag}").touch()
while not pathlib.Path(go).exists():
    time.sleep(0.001)
for i in range(200):
    store.create(JobRecord(JobInfo(f"{tag}-{i}", "local", "InProgress", created=time.time())))
    store.transition("local", f"{tag}-{i}", "Training", message=tag)
    store.set_metrics("local", f"{tag}-{i}", {"i": i})
"""


def test_two_processes_write_records_at_once(tmp_path: Path) -> None:
    JobStore(tmp_path)  # the schema exists before the race starts, as with any real home
    go = tmp_path / "go"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag, str(go)], stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-{tag}").exists() for tag in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both start writing at the same moment
    for w in writers:
        _, err = w.communicate(timeout=60)
        assert w.returncode == 0, err.decode()

    records = JobStore(tmp_path).list_jobs(limit=1000)

    assert len(records) == 400
    infos = [r.info for r in records]
    assert all(i.secondary_status == "Training" and i.transitions[0].message == i.name[0] for i in infos)
    assert sorted(i.metrics["i"] for i in infos) == sorted(list(range(200)) * 2)
    spans = {tag: [i.created or 0.0 for i in infos if i.name[0] == tag] for tag in ("a", "b")}
    assert min(spans["a"]) < max(spans["b"]) and min(spans["b"]) < max(spans["a"])  # they really overlapped
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_secret_the_script_prints_is_masked_in_its_log_stream(
    backend: LocalBackend, home: Path, tmp_path: Path
) -> None:
    script = "import os\nprint('connecting with', os.environ['DB_PASSWORD'], flush=True)\n"
    spec = make_spec(tmp_path, script, environment={"DB_PASSWORD": "correct-horse-battery"})
    backend.submit(spec, "prints-secret")
    wait_done(backend, "prints-secret")
    assert [e.message for e in backend.logs("prints-secret") if "connecting" in e.message] == ["connecting with ***"]
    assert not any(b"correct-horse-battery" in p.read_bytes() for p in home.rglob("*.jsonl"))


# A metric line printed in two writes with TensorFlow's stderr in between (as unbuffered print does).
STDOUT_AND_STDERR = """
import sys, time
sys.stdout.write("val_accuracy=0.9000")
sys.stdout.flush()
time.sleep(0.2)
sys.stderr.write("I0000 oneDNN custom operations are on.\\n")
sys.stderr.flush()
time.sleep(0.2)
sys.stdout.write("\\n")
"""


def test_a_metric_line_is_never_cut_by_the_scripts_stderr(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(make_spec(tmp_path, STDOUT_AND_STDERR), "split-1")

    assert wait_done(backend, "split-1").status == "Completed"
    lines = [e.message for e in backend.logs("split-1")]
    assert "val_accuracy=0.9000" in lines
    assert "I0000 oneDNN custom operations are on." in lines

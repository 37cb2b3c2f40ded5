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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import cloudtrain

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


def AWS() -> dict[str, str]:
    """The loopback endpoint's AWS_* settings (the aws_endpoint fixture's) for a child cloudtrain."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def write_job(folder: Path, script: str, extra: str = "") -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "train.py").write_text(textwrap.dedent(script))
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "numbers.txt").write_text("1 2 3\n")
    path = folder / "job.yaml"
    path.write_text(SPEC + extra)
    return path


def run_job(tmp_path: Path, home: Path, script: str, extra: str = "", *args: str, **kw: Any) -> dict[str, Any]:
    """`submit --wait --json` of a small job: {"doc": the submit document, "result": the command's Result}."""
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
    assert "model/NOTES.txt was not put there by fetch-model" in result.err
    assert (project / "model" / "NOTES.txt").read_text() == "mine"
    assert sorted(p.name for p in project.iterdir()) == ["model"]

    again = tmp_path / "fresh"
    assert cloudtrain("fetch-model", job, "--to", str(again), home=home).code == 0
    assert cloudtrain("fetch-model", job, "--to", str(again), home=home).code == 0  # its own files: replaced
    (again / "output" / "my-plot.png").write_text("mine")
    refused = cloudtrain("fetch-model", job, "--to", str(again), home=home)
    assert refused.code == 2 and "output/my-plot.png" in refused.err, refused.err
    assert (again / "output" / "my-plot.png").read_text() == "mine"


def test_fetch_model_of_a_running_job_is_refused_and_creates_nothing(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, "import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home).json()["job"]["name"]
    try:
        result = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
        assert result.code == 2 and "InProgress" in result.err, result.err
        assert not (tmp_path / "out").exists()
    finally:
        cloudtrain("stop", job, "--wait", home=home)


def test_a_failed_fetch_or_one_with_nothing_to_fetch_leaves_no_empty_dir(tmp_path: Path, home: Path) -> None:
    failed = run_job(tmp_path, home, "import sys\nsys.exit(3)\n")["doc"]["job"]["name"]
    nothing = cloudtrain("fetch-model", failed, "--to", str(tmp_path / "out"), home=home)
    assert nothing.code == 0 and "nothing to fetch" in nothing.out, nothing.out
    assert not (tmp_path / "out").exists()

    job = run_job(tmp_path / "ok", home, MODEL)["doc"]["job"]["name"]
    (home / "jobs" / job / "model.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    result = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
    assert result.code == 2 and result.err.count("\n") == 1, result.err
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
print("clip \x1b]52;c;ZXZpbA==\x07 title \x1b]0;pwned\x07", flush=True)
print("clear \x1b[2J hidden \x1b[8msecret\x1b[0m cr\rover", flush=True)
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


# -- 4, 5, 6: secrets ---------------------------------------------------------------------------------------------

LEAKY = """
import os, sys
print("argv", sys.argv[1:], flush=True)
print("url", os.environ["DATABASE_URL"], "pin", os.environ["PIN_PASSWORD"], flush=True)
raise SystemExit(f"cannot log in with {os.environ['DB_PASSWORD']}")
"""
LEAKY_SPEC = """\
environment:
  DB_PASSWORD: "Sup3r-s3cret-pw"
  PIN_PASSWORD: "4821"
  DATABASE_URL: "postgres://app:dbpa55word@db.internal:5432/app"
hyperparameters: {hf_token: hf_abcdefghijklmnop, max_tokens: 512}
"""


def test_a_secret_is_masked_everywhere_a_job_shows_or_keeps_it(tmp_path: Path, home: Path) -> None:
    ran = run_job(tmp_path, home, LEAKY, LEAKY_SPEC)
    job = ran["doc"]["job"]["name"]
    assert "hyperparameters.hf_token looks like a secret" in ran["result"].err
    shown = [
        ran["result"].out,
        ran["result"].err,
        cloudtrain("status", job, home=home).out,
        cloudtrain("status", job, "--json", home=home).out,
        cloudtrain("logs", job, home=home).out,
        cloudtrain("submit", str(tmp_path / "job.yaml"), "--backend", "local", "--dry-run", home=home).out,
    ]
    # What the script is given (hyperparameters.json, as on SageMaker) is the one copy, in the private home.
    kept = [p for p in home.rglob("*") if p.is_file() and p.name != "hyperparameters.json"]
    on_disk = [p.read_bytes().decode(errors="replace") for p in kept]
    for text in shown + on_disk:
        for secret in ("Sup3r-s3cret-pw", "dbpa55word", "hf_abcdefghijklmnop", "4821"):
            assert secret not in text, (secret, text[:2000])
    assert "cannot log in with ***" in shown[2]
    assert "postgres://app:***@db.internal" in shown[4] and "pin ***" in shown[4]
    assert "512" in shown[4]  # max_tokens is no secret


def test_a_bad_set_value_of_a_secret_is_not_echoed(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, MODEL)
    result = cloudtrain("validate", str(spec), "--set", "environment.DB_PASSWORD=@Sup3r[pw", home=home)
    assert result.code == 2 and "Sup3r" not in result.err and "environment.DB_PASSWORD" in result.err, result.err


def test_the_home_and_what_it_holds_are_private(tmp_path: Path, home: Path) -> None:
    run_job(tmp_path, home, MODEL)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in [home / "jobs.db", *home.rglob("*.jsonl"), *home.rglob("runner.log")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# -- 8: metric regexes cannot hang a job ----------------------------------------------------------------------


def test_validate_rejects_a_metric_regex_that_backtracks_catastrophically(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, MODEL, 'metrics: [{name: acc, regex: "(a|a)*c([0-9])"}]\n')
    result = cloudtrain("validate", str(spec), home=home)
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "metrics[0].regex" in result.err or "metrics.0.regex" in result.err, result.err


def test_a_slow_metric_regex_does_not_stall_stop(tmp_path: Path, home: Path) -> None:
    """`a*a*a*a*a*a*c` is polynomial (n^6) for a backtracking engine: Python's re never finishes the line."""
    script = "import time\nprint('a' * 3000, flush=True)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    spec = write_job(tmp_path, script, 'metrics: [{name: acc, regex: "a*a*a*a*a*a*c([0-9])"}]\n')
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home).json()["job"]["name"]
    deadline = time.monotonic() + 30
    while "ready" not in cloudtrain("logs", job, home=home).out and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped = cloudtrain("stop", job, "--wait", "--json", home=home, timeout=60)
    assert stopped.code == 0 and stopped.json()["status"] == "Stopped", stopped.err


# -- 9, 17: what packing takes from code and data folders -------------------------------------------------------


def test_links_and_special_files_in_code_and_data_follow_one_rule(
    tmp_path: Path, home: Path, aws_endpoint: str
) -> None:
    spec = write_job(
        tmp_path,
        MODEL,
        "output: {s3_uri: s3://hostile-bucket/out}\naws: {role_arn: arn:aws:iam::123456789012:role/R}\n",
    )
    credentials = tmp_path / "credentials"
    credentials.write_text("aws_secret_access_key = very-secret\n")
    data, code = tmp_path / "data", tmp_path / "code"
    os.mkfifo(data / "pipe")
    (data / "creds").symlink_to(credentials)
    (data / "broken").symlink_to(tmp_path / "missing")
    (data / "inside").symlink_to(data / "numbers.txt")
    (code / "helper.py").write_text("X = 1\n")
    (code / "linked.py").symlink_to(code / "helper.py")
    (code / "creds").symlink_to(credentials)

    dry = cloudtrain(
        "submit", str(spec), "--backend", "sagemaker", "--dry-run", "--json", home=home, env=AWS(), timeout=60
    )

    assert dry.code == 0, dry.err
    assert "Traceback" not in dry.err
    lines = [line for line in dry.err.splitlines() if "left out" in line]
    assert len(lines) == 2, dry.err
    data_line = next(line for line in lines if "data.train" in line)
    assert "pipe (not a regular file)" in data_line and "creds -> " in data_line and "broken -> " in data_line
    assert "outside the folder" in data_line and "inside" not in data_line.split("(links")[0]
    code_line = next(line for line in lines if "code.source_dir" in line)
    assert "creds -> " in code_line and "linked.py" not in code_line


# -- 15: every process a job starts ends with it ----------------------------------------------------------------

DETACHING = """
import os, pathlib, subprocess, sys, tempfile, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
scratch = tempfile.mkdtemp(prefix="cloudtrain-worker1-")
pathlib.Path(os.environ["SM_MODEL_DIR"], "pids").write_text(f"{os.getpid()} {child.pid} {scratch}")
print("ready", flush=True)
time.sleep(300)
"""


def _started(home: Path, tmp_path: Path, *args: str) -> tuple[str, list[int], Path]:
    spec = write_job(tmp_path, DETACHING)
    grace = {"CLOUDTRAIN_STOP_GRACE": "1"}
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", *args, home=home, env=grace).json()["job"][
        "name"
    ]
    pids_file = home / "jobs" / job / "hosts" / "algo-1" / "model" / "pids"
    deadline = time.monotonic() + 30
    while not pids_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker, child, scratch = pids_file.read_text().split()
    return job, [int(worker), int(child)], Path(scratch)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pids: list[int], within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def test_stop_ends_processes_that_left_the_group_and_removes_worker_scratch(tmp_path: Path, home: Path) -> None:
    job, pids, scratch = _started(home, tmp_path)
    assert all(_alive(p) for p in pids) and str(scratch).startswith(str(home))
    assert cloudtrain("stop", job, "--wait", home=home).code == 0
    assert _gone(pids, within=5) and not scratch.exists()


def test_max_runtime_ends_processes_that_left_the_group(tmp_path: Path, home: Path) -> None:
    _, pids, _ = _started(home, tmp_path, "--set", "resources.max_runtime=3")
    assert _gone(pids)


def test_a_runner_killed_with_sigkill_takes_its_job_with_it_at_once(tmp_path: Path, home: Path) -> None:
    job, pids, _ = _started(home, tmp_path)
    with sqlite3.connect(home / "jobs.db") as db:
        (runner,) = db.execute("SELECT pid FROM jobs WHERE name = ?", (job,)).fetchone()
    os.kill(runner, signal.SIGKILL)

    assert _gone(pids)  # no cloudtrain command has looked at the job
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with sqlite3.connect(home / "jobs.db") as db:
            status, reason = db.execute("SELECT status, failure_reason FROM jobs WHERE name = ?", (job,)).fetchone()
        if status == "Failed":
            break
        time.sleep(0.1)
    assert (status, reason) == ("Failed", "local runner process died")


# -- 13: SIGTERM cleans up as Ctrl-C does ---------------------------------------------------------------------------


def _terminate_when(proc: subprocess.Popen[str], appeared: Callable[[], bool]) -> tuple[int, str]:
    """SIGTERM the command once `appeared()` holds (it is mid-way); its exit code and stderr."""
    deadline = time.monotonic() + 60
    while not appeared() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the command ended before the moment to interrupt it"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _background(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
    env.update(CLOUDTRAIN_HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"))
    return subprocess.Popen(
        [sys.executable, "-m", "cloudtrain", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _random_file(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def test_sigterm_while_packaging_leaves_no_part_file_and_no_job(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, MODEL)
    _random_file(tmp_path / "code" / "weights.bin", 200)
    proc = _background(home, "submit", str(spec), "--backend", "local")

    code, err = _terminate_when(proc, lambda: any(home.glob("jobs/*/.sourcedir.tar.gz.*.part")))

    assert code == 143 and "Traceback" not in err, err
    assert list(home.glob("jobs/*")) == [] and list(home.rglob("*.part")) == []


def test_sigterm_while_fetching_leaves_no_part_folder_and_no_dir(tmp_path: Path, home: Path) -> None:
    import tarfile

    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    _random_file(tmp_path / "big.bin", 100)
    with tarfile.open(home / "jobs" / job / "model.tar.gz", "w:gz", compresslevel=1) as tar:
        tar.add(tmp_path / "big.bin", "big.bin")
    dest = tmp_path / "fetched"
    proc = _background(home, "fetch-model", job, "--to", str(dest))

    code, err = _terminate_when(proc, lambda: any(dest.glob(".fetch.*.part")))

    assert code == 143 and "Traceback" not in err, err
    assert not dest.exists()


# -- 17: smaller things ------------------------------------------------------------------------------------------------


def test_logs_into_a_pipe_closed_early_is_no_error(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, "for i in range(20000):\n    print(i)\n")["doc"]["job"]["name"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
    env["CLOUDTRAIN_HOME"] = str(home)
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", f"{sys.executable} -m cloudtrain logs {job} | head -1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.count("\n") == 1


# -- 10, 11: submits at once ----------------------------------------------------------------------------------------


def _submits_at_once(home: Path, spec: Path, count: int, *args: str) -> list[subprocess.CompletedProcess[str]]:
    procs = [_background(home, "submit", str(spec), "--backend", "local", "--json", *args) for _ in range(count)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


def test_concurrent_submits_with_one_idempotency_key_all_report_the_one_job(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, MODEL)
    _random_file(tmp_path / "code" / "weights.bin", 20)  # packing takes a moment: the race is wide open
    done = _submits_at_once(home, spec, 6, "--idempotency-key", "pr-7")
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done if d.returncode]
    docs = [json.loads(d.stdout) for d in done]
    assert len({d["job"]["name"] for d in docs}) == 1
    assert sorted(d["created"] for d in docs) == [False] * 5 + [True]


@pytest.mark.slow
def test_thirty_parallel_submits_get_thirty_jobs(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, "print('hi')\n")
    done = _submits_at_once(home, spec, 30)
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done if d.returncode]
    assert len({json.loads(d.stdout)["job"]["name"] for d in done}) == 30


# -- 12: a broken job store ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_job_store_is_one_line_and_exit_3(tmp_path: Path, home: Path, damage: str) -> None:
    run_job(tmp_path, home, MODEL)
    db = home / "jobs.db"
    data = db.read_bytes()
    db.write_bytes(b"this is not a database" * 100 if damage == "garbage" else data[:200])
    for name in ("jobs.db-wal", "jobs.db-shm"):
        (home / name).unlink(missing_ok=True)
    result = cloudtrain("status", "--backend", "local", home=home)
    assert result.code == 3 and result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    assert "jobs.db" in result.err


def test_an_unusable_home_is_one_line_and_exit_3(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = cloudtrain("status", "--backend", "local", home=tmp_path / "a-file")
    assert result.code == 3 and result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    assert "CLOUDTRAIN_HOME" in result.err


# -- 16: the init template's metrics are the epochs' ---------------------------------------------------------------

EPOCHS_THEN_EVAL = """
print("epoch=1 loss=0.2000 accuracy=0.9500 val_loss=0.2100 val_accuracy=0.9400", flush=True)
print("epoch=2 loss=0.1000 accuracy=0.9617 val_loss=0.1100 val_accuracy=0.9550", flush=True)
print("eval report: accuracy=0.9667 macro_f1=0.9600 loss=0.0900", flush=True)
"""


def test_the_init_templates_accuracy_is_the_last_epochs_not_the_eval_reports(tmp_path: Path, home: Path) -> None:
    assert cloudtrain("init", str(tmp_path / "proj"), home=home).code == 0
    (tmp_path / "proj" / "code" / "train.py").write_text(EPOCHS_THEN_EVAL)  # the template's log lines, fast
    spec = str(tmp_path / "proj" / "job.yaml")
    done = cloudtrain("submit", spec, "--backend", "local", "--wait", "--json", home=home)
    assert done.code == 0, done.err
    assert done.json()["job"]["metrics"] == {"loss": 0.1, "accuracy": 0.9617, "val_loss": 0.11, "val_accuracy": 0.955}


def test_the_job_table_never_cuts_a_name_off_a_terminal(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, "print('hi')\n")
    name = "a-rather-long-job-name-that-users-copy-and-paste-x"
    job = cloudtrain("submit", str(spec), "--backend", "local", "--name", name, "--json", home=home).json()["job"]
    table = cloudtrain("status", "--backend", "local", home=home, env={"COLUMNS": "60"})
    assert job["name"] in table.out.split(), table.out


def test_a_silent_worker_failure_reason_does_not_end_in_a_colon(tmp_path: Path, home: Path) -> None:
    failed = run_job(tmp_path, home, "import os\nos._exit(3)\n")["doc"]["job"]
    assert failed["failure_reason"].startswith("AlgorithmError: algo-1 exited with code 3")
    assert not failed["failure_reason"].endswith(":"), failed["failure_reason"]


def test_fetched_folders_are_ordinary_folders_with_the_files_real_times(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    dest = tmp_path / "fetched"
    assert cloudtrain("fetch-model", job, "--to", str(dest), home=home).code == 0
    umask = os.umask(0o022)
    os.umask(umask)
    for folder in (dest / "model", dest / "output"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder
    assert (dest / "model" / "weights.bin").stat().st_mtime > time.time() - 3600


def _disk_bytes(root: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_sparse_file_in_the_code_stays_sparse_on_every_host(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, MODEL)
    with open(tmp_path / "code" / "preallocated.img", "wb") as f:
        f.truncate(128 << 20)  # 128 MiB that take no disk
    done = cloudtrain(
        "submit", str(spec), "--backend", "local", "--wait", "--set", "resources.instance_count=2", home=home
    )
    assert done.code == 0, done.err
    hosts = home.glob("jobs/*/hosts/*/code/preallocated.img")
    assert [p.stat().st_size for p in hosts] == [128 << 20] * 2
    assert _disk_bytes(home) < 32 << 20


PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


@pytest.mark.slow
def test_logs_of_a_large_stream_run_in_bounded_memory(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, "print('start', flush=True)\n")["doc"]["job"]["name"]
    stream = home / "jobs" / job / "logs" / "algo-1.jsonl"
    line = json.dumps({"t": time.time(), "m": "x" * 90}).encode() + b"\n"
    with open(stream, "ab") as f:
        for _ in range(80):
            f.write(line * ((1 << 20) // len(line)))  # 80 MiB of lines, as a chatty job writes them
    env = {**os.environ, "CLOUDTRAIN_HOME": str(home)}
    peak = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "cloudtrain", "logs", job],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert int(peak.stdout) < 150 << 20, f"peak RSS {int(peak.stdout) >> 20} MiB"


# -- 3: a full disk during a job -------------------------------------------------------------------------------------

FILL_THE_DISK = """
import os, pathlib
pathlib.Path(os.environ["SM_MODEL_DIR"], "weights.bin").write_bytes(os.urandom(3 << 20))
try:
    with open(os.environ["FILLER"], "wb") as f:
        while True:
            f.write(b"\\1" * (1 << 16))
            f.flush()
except OSError:
    pass
for i in range(100):
    print("while the disk is full", i, flush=True)
"""


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs as CLOUDTRAIN_HOME (mounting needs root; skipped where it cannot mount)."""
    home = tmp_path / "small-home"
    home.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(home)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield home
    finally:
        if subprocess.run(["umount", str(home)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(home)], check=False)


def test_a_full_disk_during_a_job_keeps_the_real_cause(tmp_path: Path, small_home: Path) -> None:
    filler = small_home / "filler"
    spec = write_job(tmp_path, FILL_THE_DISK, f"environment: {{FILLER: {filler}}}\n")
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=small_home).json()["job"]["name"]
    job_dir = small_home / "jobs" / job
    deadline = time.monotonic() + 60
    while not (job_dir / "tmp").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    while (job_dir / "tmp").exists() and time.monotonic() < deadline:  # the workers ran; the runner is ending
        time.sleep(0.05)

    filler.unlink()  # space is back

    deadline = time.monotonic() + 60
    while (info := cloudtrain("status", job, "--json", home=small_home)).code == 0 and not info.json()["ended"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert info.code == 0, info.err
    assert info.json()["status"] == "Failed" and "No space left on device" in info.json()["failure_reason"]
    logs = cloudtrain("logs", job, home=small_home)
    assert "lines of this host's output could not be written: No space left on device" in logs.out, logs.out
    assert "Traceback" not in logs.out + logs.err


# -- a finished job's status comes from the job store ------------------------------------------------------------------


def test_a_finished_sagemaker_jobs_status_is_answered_without_aws(
    tmp_path: Path, home: Path, aws_endpoint: str
) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="hostile-bucket")
    spec = write_job(
        tmp_path,
        MODEL,
        "output: {s3_uri: s3://hostile-bucket/out}\naws: {role_arn: arn:aws:iam::123456789012:role/R}\n",
    )
    job = cloudtrain("submit", str(spec), "--backend", "sagemaker", "--json", home=home, env=AWS()).json()["job"][
        "name"
    ]
    first = cloudtrain("status", job, "--json", home=home, env=AWS())  # moto's jobs are Completed at once
    assert first.code == 0 and first.json()["status"] == "Completed", first.err

    unreachable = {**AWS(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    again = cloudtrain("status", job, "--json", home=home, env=unreachable)

    assert again.code == 0, again.err
    assert again.json() == first.json()
    assert cloudtrain("status", "no-such-job", "--backend", "sagemaker", home=home, env=unreachable).code == 3


@pytest.mark.slow
def test_a_large_code_folder_says_what_it_is_packing_before_it_does(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, "print('hi')\n")
    many = tmp_path / "code" / "many"
    many.mkdir()
    for i in range(10_000):
        (many / f"f{i}.txt").write_text(str(i))
    submitted = cloudtrain("submit", str(spec), "--backend", "local", home=home)
    assert submitted.code == 0, submitted.err
    lines = submitted.err.splitlines()
    packing = next(i for i, line in enumerate(lines) if "code.source_dir: packing 10,001 files" in line)
    assert packing < next(i for i, line in enumerate(lines) if "submitted on local" in line)

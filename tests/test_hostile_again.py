"""Issue 20: a second hostile afternoon against the real command: each test is the issue's reproduction.

A user's command and what they see: the job ends when its script does, a fetch ends on Ctrl-C, the user's
files and devices are untouched, nothing is left running or half-written, no traceback, no raw escape,
valid JSON.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirun import cloudtrain, environment
from tests.faultproxy import Fault, FaultProxy
from tests.test_faults import aws_env, finished_sagemaker_job
from tests.test_hostile import MODEL, PEAK_RSS, _alive, _background, _random_file, run_job, write_job


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


STUBBORN_WITH_A_HIDDEN_CHILD = """\
import os, signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["sleep", "783"], start_new_session=True, env={"PATH": os.environ["PATH"]})
print("ready", flush=True)
time.sleep(300)
"""


def test_stop_ends_a_child_that_left_the_session_and_the_environment(tmp_path: Path, home: Path) -> None:
    """The script ignores SIGTERM, so its launcher is killed after the grace: its setsid child, without the job's
    mark in its environment, is still the runner's (a subreaper) to end."""
    spec = write_job(tmp_path, STUBBORN_WITH_A_HIDDEN_CHILD)
    grace = {"CLOUDTRAIN_STOP_GRACE": "1"}
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home, env=grace).json()["job"]["name"]
    _when_logged(home, job, "ready")
    assert _processes_running(["sleep", "783"])

    stopped = cloudtrain("stop", job, "--wait", home=home, timeout=60)

    assert stopped.code == 0, stopped.err
    assert _processes_running(["sleep", "783"]) == []
    assert "ended 1 process(es)" in cloudtrain("logs", job, home=home).out


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


# -- 3: channel names that are no folder names ----------------------------------------------------------------------


@pytest.mark.parametrize("channel", [".", ".."])
def test_a_data_channel_named_dot_is_refused_and_writes_into_no_data_folder(
    tmp_path: Path, home: Path, channel: str
) -> None:
    spec = write_job(tmp_path, MODEL)
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.csv").write_text("1\n")
    spec.write_text(spec.read_text().replace("data: {train: data}", f'data: {{"{channel}": d1, train: d2}}'))
    spec.write_text(spec.read_text().replace("instance_count: 1", "instance_count: 2"))

    for command in (["validate"], ["submit", "--backend", "local"]):
        result = cloudtrain(*command, str(spec), home=home)
        assert result.code == 2 and result.err.count("\n") == 1, result.err
        assert f"data.{channel}" in result.err or f"data['{channel}']" in result.err, result.err
    assert [p.name for p in (tmp_path / "d1").iterdir()] == ["x.csv"]


# -- 4: one long value ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "limit"), [("environment: {BIG: %s}", "512"), ("hyperparameters: {big: %s}", "2500")]
)
def test_a_value_longer_than_aws_takes_is_one_line_from_validate(
    tmp_path: Path, home: Path, section: str, limit: str
) -> None:
    spec = write_job(tmp_path, MODEL, section % ("a" * 200_000) + "\n")
    result = cloudtrain("validate", str(spec), home=home, timeout=60)
    assert result.code == 2 and result.err.count("\n") == 1, result.err[:500]
    assert ("environment.BIG" in result.err or "hyperparameters.big" in result.err) and limit in result.err


def test_masking_a_long_value_takes_one_pass(tmp_path: Path) -> None:
    """The URL-password pattern runs on every value the store keeps: a megabyte without a URL is one pass, not
    the quadratic minutes that held the store's lock (the timeout only ends a hang)."""
    code = "from cloudtrain.redact import redact_environment; redact_environment({'X': 'a' * 1_000_000})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- 5, 6: what cloudtrain writes never replaces what it did not make ---------------------------------------------


def test_schema_out_never_replaces_a_link_a_fifo_or_a_device(tmp_path: Path, home: Path) -> None:
    target = tmp_path / "target.json"
    target.write_text("mine")
    (tmp_path / "link.json").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "folder").mkdir()
    for out, kind in [
        ("link.json", "symbolic link"),
        ("fifo.json", "FIFO"),
        ("folder", "folder"),
        ("/dev/full", "device"),
    ]:
        result = cloudtrain("schema", "--out", str(tmp_path / out), home=home)
        assert result.code == 2 and result.err.count("\n") == 1 and kind in result.err, result.err
    assert (tmp_path / "link.json").is_symlink() and target.read_text() == "mine"
    assert stat.S_ISFIFO((tmp_path / "fifo.json").lstat().st_mode) and list((tmp_path / "folder").iterdir()) == []
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)
    nowhere = cloudtrain("schema", "--out", "/proc/x/y", home=home)
    assert nowhere.code == 2 and nowhere.err.startswith("error: cannot write to /proc/x/y"), nowhere.err
    written = cloudtrain("schema", "--out", str(target), home=home)  # a regular file is what --out replaces
    assert written.code == 0 and target.read_text().startswith("{")


def test_fetch_model_keeps_the_users_dot_old_folders(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    dest = tmp_path / "f"
    assert cloudtrain("fetch-model", job, "--to", str(dest), home=home).code == 0
    for name in (".model.old", ".output.old"):
        (dest / name).mkdir()
        (dest / name / "mine.txt").write_text("x")

    again = cloudtrain("fetch-model", job, "--to", str(dest), home=home)

    assert again.code == 0, again.err
    assert (dest / ".model.old" / "mine.txt").read_text() == "x" and (
        dest / ".output.old" / "mine.txt"
    ).read_text() == "x"
    assert (dest / "model" / "weights.bin").read_text() == "w"
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith(".") and "old" not in p.name) == [
        ".cloudtrain-fetch.json"
    ]


# -- 14: exit codes and tracebacks ----------------------------------------------------------------------------------


def _shell(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A shell line with `cloudtrain` in it, as a user types it (pipefail: cloudtrain's own exit code counts)."""
    line = command.replace("cloudtrain ", f"{sys.executable} -m cloudtrain ")
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", line], env=environment(home), capture_output=True, text=True, timeout=120
    )


def test_output_into_a_closed_pipe_or_a_full_disk_is_no_traceback(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    head = _shell(home, f"cloudtrain status {job} | head -1")
    assert head.returncode == 0 and head.stderr == "" and head.stdout.count("\n") == 1, head
    for command in (f"status {job}", f"status {job} --json", "status", f"logs {job}", "schema"):
        full = _shell(home, f"cloudtrain {command} > /dev/full")
        assert full.returncode == 2, (command, full.stderr)
        assert full.stderr == "error: cannot write the output: No space left on device\n", (command, full.stderr)


def test_init_where_no_folder_can_be_is_one_line(tmp_path: Path, home: Path) -> None:
    (tmp_path / "afile").write_text("")
    for folder in ("/proc/x", str(tmp_path / "afile" / "sub")):
        result = cloudtrain("init", folder, home=home)
        assert result.code == 2 and result.err.startswith(f"error: cannot write to {folder}"), result.err
        assert result.err.count("\n") == 1


def test_bad_numbers_and_empty_names_on_the_command_line_are_refused_before_anything_is_created(
    tmp_path: Path, home: Path
) -> None:
    spec = write_job(tmp_path, MODEL)
    for args in (["--wait", "--timeout", "-1"], ["--wait", "--timeout", "nan"], ["--resume", ""]):
        result = cloudtrain("submit", str(spec), "--backend", "local", *args, home=home)
        assert result.code == 2 and result.err.count("\n") == 1 and result.err.startswith("error: --"), result.err
    assert not (home / "jobs").exists() or list((home / "jobs").iterdir()) == []
    limit = cloudtrain("status", "--limit", "-5", home=home)
    assert limit.code == 2 and "--limit" in limit.err, limit.err


def test_tensorboard_on_a_port_it_cannot_have_is_bad_input(tmp_path: Path, home: Path) -> None:
    import socket

    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cloudtrain("tensorboard", job, "--port", str(port), "--no-browser", home=home, timeout=120)
    assert busy.code == 2 and f"--port {port}" in busy.err and busy.err.count("\n") == 1, busy.err
    wrong = cloudtrain("tensorboard", job, "--port", "99999", "--no-browser", home=home)
    assert wrong.code == 2 and "--port" in wrong.err, wrong.err


# -- 13: leftovers after signals -------------------------------------------------------------------------------------


def test_sighup_while_packaging_leaves_no_part_file_and_no_job(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, MODEL)
    _random_file(tmp_path / "code" / "weights.bin", 200)
    proc = _background(home, "submit", str(spec), "--backend", "local")
    deadline = time.monotonic() + 60
    while not any(home.glob("jobs/*/.sourcedir.tar.gz.*.part")) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 129 and "Traceback" not in err, err
    assert list(home.glob("jobs/*")) == [] and list(home.rglob("*.part")) == []


def test_a_fetch_killed_with_sigkill_leaves_a_part_folder_the_next_fetch_removes(tmp_path: Path, home: Path) -> None:
    import tarfile

    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    _random_file(tmp_path / "big.bin", 100)
    with tarfile.open(home / "jobs" / job / "model.tar.gz", "w:gz", compresslevel=1) as tar:
        tar.add(tmp_path / "big.bin", "big.bin")
    dest = tmp_path / "fetched"
    dest.mkdir()
    (dest / ".fetch.mine.part").mkdir()  # the user's own, with no mark: never removed
    proc = _background(home, "fetch-model", job, "--to", str(dest))
    deadline = time.monotonic() + 60
    while len(list(dest.glob(".fetch.*.part"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=60)
    assert len(list(dest.glob(".fetch.*.part"))) == 2

    again = cloudtrain("fetch-model", job, "--to", str(dest), home=home)

    assert again.code == 0, again.err
    assert [p.name for p in dest.glob(".fetch.*.part")] == [".fetch.mine.part"]
    assert (dest / "model" / "big.bin").stat().st_size == 100 << 20


# -- 12: a password in an endpoint URL ----------------------------------------------------------------------------


def test_config_never_shows_the_password_of_an_endpoint_url(tmp_path: Path, home: Path) -> None:
    env = {"CLOUDTRAIN_ENDPOINT_URL": "http://bob:S3cret@127.0.0.1:9"}
    for args in ([], ["--json"]):
        shown = cloudtrain("config", *args, home=home, env=env)
        assert shown.code == 0 and "S3cret" not in shown.out + shown.err, shown.out
        assert "http://bob:***@127.0.0.1:9" in shown.out
    config = home / "xdg" / "cloudtrain" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("endpoint_url: http://bob:S3cret@127.0.0.1:9\n")
    from_file = cloudtrain("config", home=home)
    assert from_file.code == 0 and "S3cret" not in from_file.out and "bob:***@" in from_file.out, from_file.out


# -- 11: --json is JSON -----------------------------------------------------------------------------------------------


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_has_no_infinity_or_nan(tmp_path: Path, home: Path) -> None:
    script = "print('loss=inf acc=nan', flush=True)\n" + MODEL
    metrics = 'metrics: [{name: loss, regex: "loss=([a-z0-9.]+)"}, {name: acc, regex: "acc=([a-z0-9.]+)"}]\n'
    ran = run_job(tmp_path, home, script, metrics)
    job = ran["doc"]["job"]["name"]
    for text in (ran["result"].out, cloudtrain("status", job, "--json", home=home).out):
        shown = _strict_json(text)
        assert shown is not None
    assert "loss = inf" in cloudtrain("status", job, home=home).out

    spec = write_job(tmp_path, MODEL, "hyperparameters: {lr: .nan, steps: .inf}\n")
    dry = cloudtrain("submit", str(spec), "--backend", "local", "--dry-run", "--json", home=home)
    assert dry.code == 2 and "hyperparameters.lr" in dry.err and dry.err.count("\n") == 1, dry.err


# -- 8: escapes from a spec's name and keys -------------------------------------------------------------------------


def test_a_spec_file_name_and_hyperparameters_with_escapes_reach_no_terminal(tmp_path: Path, home: Path) -> None:
    write_job(tmp_path, MODEL)
    evil = tmp_path / "evil\x1b]0;PWNED\x07\x1b[31m.yaml"
    (tmp_path / "job.yaml").rename(evil)
    shown = [
        cloudtrain("validate", str(evil), home=home),
        cloudtrain("submit", str(evil), "--backend", "local", "--dry-run", home=home),
    ]

    escaping = write_job(tmp_path / "hp", MODEL, 'hyperparameters: {"k\\e[2J": "v\\e]0;x\\a y", lr: 0.1}\n')
    shown.append(cloudtrain("validate", str(escaping), home=home))
    first = run_job(tmp_path / "one", home, MODEL, 'hyperparameters: {"k\\e[2J": "v\\e]0;x\\a y", lr: 0.1}\n')
    second = run_job(tmp_path / "two", home, MODEL, 'hyperparameters: {"k\\e[2J": "w\\e[8m", lr: 0.2}\n')
    names = [first["doc"]["job"]["name"], second["doc"]["job"]["name"]]
    shown += [first["result"], cloudtrain("compare", *names, home=home)]

    for result in shown:
        assert result.code == 0, result.err
        text = result.out + result.err
        assert "\x1b" not in text and "\x07" not in text, text
    assert "\\x1b]0;PWNED\\x07" in shown[0].out
    assert "k\\x1b[2J" in shown[-1].out


# -- 9: TensorBoard ends with its command -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_tensorboard_ends_with_its_command_however_that_ends(tmp_path: Path, home: Path, sig: int) -> None:
    from tests.test_tensorboard import free_port, processes_using, tensorboard_folder

    job = run_job(tmp_path, home, MODEL)["doc"]["job"]["name"]
    port = free_port()
    board = _background(home, "tensorboard", job, "--no-browser", "--port", str(port))
    assert board.stdout is not None
    assert board.stdout.readline().startswith(f"TensorBoard at http://127.0.0.1:{port}/")
    folder = tensorboard_folder(board.pid)
    assert folder is not None and processes_using(folder)

    board.send_signal(sig)
    board.communicate(timeout=60)

    assert board.returncode == (129 if sig == signal.SIGHUP else -signal.SIGKILL)
    deadline = time.monotonic() + 20
    while (processes_using(folder) or folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_using(folder) and not folder.exists()


# -- 17: smaller ----------------------------------------------------------------------------------------------------


def test_fetch_model_of_a_job_that_saved_no_model_says_so(tmp_path: Path, home: Path) -> None:
    job = run_job(tmp_path, home, "print('trained, saved nothing')\n")["doc"]["job"]["name"]
    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
    assert fetched.code == 0 and "the model folder is empty" in fetched.out, fetched.out
    assert "saved nothing to SM_MODEL_DIR" in cloudtrain("logs", job, home=home).out


def test_compare_shows_one_short_row_per_differing_field(tmp_path: Path, home: Path) -> None:
    metrics = "metrics: [{name: loss, regex: 'loss=([0-9.]+)'}, {name: accuracy, regex: 'acc=([0-9.]+)'}]\n"
    first = run_job(tmp_path / "one", home, MODEL, metrics)["doc"]["job"]["name"]
    spec = write_job(tmp_path / "two", MODEL)
    spec.write_text(spec.read_text().replace("data: {train: data}\n", "data: {}\n"))
    second = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home).json()["job"]["name"]

    shown = cloudtrain("compare", first, second, home=home)

    assert shown.code == 0, shown.err
    rows = {line.split()[0]: line for line in shown.out.splitlines() if line.strip()}
    assert "data" not in rows and rows["data.train"].split()[-1] == "-", shown.out
    assert "metrics.0.regex" in rows and "metrics" not in rows, shown.out
    assert "{" not in shown.out and "[" not in rows["metrics.0.name"], shown.out


def test_a_truncated_job_store_beside_job_folders_is_an_error_not_no_jobs(tmp_path: Path, home: Path) -> None:
    run_job(tmp_path, home, MODEL)
    (home / "jobs.db").write_bytes(b"")
    for name in ("jobs.db-wal", "jobs.db-shm"):
        (home / name).unlink(missing_ok=True)
    shown = cloudtrain("status", home=home)
    assert shown.code == 3 and shown.err.count("\n") == 1 and "job folder" in shown.err, shown.err


def test_set_an_item_of_a_list_the_spec_does_not_have_names_the_list(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, MODEL)
    result = cloudtrain("validate", str(spec), "--set", "metrics.0.name=x", home=home)
    assert result.code == 2 and "no such item (metrics has 0)" in result.err, result.err
    assert "expected a list" not in result.err


# -- 7: the spec's environment and the runner's own settings -----------------------------------------------------

IGNORES_SIGTERM = """\
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""


def _when_logged(home: Path, job: str, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in cloudtrain("logs", job, home=home).out and time.monotonic() < deadline:
        time.sleep(0.2)


def test_the_specs_environment_never_reaches_the_runners_own_settings(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, IGNORES_SIGTERM, 'environment: {CLOUDTRAIN_STOP_GRACE: "1e9"}\n')
    mine = {"CLOUDTRAIN_STOP_GRACE": "1"}  # the user's own setting, in the shell that submits
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home, env=mine).json()["job"]["name"]
    _when_logged(home, job, "ready")
    stopped = cloudtrain("stop", job, "--wait", "--json", home=home, timeout=60)
    assert stopped.code == 0 and stopped.json()["status"] == "Stopped", stopped.err

    plain = write_job(tmp_path / "abc", MODEL, 'environment: {CLOUDTRAIN_STOP_GRACE: "abc"}\n')
    ran = cloudtrain("submit", str(plain), "--backend", "local", "--wait", "--json", home=home)
    assert ran.code == 0 and ran.json()["job"]["status"] == "Completed", ran.out + ran.err
    wrong = cloudtrain("submit", str(plain), "--backend", "local", home=home, env={"CLOUDTRAIN_STOP_GRACE": "abc"})
    assert wrong.code == 2 and wrong.err.startswith("error: CLOUDTRAIN_STOP_GRACE: expected seconds"), wrong.err


# -- 10: output without newlines ------------------------------------------------------------------------------------

NO_NEWLINES = """\
import os, sys, time
for _ in range(128):
    os.write(1, b"x" * (1 << 20))  # a megabyte at a time, not one newline
for i in range(100_000):
    os.write(2, f"{i}%\\r".encode())  # tqdm's redraws
print("\\ndone", flush=True)
time.sleep(3)
"""


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    return 0


@pytest.mark.slow  # 128 MiB through a job and `logs`: about a minute on 2 busy cores
def test_output_without_newlines_is_carried_in_bounded_memory(tmp_path: Path, home: Path) -> None:
    import sqlite3

    spec = write_job(tmp_path, NO_NEWLINES)
    job = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home).json()["job"]["name"]
    with sqlite3.connect(home / "jobs.db") as db:
        (runner,) = db.execute("SELECT pid FROM jobs WHERE name = ?", (job,)).fetchone()
    peak = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            peak = max(peak, _peak_rss(runner))
        except OSError:
            break  # the runner has ended
        time.sleep(0.2)
    assert peak < 200 << 20, f"the runner peaked at {peak >> 20} MiB"
    assert cloudtrain("status", job, "--json", home=home).json()["status"] == "Completed"

    head = _shell(home, f"cloudtrain logs {job} | head -c 10")
    assert head.returncode == 0 and len(head.stdout) == 10, head.stderr
    measured = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "cloudtrain", "logs", job],
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert int(measured.stdout) < 200 << 20, f"logs peaked at {int(measured.stdout) >> 20} MiB"
    assert "done" in cloudtrain("logs", job, home=home, timeout=300).out


# -- 15: resume from checkpoints that hold a FIFO, or that rotate -----------------------------------------------

WRITES_CHECKPOINTS = """\
import os, pathlib
folder = pathlib.Path(os.environ["CLOUDTRAIN_CHECKPOINT_DIR"])
folder.mkdir(parents=True, exist_ok=True)
(folder / "ckpt-1").write_text("weights")
os.mkfifo(folder / "pipe")
"""
ROTATES_CHECKPOINTS = """\
import os, pathlib, time
folder = pathlib.Path(os.environ["CLOUDTRAIN_CHECKPOINT_DIR"])
folder.mkdir(parents=True, exist_ok=True)
print("ready", flush=True)
for i in range(1_000_000):
    for n in range(20):
        (folder / f"ckpt-{i}.{n}").write_bytes(b"w" * 4096)
    for n in range(20):
        (folder / f"ckpt-{i}.{n}").unlink()
    (folder / f"ckpt-{i}.0").write_bytes(b"w")
    time.sleep(0.001)
"""
RESUMED = """\
import os, pathlib
found = sorted(p.name for p in pathlib.Path(os.environ["CLOUDTRAIN_CHECKPOINT_DIR"]).iterdir())
print("restored", found, flush=True)
"""


def test_resuming_from_checkpoints_with_a_fifo_leaves_the_fifo_out(tmp_path: Path, home: Path) -> None:
    first = run_job(tmp_path / "one", home, WRITES_CHECKPOINTS + MODEL)["doc"]["job"]["name"]
    resumed = run_job(tmp_path / "two", home, RESUMED + MODEL, "", "--resume", first)
    assert resumed["result"].code == 0 and resumed["doc"]["job"]["status"] == "Completed", resumed["result"].err
    logs = cloudtrain("logs", resumed["doc"]["job"]["name"], home=home).out
    assert "restored ['ckpt-1']" in logs and "pipe (not a regular file)" in logs, logs


def test_resuming_from_a_running_job_whose_checkpoints_rotate_works_every_time(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path / "one", ROTATES_CHECKPOINTS)
    running = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home).json()["job"]["name"]
    try:
        _when_logged(home, running, "ready")
        for attempt in range(3):
            resumed = run_job(tmp_path / f"try{attempt}", home, RESUMED + MODEL, "", "--resume", running)
            assert resumed["doc"]["job"]["status"] == "Completed", resumed["doc"]["job"]["failure_reason"]
    finally:
        cloudtrain("stop", running, "--wait", home=home)

"""cloudtrain as a CI step: JSON shapes, plain output, streaming logs, --wait's exit codes, the example workflow.

Every test runs the real command in a subprocess, with tiny plain-Python entry points (no TensorFlow).
"""

from __future__ import annotations

import copy
import json
import os
import pty
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from cloudtrain.output_schemas import names, output_schema
from tests.clirun import REPO, Result, cloudtrain
from tests.test_cli import TINY, write_job

WORKFLOW = REPO / "docs" / "github-actions.yml"
CI_DOC = REPO / "docs" / "ci.md"
ESC = "\x1b["

# Prints a line, then runs until the file $RELEASE appears: a job the test ends when it wants.
WAITER = """\
    import json, os, pathlib, time
    print("tick from", os.environ["SM_CURRENT_HOST"])  # no flush: the container contract makes output unbuffered
    release = pathlib.Path(os.environ["RELEASE"])
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("released")
    open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "w").write("w")
    """


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def ct(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    """`cloudtrain ARGS`, with a config folder of its own (a developer's config file never leaks in)."""
    return cloudtrain(*args, home=home, env={"XDG_CONFIG_HOME": str(home / "xdg"), **(env or {})}, timeout=timeout)


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `ct` gives, minus PYTHONUNBUFFERED: streaming must not depend on it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_", "PYTHONUNBUFFERED"))}
    env.update(CLOUDTRAIN_HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"), COLUMNS="200")
    env.update(extra or {})
    return env


class Running:
    """A `cloudtrain` subprocess whose stdout and stderr lines are read as they come."""

    def __init__(self, *args: str, home: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudtrain", *args],
            cwd=REPO,
            env=child_env(home, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[str, queue.Queue[str | None]] = {"out": queue.Queue(), "err": queue.Queue()}
        self.seen: dict[str, list[str]] = {"out": [], "err": []}
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(stream, self.lines[name]), daemon=True).start()

    @staticmethod
    def _pump(stream: Any, into: queue.Queue[str | None]) -> None:
        for line in stream:
            into.put(line)
        into.put(None)

    def wait_line(self, stream: str, check: Callable[[str], bool], timeout: float = 60) -> str:
        """The first new line of stdout or stderr that passes `check`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines[stream].get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self.lines[stream].put(None)
                break
            self.seen[stream].append(line)
            if check(line):
                return line
        raise AssertionError(f"no such line on std{stream} within {timeout}s; seen: {self.seen[stream]}")

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Exit code and the rest of stdout and stderr (with what wait_line saw)."""
        code = self.proc.wait(timeout=timeout)
        for name in ("out", "err"):
            while (line := self.lines[name].get(timeout=10)) is not None:
                self.seen[name].append(line)
        return code, "".join(self.seen["out"]), "".join(self.seen["err"])


def waiting_job(tmp_path: Path) -> tuple[Path, Path]:
    """A spec of one host running WAITER, and the file that releases it."""
    release = tmp_path / "release"
    spec = write_job(tmp_path, WAITER, f"environment: {{RELEASE: '{release}'}}\n")
    return spec, release


def wait_status(job: str, home: Path, want: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = ct("status", job, "--json", home=home).json()
        if info["status"] in want or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


# --- JSON shapes ----------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The schema with every object closed to undocumented fields (the published one lets consumers add)."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def check_shape(name: str, document: Any) -> None:
    """`document` is valid under the published schema and uses no field the schema does not document."""
    schema = output_schema(name)
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(document)
    Draft202012Validator(strict(schema)).validate(document)


def test_every_json_output_matches_its_schema(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path / "a", TINY)
    bad = write_job(tmp_path / "b", TINY, "bakend: local\n")

    valid = ct("validate", str(spec), "--json", home=home)
    check_shape("validate", valid.json())
    mixed = ct("validate", str(spec), str(bad), "--json", home=home)
    assert mixed.code == 2 and mixed.err.count("error: ") == 1 and "did you mean 'backend'" in mixed.err
    check_shape("validate", mixed.json())
    assert [v["valid"] for v in mixed.json()] == [True, False] and mixed.json()[1]["line"] == 8

    dry = ct("submit", str(spec), "--backend", "local", "--dry-run", "--json", home=home)
    assert dry.code == 0, dry.err
    check_shape("submit", dry.json())

    done = ct("submit", str(spec), "--backend", "local", "--wait", "--json", home=home)
    assert done.code == 0, done.err
    check_shape("submit", done.json())
    job = done.json()["job"]["name"]
    other = ct("submit", str(spec), "--backend", "local", "--set", "hyperparameters.epochs=3", "--wait", home=home)
    assert other.code == 0, other.err

    check_shape("status", ct("status", job, "--json", home=home).json())
    listed = ct("status", "--json", home=home).json()
    assert len(listed) == 2
    check_shape("status-list", listed)
    lines = ct("logs", job, "--json", home=home).out.splitlines()
    assert lines
    for line in lines:
        check_shape("logs", json.loads(line))
    check_shape("stop", ct("stop", job, "--json", home=home).json())
    fetched = ct("fetch-model", job, "--to", str(tmp_path / "out"), "--json", home=home)
    assert fetched.json()["evaluation"] == {"accuracy": 0.5, "loss": None}
    check_shape("fetch-model", fetched.json())
    second = listed[0]["name"]
    check_shape("compare", ct("compare", job, second, "--json", home=home).json())
    check_shape("config", ct("config", "--json", home=home).json())

    (tmp_path / "a" / "Dockerfile").write_text("FROM scratch\nCOPY .cloudtrain/python /opt/cloudtrain/python\n")
    image = ["--set", "image.build={dockerfile: Dockerfile, context: .}", "--context-out", str(tmp_path / "ctx")]
    built = ct("build", str(spec), *image, "--dry-run", "--json", home=home)
    assert built.code == 0, built.err
    check_shape("build", built.json())


def test_schema_command_prints_each_output_schema(home: Path) -> None:
    for name in names():
        printed = ct("schema", "--output-of", name, home=home)
        assert printed.code == 0, printed.err
        assert printed.json() == output_schema(name)
        Draft202012Validator.check_schema(printed.json())
    unknown = ct("schema", "--output-of", "nope", home=home)
    assert unknown.code == 2 and "status-list" in unknown.err and unknown.out == ""


def test_build_schema_matches_the_build_result() -> None:
    from cloudtrain.image.build import BuildResult  # cloudtrain's own module: a broken import fails, never skips

    fields = set(BuildResult.__dataclass_fields__)
    assert set(output_schema("build")["properties"]) == fields


def test_docs_describe_every_output_schema() -> None:
    text = CI_DOC.read_text()
    for name in names():
        assert f"`{name}`" in text, name


# --- plain output and streaming ------------------------------------------------------------------------


def in_terminal(*args: str, home: Path, ci: str | None = None) -> str:
    """The output of `cloudtrain ARGS` run on a pseudo-terminal, as a user at a terminal sees it."""
    env = child_env(home, {"TERM": "xterm-256color"})
    for name in ("CI", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "GITHUB_ACTIONS"):
        env.pop(name, None)
    if ci is not None:
        env["CI"] = ci
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudtrain", *args],
        cwd=REPO,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    chunks = []
    while True:
        ready, _, _ = select.select([controller], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=30)
    os.close(controller)
    return b"".join(chunks).decode()


def test_no_colour_when_piped_or_ci_is_set(tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, TINY)
    done = ct("submit", str(spec), "--backend", "local", "--wait", home=home)
    assert done.code == 0 and ESC not in done.out + done.err  # a pipe: never an escape sequence
    job = ct("status", "--json", home=home).json()[0]["name"]
    assert ESC in in_terminal("status", job, home=home)  # a terminal: colour
    assert ESC not in in_terminal("status", job, home=home, ci="true")
    assert ESC not in in_terminal("status", home=home, ci="1")


def test_logs_follow_prints_each_line_while_the_job_runs(tmp_path: Path, home: Path) -> None:
    spec, release = waiting_job(tmp_path)
    submitted = ct(
        "submit", str(spec), "--backend", "local", "--set", "resources.instance_count=1", "--json", home=home
    )
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]
    follow = Running("logs", job, "--follow", home=home, env={"CI": "true"})
    try:
        line = follow.wait_line("out", lambda text: "tick from algo-1" in text)
        assert re.match(r"^\d\d:\d\d:\d\d algo-1 tick from algo-1$", line.rstrip("\n"))
        assert ct("status", job, "--json", home=home).json()["status"] == "InProgress"  # the job waits for us
        release.touch()
        code, out, err = follow.finish()
    finally:
        release.touch()
        follow.proc.kill()
    assert code == 0, err
    assert out.index("tick from") < out.index("released")


# --- submit --wait: exit codes, timeout, Ctrl-C -----------------------------------------------------


def test_wait_timeout_exits_4_and_leaves_the_job_running(tmp_path: Path, home: Path) -> None:
    spec, release = waiting_job(tmp_path)
    args = ("submit", str(spec), "--backend", "local", "--set", "resources.instance_count=1", "--wait")
    result = ct(*args, "--timeout", "2", "--json", home=home)
    try:
        assert result.code == 4, result.err
        doc = result.json()  # the document still comes, with the job as it was
        check_shape("submit", doc)
        job = doc["job"]["name"]
        assert doc["job"]["status"] == "InProgress"
        last = result.err.strip().splitlines()[-1]
        assert last.startswith("error: timed out after 2s") and f"cloudtrain stop {job}" in last
        assert ct("status", job, "--json", home=home).json()["status"] == "InProgress"
    finally:
        release.touch()
    assert wait_status(job, home, {"Completed", "Failed"})["status"] == "Completed"


@pytest.fixture
def takes_ctrl_c() -> Iterator[None]:
    """Children that take SIGINT as Ctrl-C, however the tests were started.

    A shell that runs a command in the background (`.ci/run &`) starts it with SIGINT ignored, and an
    ignored signal stays ignored through exec: the child would never see the test's Ctrl-C. A handled
    one is reset to the default in the child, which Python then turns into KeyboardInterrupt.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


INTERRUPTS = [
    pytest.param(signal.SIGINT, 130, id="ctrl-c"),
    pytest.param(signal.SIGTERM, 143, id="sigterm"),  # what GitLab, Jenkins, Kubernetes send a cancelled run
]


@pytest.mark.usefixtures("takes_ctrl_c")
@pytest.mark.parametrize(("sent", "exit_code"), INTERRUPTS)
def test_ctrl_c_detaches_and_the_job_keeps_running(tmp_path: Path, home: Path, sent: int, exit_code: int) -> None:
    spec, release = waiting_job(tmp_path)
    waiting = Running(
        "submit", str(spec), "--backend", "local", "--set", "resources.instance_count=1", "--wait", home=home
    )
    try:
        waiting.wait_line("err", lambda line: "tick from algo-1" in line)  # it is in the wait, streaming logs
        waiting.proc.send_signal(sent)
        code, _, err = waiting.finish()
        job = re.search(r"job (\S+) submitted", err).group(1)
        assert code == exit_code, err
        assert f"detached: job {job} keeps running" in err and f"cloudtrain logs {job} --follow" in err
        assert "Traceback" not in err
        assert ct("status", job, "--json", home=home).json()["status"] == "InProgress"
    finally:
        release.touch()
        waiting.proc.kill()
    assert wait_status(job, home, {"Completed", "Failed"})["status"] == "Completed"


@pytest.mark.usefixtures("takes_ctrl_c")
@pytest.mark.parametrize(("sent", "exit_code"), INTERRUPTS)
def test_ctrl_c_with_stop_on_interrupt_stops_the_job(tmp_path: Path, home: Path, sent: int, exit_code: int) -> None:
    spec, release = waiting_job(tmp_path)
    args = ("submit", str(spec), "--backend", "local", "--set", "resources.instance_count=1")
    waiting = Running(*args, "--wait", "--stop-on-interrupt", "--json", home=home)
    try:
        waiting.wait_line("err", lambda line: "tick from algo-1" in line)
        waiting.proc.send_signal(sent)
        code, out, err = waiting.finish()
    finally:
        release.touch()
        waiting.proc.kill()
    assert code == exit_code, err
    doc = json.loads(out)
    assert doc["job"]["status"] == "Stopped", err
    assert f"job {doc['job']['name']} Stopped" in err
    assert ct("status", doc["job"]["name"], "--json", home=home).json()["status"] == "Stopped"


def test_wait_exits_1_when_the_job_is_stopped_and_0_with_artifacts_when_completed(tmp_path: Path, home: Path) -> None:
    spec, release = waiting_job(tmp_path)
    args = ("submit", str(spec), "--backend", "local", "--set", "resources.instance_count=1", "--wait")
    waiting = Running(*args, home=home)
    try:
        line = waiting.wait_line("err", lambda text: "submitted on local" in text)
        job = re.search(r"job (\S+) submitted", line).group(1)
        waiting.wait_line("err", lambda text: "tick from" in text)
        assert ct("stop", job, home=home).code == 0
        code, _, err = waiting.finish()
    finally:
        release.touch()
        waiting.proc.kill()
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: job {job} ended Stopped"), err

    completed = ct(*args, home=home)
    assert completed.code == 0, completed.err
    job = re.search(r"job (\S+) submitted", completed.err).group(1)
    assert re.search(rf"model\s+\S*/jobs/{job}/model.tar.gz", completed.out)  # where the artifacts are
    assert f"cloudtrain fetch-model {job}" in completed.out  # and what to do next


def test_timeout_without_wait_is_bad_input(tmp_path: Path, home: Path) -> None:
    result = ct("submit", str(write_job(tmp_path, TINY)), "--timeout", "5", home=home)
    assert result.code == 2 and result.err.startswith("error: --timeout") and "--wait" in result.err


# --- shell completion --------------------------------------------------------------------------------


def test_shell_completion(home: Path) -> None:
    script = ct("--show-completion", "bash", home=home)
    assert script.code == 0 and "complete -o default -F _cloudtrain_completion cloudtrain" in script.out
    words = ct(
        home=home, env={"_CLOUDTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "cloudtrain comp", "COMP_CWORD": "1"}
    )
    assert words.code == 0 and words.out.split() == ["compare"]
    options = ct(
        home=home,
        env={"_CLOUDTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "cloudtrain submit --stop", "COMP_CWORD": "2"},
    )
    assert options.out.split() == ["--stop-on-interrupt"]


# --- the example GitHub Actions workflow ------------------------------------------------------------


def test_github_actions_workflow_runs_against_the_sagemaker_stand_in(
    sagemaker_endpoint: Any, tmp_path: Path, home: Path
) -> None:
    """The workflow's `run:` steps, in order, as GitHub runs them (bash -eo pipefail), against the stand-in.

    A second run attempt of the train job creates no second training job. Steps that only install things
    (`install`, and every `uses:`) are skipped: the test's venv has cloudtrain.
    """
    import boto3

    workflow = yaml.safe_load(WORKFLOW.read_text())
    workspace = tmp_path / "repo"
    (workspace / "job_specs").mkdir(parents=True)
    write_job(workspace / "job_specs" / "tiny-src", TINY)
    spec = (workspace / "job_specs" / "tiny-src" / "job.yaml").read_text()
    (workspace / "job_specs" / "tiny.yaml").write_text(
        spec.replace("source_dir: code", "source_dir: tiny-src/code").replace("train: data", "train: tiny-src/data")
    )
    (workspace / "job_specs" / "tiny-src" / "job.yaml").unlink()
    boto3.client("s3").create_bucket(Bucket="ci-bucket")
    expressions = {
        "vars.AWS_REGION": "us-east-1",
        "vars.SAGEMAKER_ROLE_ARN": os.environ["CLOUDTRAIN_ROLE_ARN"],
        "vars.CLOUDTRAIN_OUTPUT_S3_URI": "s3://ci-bucket/cloudtrain",
        "vars.GITHUB_ACTIONS_ROLE_ARN": "",
        "github.event.pull_request.head.sha || github.sha": "3f2a9c0d" * 5,
        "github.head_ref || github.ref": "feature",
        "inputs.retrain": "",
    }
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    base = child_env(home, aws)
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}"  # `cloudtrain` and `python`
    base.update(expand(workflow["env"], expressions))
    base["SPEC"] = "job_specs/tiny.yaml"  # the workflow's one parameter

    def run_job(name: str) -> dict[str, dict[str, str]]:
        """The job's run: steps in order; each step's outputs, by step id."""
        job = workflow["jobs"][name]
        outputs: dict[str, dict[str, str]] = {}
        for step in job["steps"]:
            if "run" not in step or step.get("id") == "install":
                continue
            out_file, summary = tmp_path / "github_output", tmp_path / "step_summary"
            out_file.write_text("")
            known = {**expressions}
            known.update({f"steps.{s}.outputs.{k}": v for s, o in outputs.items() for k, v in o.items()})
            env = {**base, **expand(job.get("env", {}), known), **expand(step.get("env", {}), known)}
            env.update(GITHUB_OUTPUT=str(out_file), GITHUB_STEP_SUMMARY=str(summary))
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=workspace,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"step {step.get('id')}: {done.stderr}"
            outputs[step["id"]] = dict(line.split("=", 1) for line in out_file.read_text().splitlines() if line)
        return outputs

    validated = run_job("validate")
    assert validated == {"validate": {}}
    first = run_job("train")
    job = first["submit"]["job"]
    submitted = json.loads((workspace / "submit.json").read_text())
    assert submitted["created"] is True and submitted["job"]["status"] == "Completed"
    assert submitted["job"]["artifacts"]["model"].startswith("s3://ci-bucket/cloudtrain/")
    upload = next(s for s in workflow["jobs"]["train"]["steps"] if "upload-artifact" in s.get("uses", ""))
    uploaded = [p for pattern in upload["with"]["path"].split() for p in workspace.glob(pattern)]
    assert workspace / "fetched" / "output" / "eval_report.json" in uploaded
    assert "accuracy 0.5" in (tmp_path / "step_summary").read_text()

    shutil.rmtree(workspace / "fetched")
    again = run_job("train")  # a re-run attempt of the same commit
    assert again["submit"]["job"] == job
    assert json.loads((workspace / "submit.json").read_text())["created"] is False
    assert len(sagemaker_endpoint.calls("CreateTrainingJob")) == 1

    # compare on SageMaker: the code hash from the job's tag, the evaluation from output.tar.gz in S3
    compared = ct("compare", job, job, "--json", home=home, env=aws)
    assert compared.code == 0, compared.err
    check_shape("compare", compared.json())
    side = compared.json()["jobs"][0]
    assert side["backend"] == "sagemaker" and len(side["code_sha256"]) == 64
    assert side["evaluation"] == {"accuracy": 0.5, "loss": None, "source": submitted["job"]["artifacts"]["output"]}
    assert compared.json()["spec_diff"] == [] and compared.json()["same_code"] is True


def expand(env: dict[str, Any], known: dict[str, str]) -> dict[str, str]:
    """An env: block with each `${{ expression }}` replaced by its value in `known` (all must be known)."""

    def value(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        assert expression in known, f"the test does not know the workflow expression {expression!r}"
        return known[expression]

    return {k: re.sub(r"\$\{\{(.+?)\}\}", value, str(v)) for k, v in env.items()}


def test_workflow_runs_only_what_is_tested() -> None:
    """Every `run:` step of the workflow has an id, and the run: steps use no `${{ }}` (inputs come via env:)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                assert step.get("id"), step
                assert "${{" not in step["run"], step["id"]  # no script injection from PR titles and the like


def test_workflow_credentials_outlast_the_wait() -> None:
    """OIDC credentials last 1 hour unless asked for longer: the role session must outlive `--timeout` and the
    fetch after it (the role's MaxSessionDuration must allow it, which the comment beside it says)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["train"]["steps"]
    login = next(s for s in steps if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials"))
    wait = int(re.search(r"--timeout (\d+)", next(s for s in steps if s.get("id") == "submit")["run"]).group(1))
    assert login["with"]["role-duration-seconds"] >= wait + 1800
    assert "MaxSessionDuration" in WORKFLOW.read_text()
    assert workflow["jobs"]["train"]["timeout-minutes"] * 60 >= login["with"]["role-duration-seconds"]

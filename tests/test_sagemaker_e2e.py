"""The SageMaker backend end to end: the real CLI against a SageMaker control plane on loopback.

The `sagemaker_endpoint` fixture (tests/sagemaker_control_plane.py) answers SageMaker's API as AWS
documents it and really runs each job with the local backend's machinery; S3, CloudWatch Logs and STS
are moto's behind the same endpoint. Claims are checked on what reached the endpoint (its recorded
requests) or on what is in S3 and CloudWatch, not on cloudtrain's own report. TensorFlow tests are slow.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

from cloudtrain.aws import AwsSession
from cloudtrain.settings import Settings
from tests.clirun import REPO, Result, cloudtrain
from tests.sagemaker_control_plane import LOG_GROUP, ControlPlane
from tests.sdk import SDK_MISSING, SDK_PYTHON, run_sdk
from tests.test_cli import write_job as write_tiny_job

DIGITS = REPO / "job_specs" / "digits.yaml"
S3_WRITES = ("PutObject", "UploadPart", "CreateMultipartUpload")
HAPPY_PATH = ["Starting", "Downloading", "Training", "Uploading", "Completed"]  # SecondaryStatusTransitions
NATURE_DIFFERS = ("sagemaker_submit_directory", "sagemaker_job_name", "model_dir")

TINY = """\
    import json, os
    print("hello from", os.environ["SM_CURRENT_HOST"], flush=True)
    print("score=0.75", flush=True)
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
        open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "w").write("w")
    """
RESUMER = """\
    import json, os, pathlib
    state = pathlib.Path(os.environ["CLOUDTRAIN_CHECKPOINT_DIR"]) / "state.json"
    step = json.loads(state.read_text())["step"] if state.exists() else 0
    print(os.environ["SM_CURRENT_HOST"], "starts at step", step, flush=True)
    if os.environ["SM_CURRENT_HOST"] == "algo-1":
        state.write_text(json.dumps({"step": step + 5}))
    """
FAILER = """\
    import sys
    print("about to fail", flush=True)
    sys.exit("CUDA out of memory")
    """
SLEEPY = """\
    import time
    time.sleep(3)  # long enough to be billed a few seconds
    """
SLEEPER = """\
    import time
    print("sleeping", flush=True)
    time.sleep(300)
    """


# --- helpers ---------------------------------------------------------------------------------------


def clean_env(home: Path) -> dict[str, str]:
    """The environment tests/clirun.py gives the CLI: no AWS or cloudtrain settings, its own job home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
    return env | {"CLOUDTRAIN_HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def aws_env() -> dict[str, str]:
    """The fixture's AWS_* settings and role, for the CLI subprocess (which starts from a clean environment)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "CLOUDTRAIN_ROLE_ARN"}


def ct(*args: str, home: Path, timeout: float = 300) -> Result:
    """`cloudtrain ARGS` against the endpoint."""
    return cloudtrain(*args, home=home, env=aws_env(), timeout=timeout)


SAGEMAKER_SPEC = """\
name: tiny
code: {source_dir: code, entry_point: train.py}
image: {framework_version: "2.19"}
resources: {instance_type: ml.m5.xlarge, instance_count: 2}
distribution: {strategy: multi_worker_mirrored}
data: {train: data}
metrics: [{name: score, regex: "score=([0-9.]+)"}]
"""


def write_job(folder: Path, script: str) -> Path:
    """A two-host MWMS job whose entry point is plain Python: the SageMaker path without TensorFlow's start-up."""
    return write_tiny_job(folder, script, spec=SAGEMAKER_SPEC)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    """Poll until check() is truthy and return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def cloudwatch(job: str, logs: Any = None) -> dict[str, list[str]]:
    """Every log stream of the job in CloudWatch (through the endpoint) and its lines."""
    logs = logs or boto3.client("logs")
    try:
        streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job}/")["logStreams"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return {}
        raise
    found = {}
    for s in streams:  # every page: CloudWatch (and the control plane) may answer empty pages before the end
        lines, args = [], {"startFromHead": True}
        while True:
            page = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=s["logStreamName"], **args)
            lines += [e["message"] for e in page["events"]]
            if page["nextForwardToken"] == args.get("nextToken"):  # the same token back: the end of the stream
                break
            args = {"nextToken": page["nextForwardToken"]}
        found[s["logStreamName"]] = lines
    return found


def tarball_files(uri: str) -> set[str]:
    """The files in a code tarball named by a (JSON-encoded) sagemaker_submit_directory, read from S3."""
    bucket, _, key = json.loads(uri).removeprefix("s3://").partition("/")
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile() and "__pycache__" not in m.name}


def log_events(job: str, home: Path) -> list[dict[str, Any]]:
    result = ct("logs", job, "--json", home=home)
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


def uploads(requests: list[Any]) -> list[Any]:
    """S3 writes among recorded requests."""
    return [r for r in requests if r.service == "s3" and r.operation in S3_WRITES]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def digits_data(tmp_path: Path) -> Path:
    """The digits channels, made by the repository's own script."""
    out = tmp_path / "digits-data"
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(out)], check=True)
    return out


def digits_overrides(data: Path, *extra: str) -> list[str]:
    args = ["--set", f"data.train={data / 'train'}", "--set", f"data.eval={data / 'eval'}"]
    for item in extra:
        args += ["--set", item]
    return args


# --- fast: the control plane's API and what cloudtrain sends ---------------------------------------


def test_control_plane_answers_as_aws_does(sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path) -> None:
    """Duplicate names, unknown jobs, shape errors and a stop of an ended job get AWS's error codes."""
    sagemaker_endpoint.run_jobs = False
    spec = write_job(tmp_path, TINY)
    plan = ct("submit", str(spec), "--backend", "sagemaker", "--dry-run", "--json", home=home)
    assert plan.code == 0, plan.err
    request = plan.json()["plan"]["request"]
    sm = boto3.client("sagemaker")
    with pytest.raises(ClientError, match="No S3 objects found under S3 URL"):  # a dry run uploads no data
        sm.create_training_job(**request)
    s3 = boto3.client("s3")
    for channel in request["InputDataConfig"]:  # what a real submit would have uploaded
        bucket, _, prefix = channel["DataSource"]["S3DataSource"]["S3Uri"].removeprefix("s3://").partition("/")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=prefix + "numbers.txt", Body=b"1 2 3\n")
    sm.create_training_job(**request)
    with pytest.raises(ClientError) as taken:
        sm.create_training_job(**request)
    assert taken.value.response["Error"]["Code"] == "ResourceInUse"
    assert taken.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as unknown:
        sm.describe_training_job(TrainingJobName="no-such-job")
    assert unknown.value.response["Error"]["Code"] == "ValidationException"
    assert unknown.value.response["Error"]["Message"] == "Requested resource not found."
    missing = ct("status", "no-such-job", "--backend", "sagemaker", home=home)
    assert missing.code == 2 and len(missing.err.strip().splitlines()) == 1 and "no-such-job" in missing.err

    # Shapes are checked against botocore's service model, even from a client that skips its own validation.
    raw = boto3.client("sagemaker", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as invalid:
        raw.create_training_job(**{**request, "TrainingJobName": "other", "ResourceConfig": {"InstanceCount": "two"}})
    assert invalid.value.response["Error"]["Code"] == "ValidationException"
    assert "InstanceCount" in invalid.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as bad_name:
        sm.create_training_job(**{**request, "TrainingJobName": "-bad-name"})
    assert bad_name.value.response["Error"]["Code"] == "ValidationException"

    sm.stop_training_job(TrainingJobName=request["TrainingJobName"])
    described = sm.describe_training_job(TrainingJobName=request["TrainingJobName"])
    assert described["TrainingJobStatus"] == "Stopped"
    with pytest.raises(ClientError) as ended:
        sm.stop_training_job(TrainingJobName=request["TrainingJobName"])
    assert ended.value.response["Error"]["Code"] == "ValidationException"
    found = sm.search(
        Resource="TrainingJob",
        SearchExpression={"Filters": [{"Name": "Tags.cloudtrain:managed", "Operator": "Equals", "Value": "true"}]},
    )["Results"]
    assert [r["TrainingJob"]["TrainingJobName"] for r in found] == [request["TrainingJobName"]]
    assert [s["TrainingJobName"] for s in sm.list_training_jobs()["TrainingJobSummaries"]] == [
        request["TrainingJobName"]
    ]


def test_cloudtrains_clients_validate_before_sending(sagemaker_endpoint: ControlPlane) -> None:
    """botocore's parameter validation is on in every client cloudtrain makes: a bad request never leaves."""
    session = AwsSession(Settings())
    for service in ("sagemaker", "s3", "logs"):
        assert session.client(service).meta.config.parameter_validation is True
    sent = len(sagemaker_endpoint.requests)
    with pytest.raises(ParamValidationError, match="InstanceCount"):
        session.client("sagemaker").create_training_job(
            TrainingJobName="x",
            AlgorithmSpecification={"TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
            OutputDataConfig={"S3OutputPath": "s3://bucket/out"},
            ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": "two", "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 60},
        )
    assert sagemaker_endpoint.requests[sent:] == []


def test_second_submit_of_unchanged_code_uploads_no_code(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """Counted at the endpoint: the first submit writes the code tarball to S3, the second writes nothing."""
    sagemaker_endpoint.run_jobs = False
    spec = write_job(tmp_path, TINY)
    first = ct("submit", str(spec), "--backend", "sagemaker", "--json", home=home)
    assert first.code == 0, first.err
    first_writes = uploads(sagemaker_endpoint.requests)
    code_writes = [r for r in first_writes if "/code/" in r.path and r.path.endswith("/sourcedir.tar.gz")]
    assert len(code_writes) == 1 and len(code_writes[0].body) > 1000
    seen = len(sagemaker_endpoint.requests)

    again = ct("submit", str(spec), "--backend", "sagemaker", "--name", "tiny-again", "--json", home=home)
    assert again.code == 0, again.err
    later = sagemaker_endpoint.requests[seen:]
    # Is the name free; the account (for the default bucket's name); are code and data there; create.
    assert sorted(r.operation for r in later) == [
        "CreateTrainingJob",
        "DescribeTrainingJob",
        "GetCallerIdentity",
        "HeadObject",
        "HeadObject",
    ]
    assert uploads(later) == []  # no code bytes, and no data bytes either
    assert sum(len(r.body) for r in later if r.service == "s3") == 0
    assert any(r.operation == "HeadObject" and r.path.endswith("/sourcedir.tar.gz") for r in later)
    created = [r.json() for r in sagemaker_endpoint.calls("CreateTrainingJob")]
    assert [c["TrainingJobName"] for c in created] == [first.json()["job"]["name"], again.json()["job"]["name"]]
    code_uris = {c["HyperParameters"]["sagemaker_submit_directory"] for c in created}
    assert code_uris == {json.dumps("s3:/" + code_writes[0].path)}  # both jobs run the one uploaded tarball


def test_status_is_one_request(sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path) -> None:
    """`status JOB` sends DescribeTrainingJob and nothing else (no STS probe, no ListTags); `compare` asks for tags."""
    sagemaker_endpoint.run_jobs = False
    submitted = ct("submit", str(write_job(tmp_path, TINY)), "--backend", "sagemaker", "--json", home=home)
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]
    assert job["status"] == "InProgress" and job["tags"]["cloudtrain:managed"] == "true"
    seen = len(sagemaker_endpoint.requests)
    status = ct("status", job["name"], "--json", home=home)
    assert status.code == 0, status.err
    assert [r.operation for r in sagemaker_endpoint.requests[seen:]] == ["DescribeTrainingJob"]
    assert status.json()["status"] == "InProgress" and status.json()["tags"] == {}
    compared = ct("compare", job["name"], job["name"], "--json", home=home)
    assert compared.code == 0, compared.err
    assert compared.json()["jobs"][0]["code_sha256"] == job["tags"]["cloudtrain:code-sha256"]


def test_logs_follow_reads_each_host_at_most_every_two_seconds(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """`logs --follow` of a running two-host job: each host's stream read with GetLogEvents and its forward token,
    at most once per 2 s, never FilterLogEvents (5 requests/s per account, shared by every follower); every line
    once, tagged by host, in time order (how soon: scripts/bench's logs row); a line behind another host's
    newest is still shown, a stream that appears late (a restarted container) is read from its start, `--host`
    keeps to one host, and the follower ends after the job."""
    sagemaker_endpoint.run_jobs = False  # held in Starting: the test writes the job's log lines itself
    submitted = ct("submit", str(write_job(tmp_path, TINY)), "--backend", "sagemaker", "--json", home=home)
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]
    logs = boto3.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=LOG_GROUP)
    streams = {host: f"{job}/{host}-1700000000" for host in ("algo-1", "algo-2")}
    for stream in streams.values():
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    written: dict[tuple[str, str], float] = {}

    def put(host: str, message: str, stream: str | None = None, ts: int | None = None) -> int:
        event = {"timestamp": ts or int(time.time() * 1000), "message": message}
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream or streams[host], logEvents=[event])
        written[(host, message)] = time.time()
        return event["timestamp"]

    # Within one stream lines keep their order (algo-1's run late, but never behind its own 'early'): moto's
    # GetLogEvents positions are indices into the stream sorted by time, which a line put behind one already
    # read would shift. Across hosts nothing is ordered, which is what this test is about.
    put("algo-1", "early", ts=int(time.time() * 1000) - 5000)
    put("algo-2", "early")
    everyone, second = Follower(job, home), Follower(job, home, "--host", "algo-2")
    wait_for("the first lines", lambda: len(everyone.lines) == 2 and len(second.lines) == 1, timeout=60)
    before = len(sagemaker_endpoint.requests)
    started = time.monotonic()
    for i in range(10):  # 5 s of lines from both hosts
        last_1 = put("algo-1", f"line-{i}", ts=int(time.time() * 1000) - 1500)  # algo-1's agent ships late
        put("algo-2", f"line-{i}")
        time.sleep(0.5)
    busy = sagemaker_endpoint.requests[before:]
    busy_s = time.monotonic() - started
    put("algo-1", "late", ts=last_1 + 1)  # behind algo-2's newest line already shown
    restarted = f"{job}/algo-2-1700000100"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=restarted)
    put("algo-2", "restarted", stream=restarted, ts=int(time.time() * 1000) - 30_000)
    wait_for("the late line", lambda: ("algo-1", "late") in everyone.messages(), timeout=30)
    boto3.client("sagemaker").stop_training_job(TrainingJobName=job)  # a new status: streams are looked for
    assert everyone.wait(90) == 0 and second.wait(90) == 0, everyone.err

    lines = [(e["host"], e["message"]) for _, e in everyone.lines]
    assert sorted(lines) == sorted(written), "every line once"
    assert second.messages() == [("algo-2", m) for m in ["early", *(f"line-{i}" for i in range(10)), "restarted"]]
    for host in ("algo-1", "algo-2"):
        flowing = [e["timestamp"] for _, e in everyone.lines if e["host"] == host and e["message"][:5] == "line-"]
        assert flowing == sorted(flowing), "in time order"

    def reads(host: str) -> int:
        return sum(r.operation == "GetLogEvents" and f"{job}/{host}-".encode() in r.body for r in busy)

    assert not [r for r in sagemaker_endpoint.requests if r.operation == "FilterLogEvents"]
    # Two followers read algo-2, one reads algo-1: each at most once per 2 s.
    assert 1 <= reads("algo-1") <= busy_s / 2 + 1, (reads("algo-1"), busy_s)
    assert 2 <= reads("algo-2") <= 2 * (busy_s / 2 + 1), (reads("algo-2"), busy_s)
    assert sum(r.operation == "DescribeLogStreams" for r in busy) <= 2


class Follower:
    """`cloudtrain logs JOB --follow --json` in the background, each line with when it arrived."""

    def __init__(self, job: str, home: Path, *args: str) -> None:
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.err = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudtrain", "logs", job, "--follow", "--json", *args],
            cwd=REPO,
            env=clean_env(home) | aws_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), json.loads(line)))

    def messages(self) -> list[tuple[str, str]]:
        return [(e["host"], e["message"]) for _, e in list(self.lines)]

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()
        return code


def test_retried_submit_with_an_idempotency_key_creates_one_job(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    sagemaker_endpoint.run_jobs = False
    spec = write_job(tmp_path, TINY)
    first = ct("submit", str(spec), "--backend", "sagemaker", "--idempotency-key", "ci-run-7", "--json", home=home)
    again = ct("submit", str(spec), "--backend", "sagemaker", "--idempotency-key", "ci-run-7", "--json", home=home)
    assert first.code == 0 and again.code == 0, again.err
    assert first.json()["created"] is True and again.json()["created"] is False
    assert again.json()["job"]["name"] == first.json()["job"]["name"]
    assert len(sagemaker_endpoint.calls("CreateTrainingJob")) == 1
    listed = ct("status", "--backend", "sagemaker", "--json", home=home)  # SageMaker Search on the managed tag
    assert [j["name"] for j in listed.json()] == [first.json()["job"]["name"]]


def test_later_commands_reach_the_region_the_job_was_submitted_to(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    sagemaker_endpoint.run_jobs = False
    spec = write_job(tmp_path, TINY)
    region = ["--set", "aws.region=us-east-1"]
    submitted = ct("submit", str(spec), "--backend", "sagemaker", *region, "--json", home=home)
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]
    no_region = {k: v for k, v in aws_env().items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    status = cloudtrain("status", job, "--json", home=home, env=no_region)  # the spec's region was recorded
    assert status.code == 0, status.err
    assert status.json()["name"] == job


def test_tiny_job_runs_on_two_hosts_with_logs_metrics_and_model(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """The whole SageMaker path without TensorFlow: submit --wait, logs of both hosts, metrics, fetch-model."""
    spec = write_job(tmp_path, TINY)
    done = ct("submit", str(spec), "--backend", "sagemaker", "--wait", "--json", home=home)
    assert done.code == 0, done.err
    job = done.json()["job"]
    assert job["status"] == "Completed" and job["metrics"] == {"score": 0.75}
    assert [t["status"] for t in job["transitions"]] == HAPPY_PATH
    streams = cloudwatch(job["name"])
    assert sorted(re.sub(r"-\d+$", "", s) for s in streams) == [f"{job['name']}/algo-1", f"{job['name']}/algo-2"]
    hosts = {e["host"] for e in log_events(job["name"], home) if e["message"].startswith("hello from")}
    assert hosts == {"algo-1", "algo-2"}
    fetched = ct("fetch-model", job["name"], "--to", str(tmp_path / "out"), "--json", home=home)
    assert fetched.code == 0, fetched.err
    assert (tmp_path / "out" / "model" / "weights.bin").read_text() == "w"


def savings_from_aws(job: str) -> float:
    """The spot savings DescribeTrainingJob's times give, as the SageMaker console shows them."""
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=job)
    return round((1 - described["BillableTimeInSeconds"] / described["TrainingTimeInSeconds"]) * 100, 1)


def test_spot_savings_are_sagemakers_billable_against_training_time(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    spot = ["--set", "resources.spot.enabled=true", "--set", "resources.spot.max_wait=2d"]
    done = ct(
        "submit", str(write_job(tmp_path, SLEEPY)), "--backend", "sagemaker", *spot, "--wait", "--json", home=home
    )
    assert done.code == 0, done.err
    name = done.json()["job"]["name"]
    savings = ct("status", name, "--json", home=home).json()["spot_savings_percent"]
    assert savings == savings_from_aws(name) and 0 < savings < 100


def test_failed_job_exits_1_with_its_reason(sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path) -> None:
    result = ct("submit", str(write_job(tmp_path, FAILER)), "--backend", "sagemaker", "--wait", home=home)
    assert result.code == 1
    last = result.err.strip().splitlines()[-1]
    assert "Failed" in last and "CUDA out of memory" in last and "Traceback" not in last


@pytest.mark.parametrize("backend", ["sagemaker", "local"])
def test_resuming_is_explicit_and_the_same_on_both_backends(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path, backend: str
) -> None:
    """With a fixed `checkpoints.s3_uri` (as job_specs/digits.yaml suggests), a second run starts afresh: each
    job checkpoints under a prefix of its own. `--resume JOB` starts from that job's checkpoints, restored on
    every host, and leaves them as they were (on SageMaker they are copied to the new job's prefix first)."""
    boto3.client("s3").create_bucket(Bucket="ct-checkpoints")
    spec = write_job(tmp_path, RESUMER)
    spec.write_text(spec.read_text() + "checkpoints: {s3_uri: s3://ct-checkpoints/tiny}\n")

    def run(*args: str) -> tuple[str, list[str]]:
        done = ct("submit", str(spec), "--backend", backend, *args, "--wait", "--json", home=home)
        assert done.code == 0, done.err
        name = done.json()["job"]["name"]
        return name, [f"{e['host']} {e['message']}" for e in log_events(name, home) if "starts at" in e["message"]]

    first, starts = run()
    assert starts and all(line.endswith("starts at step 0") for line in starts), starts
    _, starts = run()
    assert starts and all(line.endswith("starts at step 0") for line in starts), "no resume unless asked"
    _, starts = run("--resume", first)
    assert sorted(starts) == ["algo-1 algo-1 starts at step 5", "algo-2 algo-2 starts at step 5"]
    if backend == "sagemaker":
        prefixes = [r.json()["CheckpointConfig"]["S3Uri"] for r in sagemaker_endpoint.calls("CreateTrainingJob")]
        assert len(set(prefixes)) == 3 and all(p.startswith("s3://ct-checkpoints/tiny/tiny-") for p in prefixes)
        kept = boto3.client("s3").get_object(Bucket="ct-checkpoints", Key=f"tiny/{first}/state.json")["Body"].read()
        assert json.loads(kept) == {"step": 5}  # the resumed job wrote step 10 to its own prefix


def test_stop_of_a_running_job_ends_stopped(sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path) -> None:
    spec = write_job(tmp_path, SLEEPER)
    submitted = ct("submit", str(spec), "--backend", "sagemaker", "--json", home=home)
    assert submitted.code == 0, submitted.err
    name = submitted.json()["job"]["name"]
    logs = boto3.client("logs")
    wait_for("both hosts to sleep", lambda: sum("sleeping" in lines for lines in cloudwatch(name, logs).values()) == 2)

    stopped = ct("stop", name, "--wait", "--json", home=home)
    assert stopped.code == 0, stopped.err
    info = stopped.json()
    assert info["status"] == "Stopped"
    assert [t["status"] for t in info["transitions"]][-3:] == ["Stopping", "Uploading", "Stopped"]
    assert len(sagemaker_endpoint.calls("StopTrainingJob")) == 1
    again = ct("stop", name, "--json", home=home)  # stopping an ended job changes nothing
    assert again.code == 0 and again.json()["status"] == "Stopped"
    assert len(sagemaker_endpoint.calls("StopTrainingJob")) == 1


# --- the request matches the sagemaker SDK's ---------------------------------------------------------

SDK_SCRIPT = '''\
"""Under .venv-sdk: the sagemaker SDK's TensorFlow estimator sends its CreateTrainingJob; loopback only."""
import json, sys

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
blocked = []


def guard(event, args):
    """Refuse (and report) any name look-up or connection beyond loopback, telemetry included."""
    host = args[0] if event == "socket.getaddrinfo" else None
    if event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    if host is not None and str(host) not in LOOPBACK:
        blocked.append(f"{event} {host}")
        raise OSError(f"blocked: {host} is not loopback")


sys.addaudithook(guard)

import boto3
from sagemaker.debugger import TensorBoardOutputConfig
from sagemaker.session import Session
from sagemaker.tensorflow import TensorFlow

cfg = json.loads(sys.argv[1])
session = Session(boto_session=boto3.Session(region_name=cfg.pop("region")), default_bucket=cfg.pop("bucket"))
inputs, job_name = cfg.pop("inputs"), cfg.pop("job_name")
tensorboard = TensorBoardOutputConfig(**cfg.pop("tensorboard"))
estimator = TensorFlow(
    sagemaker_session=session,
    distribution={"multi_worker_mirrored_strategy": {"enabled": True}},
    tensorboard_output_config=tensorboard,
    **cfg,
)
estimator.fit(inputs, job_name=job_name, wait=False, logs=False)
sent = list(blocked)
try:  # the guard itself works: a look-up beyond loopback is refused
    __import__("socket").getaddrinfo("example.com", 443)
except OSError:
    pass
print(json.dumps({"blocked": sent, "guard_refused": blocked[len(sent):]}))
'''


SHARED_FIELDS = ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition", "EnableManagedSpotTraining")


def with_defaults(request: dict[str, Any]) -> dict[str, Any]:
    """The request with the defaults AWS applies to fields left out (as DescribeTrainingJob shows them)."""
    out = dict(request)
    out.setdefault("EnableManagedSpotTraining", False)
    out["CheckpointConfig"] = {"LocalPath": "/opt/ml/checkpoints", **request.get("CheckpointConfig", {})}
    out["InputDataConfig"] = [
        {"CompressionType": "None", "RecordWrapperType": "None", **channel} for channel in request["InputDataConfig"]
    ]
    return out


@pytest.mark.skipif(not SDK_PYTHON.exists(), reason=SDK_MISSING)
def test_request_matches_the_sagemaker_sdks_tensorflow_estimator(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """job_specs/digits.yaml's CreateTrainingJob and the SDK's for the same settings, both recorded at the endpoint."""
    from cloudtrain.spec.load import load_spec

    sagemaker_endpoint.run_jobs = False  # only the requests matter here
    for channel in ("train", "eval"):
        (tmp_path / channel).mkdir()
        (tmp_path / channel / "digits.npz").write_bytes(channel.encode())
    overrides = [f"data.train={tmp_path / 'train'}", f"data.eval={tmp_path / 'eval'}"]
    ours = ct("submit", str(DIGITS), "--backend", "sagemaker", *digits_overrides(tmp_path), home=home)
    assert ours.code == 0, ours.err
    (mine,) = [r.json() for r in sagemaker_endpoint.calls("CreateTrainingJob")]

    spec = load_spec(DIGITS, overrides)
    # The SDK gets what its user would give it: the spec's settings, the configured role, and data that user
    # uploaded themselves (to a prefix of their own). Nothing from cloudtrain's request: where both make a value
    # (the default bucket, the image, the channels' layout), each makes its own, and the two are compared.
    s3 = boto3.client("s3")
    # The SDK's default bucket for this account, by its convention (its own look-up asks STS at its regional
    # URL, beyond loopback, so it is given here); cloudtrain works its default out itself.
    sdk_bucket = "sagemaker-us-east-1-123456789012"
    for channel in ("train", "eval"):
        s3.upload_file(str(tmp_path / channel / "digits.npz"), sdk_bucket, f"sdk-data/{channel}/digits.npz")
    settings = {
        "region": "us-east-1",
        "bucket": sdk_bucket,
        "job_name": "sdk-digits-mwms",
        "entry_point": spec.code.entry_point,
        "source_dir": str(spec.code.source_dir),
        "role": os.environ["CLOUDTRAIN_ROLE_ARN"],
        "framework_version": spec.image.framework_version,
        "py_version": "py312",
        "instance_type": spec.resources.instance_type,
        "instance_count": spec.resources.instance_count,
        "volume_size": spec.resources.volume_size_gb,
        "max_run": spec.resources.max_runtime,
        "hyperparameters": spec.hyperparameters,
        "metric_definitions": [{"Name": m.name, "Regex": m.regex} for m in spec.metrics],
        "environment": dict(spec.environment),
        "checkpoint_s3_uri": f"s3://{sdk_bucket}/sdk-checkpoints",
        "inputs": {channel: f"s3://{sdk_bucket}/sdk-data/{channel}/" for channel in ("train", "eval")},
        # the user's own choice of where TensorBoard's files go, beside the output, as cloudtrain puts them
        "tensorboard": {
            "s3_output_path": f"s3://{sdk_bucket}/",
            "container_local_output_path": "/opt/ml/output/tensorboard",
        },
    }
    network = run_sdk(SDK_SCRIPT, settings, tmp_path, aws_env())  # telemetry off: nothing but loopback was tried
    assert network == {"blocked": [], "guard_refused": ["socket.getaddrinfo example.com"]}
    listed = ct("status", "--backend", "sagemaker", "--json", home=home).json()
    assert [j["name"] for j in listed] == [mine["TrainingJobName"]]  # only cloudtrain's jobs carry its tag
    (theirs,) = [r.json() for r in sagemaker_endpoint.calls("CreateTrainingJob")[1:]]
    assert theirs["TrainingJobName"] == "sdk-digits-mwms"

    mine_hp, theirs_hp = mine["HyperParameters"], theirs["HyperParameters"]
    assert sorted(mine_hp) == sorted(theirs_hp)
    assert mine_hp["sagemaker_multi_worker_mirrored_strategy_enabled"] == "true"
    for key in sorted(mine_hp):
        if key not in NATURE_DIFFERS:
            assert mine_hp[key] == theirs_hp[key], key
    for request in (mine, theirs):  # the three that differ by nature have the same shape
        hp, job = request["HyperParameters"], request["TrainingJobName"]
        assert re.fullmatch(r'"s3://[a-z0-9.-]+/.+/sourcedir\.tar\.gz"', hp["sagemaker_submit_directory"])
        assert hp["sagemaker_job_name"] == json.dumps(job)
        assert hp["model_dir"] == json.dumps(f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job}/model")
    # Both use the account's default bucket, each having worked out its name; the rest of what both set from
    # the same settings agrees, once AWS's defaults fill what one left out (the image comes from cloudtrain's
    # own table, the SDK's from its own). Only the SDK adds Debugger settings; only cloudtrain tags.
    assert theirs["OutputDataConfig"]["S3OutputPath"] == f"s3://{sdk_bucket}/"
    assert mine["OutputDataConfig"]["S3OutputPath"].startswith(f"s3://{sdk_bucket}/")
    for request in (mine, theirs):  # TensorBoard's files sync beside the job's output, to the same local folder
        assert request["TensorBoardOutputConfig"] == {
            "S3OutputPath": request["OutputDataConfig"]["S3OutputPath"],
            "LocalPath": "/opt/ml/output/tensorboard",
        }
    for field in SHARED_FIELDS:
        assert with_defaults(mine)[field] == with_defaults(theirs)[field], field
    assert (
        with_defaults(mine)["CheckpointConfig"]["LocalPath"] == with_defaults(theirs)["CheckpointConfig"]["LocalPath"]
    )
    assert {k: v for k, v in mine["Environment"].items() if not k.startswith("CLOUDTRAIN_")} == theirs["Environment"]
    for ours_channel, sdk_channel in zip(mine["InputDataConfig"], theirs["InputDataConfig"], strict=True):
        uri = ours_channel["DataSource"]["S3DataSource"].pop("S3Uri")
        sdk_channel["DataSource"]["S3DataSource"].pop("S3Uri")
        assert with_defaults({"InputDataConfig": [ours_channel]}) == with_defaults({"InputDataConfig": [sdk_channel]})
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]  # the user's folder, byte for byte
        assert [o["Key"].removeprefix(prefix) for o in listed] == ["digits.npz"]
        body = s3.get_object(Bucket=bucket, Key=listed[0]["Key"])["Body"].read()
        assert body == (tmp_path / ours_channel["ChannelName"] / "digits.npz").read_bytes()
    # Both tarballs hold the user's source_dir at their root; cloudtrain's adds its in-container runtime.
    ours_files, sdk_files = (tarball_files(r["HyperParameters"]["sagemaker_submit_directory"]) for r in (mine, theirs))
    assert {"train.py", "requirements.txt"} <= sdk_files <= ours_files
    assert all(name.startswith("cloudtrain/") for name in ours_files - sdk_files)


# --- slow: real TensorFlow on two workers ------------------------------------------------------------


@pytest.mark.slow
def test_digits_trains_on_two_workers(
    sagemaker_endpoint: ControlPlane, digits_data: Path, tmp_path: Path, home: Path
) -> None:
    """job_specs/digits.yaml: submit --wait, logs of both workers, Completed with metrics, a model that scores."""
    args = digits_overrides(digits_data)
    done = ct("submit", str(DIGITS), "--backend", "sagemaker", *args, "--wait", "--json", home=home)
    assert done.code == 0, done.err[-3000:]
    name = done.json()["job"]["name"]

    events = log_events(name, home)
    assert {e["host"] for e in events} == {"algo-1", "algo-2"}
    assert any("algo-2 (worker, task 1 of 2)" in e["message"] for e in events if e["host"] == "algo-2")
    assert any(e["message"].startswith("epoch=12 ") for e in events if e["host"] == "algo-1")

    status = ct("status", name, "--json", home=home)
    info = status.json()
    assert info["status"] == "Completed" and info["instance_count"] == 2
    assert set(info["metrics"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert info["metrics"]["val_accuracy"] >= 0.9
    assert info["billable_seconds"] >= 1

    out = tmp_path / "fetched"
    fetched = ct("fetch-model", name, "--to", str(out), home=home)
    assert fetched.code == 0, fetched.err
    report = json.loads((out / "output" / "eval_report.json").read_text())
    assert report["accuracy"] >= 0.9 and report["resumed_from_epoch"] == 0
    assert any((out / "model").iterdir())
    assert 'model_checkpoint_path: "ckpt-12"' in (out / "checkpoints" / "checkpoint").read_text()  # synced to S3


@pytest.mark.slow
def test_spot_interruption_resumes_from_the_synced_checkpoint(
    sagemaker_endpoint: ControlPlane, digits_data: Path, tmp_path: Path, home: Path
) -> None:
    """Interrupted after the chief's epoch 3 was synced to S3: the replacements resume there and complete."""
    args = digits_overrides(
        digits_data, "resources.spot.enabled=true", "resources.spot.max_wait=2h", "hyperparameters.epochs=20"
    )
    streamed = tmp_path / "submit-wait.err"  # what a user watching `submit --wait` sees: status and log lines
    with open(streamed, "w") as err:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "cloudtrain", "submit", str(DIGITS), "--backend", "sagemaker", *args, "--wait"],
            cwd=REPO,
            env={**clean_env(home), **aws_env()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        submitted = wait_for("the submit", lambda: re.search(r"job (\S+) submitted on sagemaker", streamed.read_text()))
        name = submitted.group(1)
        synced = interrupt_after_epoch_3(sagemaker_endpoint, name)
        assert waiting.wait(timeout=600) == 0, streamed.read_text()[-3000:]
    finally:
        waiting.kill()
    assert re.search(r" algo-1 resumed from epoch \d+$", streamed.read_text(), re.MULTILINE)  # followed live

    info = ct("status", name, "--json", home=home).json()
    assert info["status"] == "Completed", info["failure_reason"]
    statuses = [t["status"] for t in info["transitions"]]
    assert statuses[:3] == ["Starting", "Downloading", "Training"] and statuses[-2:] == ["Uploading", "Completed"]
    assert statuses[3:5] == ["Interrupted", "Starting"]
    assert info["spot_savings_percent"] == savings_from_aws(name)

    streams = cloudwatch(name)
    assert len(streams) == 4  # each host's container started twice
    chief = [m for s in sorted(streams) if "/algo-1-" in s for m in streams[s]]
    resumed = [int(m.split()[-1]) for m in chief if m.startswith("resumed from epoch ")]
    assert len(resumed) == 1 and synced <= resumed[0] < 20
    epochs = [int(m.split()[0].split("=")[1]) for m in chief if m.startswith("epoch=")]
    assert epochs[-(20 - resumed[0]) :] == list(range(resumed[0] + 1, 21))  # only the epochs left were trained

    out = tmp_path / "fetched"
    assert ct("fetch-model", name, "--to", str(out), home=home).code == 0
    report = json.loads((out / "output" / "eval_report.json").read_text())
    assert report["resumed_from_epoch"] == resumed[0] and report["accuracy"] >= 0.9


def interrupt_after_epoch_3(plane: ControlPlane, name: str) -> int:
    """Once the chief has logged epoch 3 and a complete checkpoint of it is in S3, interrupt; returns the newest
    complete one S3 had (its index and data: SageMaker uploads files in no set order, so `checkpoint` may name
    one whose data is not there yet)."""
    s3, logs = boto3.client("s3"), boto3.client("logs")
    checkpoints = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)["CheckpointConfig"]["S3Uri"]
    bucket, _, prefix = checkpoints.removeprefix("s3://").partition("/")

    def synced_epoch() -> int:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
        names = {o["Key"].rsplit("/", 1)[-1] for o in listed}
        complete = [
            int(m.group(1))
            for n in names
            if (m := re.fullmatch(r"ckpt-(\d+)\.index", n)) and f"ckpt-{m.group(1)}.data-00000-of-00001" in names
        ]
        return max(complete, default=0)

    wait_for("the chief's epoch=3", lambda: any("epoch=3 " in m for ls in cloudwatch(name, logs).values() for m in ls))
    synced: int = wait_for("checkpoint 3 in S3", lambda: synced_epoch() >= 3 and synced_epoch())
    plane.interrupt(name)
    return synced

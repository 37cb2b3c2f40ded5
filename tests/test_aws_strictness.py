"""What AWS refuses and what AWS does that moto never does, each played against the loopback endpoint.

The SageMaker control plane (tests/sagemaker_control_plane.py) checks CreateTrainingJob as AWS does (enums,
tag patterns, spot with warm pools), gives a bucket another owner (`bucket_owners`, enforced through
`ExpectedBucketOwner`) and delays each host's lines in CloudWatch (`log_lag`); tests/faultproxy.py answers
in AWS's place with throttling, denials and expired credentials. The CLI runs as a user runs it.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.clirun import REPO, Result, cloudtrain
from tests.faultproxy import Fault, FaultProxy
from tests.sagemaker_control_plane import LOG_GROUP, ControlPlane
from tests.test_sagemaker_e2e import Follower, aws_env, clean_env, ct, uploads, write_job

DEFAULT_BUCKET = "sagemaker-us-east-1-123456789012"
S3_WRITES = ("PutObject", "UploadPart", "CreateMultipartUpload", "CreateBucket")
CHATTY = """\
    import os, time
    host = os.environ["SM_CURRENT_HOST"]
    for i in range(400):
        print(host, f"n={i}", flush=True)
        time.sleep(0.01)
    """
QUIET = """\
    import time
    print("working", flush=True)
    time.sleep(8)
    print("done", flush=True)
    """


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def one_line_error(result: Result) -> str:
    lines = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


def with_spec(tmp_path: Path, extra: str, script: str = "print('hi')\n") -> Path:
    """The tiny two-host job of test_sagemaker_e2e with more YAML appended."""
    spec = write_job(tmp_path, script)
    spec.write_text(spec.read_text() + extra)
    return spec


# --- requests AWS refuses: refused here before any upload, one line, exit 2 ------------------------


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            "resources: {instance_type: ml.m5.xlarge, spot: {enabled: true, max_wait: 2d}, keep_alive: 10m}\n",
            "resources.keep_alive: warm pools cannot be used with spot instances",
        ),
        ('tags: {team: "ml\\tops"}\n', "tags.team: tag values are up to 256 letters, digits, spaces"),
        ('tags: {"two\\nlines": x}\n', "tag keys are 1-128 letters"),
        ("metrics:\n" + "".join(f"  - {{name: m{i}, regex: 'm{i}=([0-9.]+)'}}\n" for i in range(41)), "metrics"),
        ("resources: {instance_type: ml.g5.3xlarge, instance_count: 2}\n", "SageMaker does not train on"),
    ],
    ids=["spot-with-warm-pool", "tab-in-tag", "newline-in-tag-key", "41-metrics", "ml.g5.3xlarge"],
)
def test_a_request_aws_refuses_is_refused_before_any_upload(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path, extra: str, says: str
) -> None:
    spec = write_job(tmp_path, "print('hi')\n")
    text = spec.read_text()
    for field in ("resources", "metrics"):  # the appended section replaces the spec's own
        if extra.startswith(field):
            text = re.sub(rf"^{field}:.*\n", "", text, flags=re.M)
    spec.write_text(text + extra)
    result = ct("submit", str(spec), "--backend", "sagemaker", home=home)
    assert result.code == 2, result.err
    assert says in one_line_error(result)
    assert uploads(sagemaker_endpoint.requests) == [] and not sagemaker_endpoint.calls("CreateTrainingJob")


CHANNELS_21 = "data: {" + ", ".join(f"c{i}: s3://ct-data-21/c{i}/" for i in range(21)) + "}\n"
SEVEN = [  # (what the spec says, extra arguments, the line's start, AWS's words in it): each was accepted before
    ('tags: {"AWS:team": ml}\n', (), "tags.AWS:team: AWS refuses this", "reserved prefix 'aws:'"),
    (
        "aws: {vpc: {subnets: [subnet_0a1b], security_group_ids: [sg-0a1b]}}\n",
        (),
        "aws.vpc.subnets.0: AWS refuses this",
        "pattern: [-0-9a-zA-Z]+",
    ),
    (CHANNELS_21, (), "SPEC:LINE: data", "needs at most 20 items"),  # the spec's own rule, with its line, comes first
    ('aws: {kms_key_id: "alias/my key"}\n', (), "aws.kms_key_id: AWS refuses this", "pattern: [a-zA-Z0-9:/_-]*"),
    (
        "",
        ("--role-arn", "arn:aws:iam::123456789012:role/My Role"),
        "aws.role_arn: AWS refuses this",
        "pattern: arn:aws",
    ),
    (
        'checkpoints: {s3_uri: "s3://ct-ckpt/' + "c" * 1000 + '"}\n',
        (),
        "checkpoints.s3_uri: AWS refuses this",
        "less than or equal to 1024",
    ),
    ('hyperparameters: {"two\\nlines": 1}\n', (), "hyperparameters.'two\\nlines': AWS refuses this", "pattern: .*"),
]


@pytest.mark.parametrize(
    ("extra", "args", "starts", "says"),
    SEVEN,
    ids=["AWS:-tag", "subnet", "21-channels", "kms-key", "role-with-space", "long-checkpoint-uri", "newline-in-key"],
)
def test_aws_service_model_refuses_before_any_upload(
    sagemaker_endpoint: ControlPlane,
    tmp_path: Path,
    home: Path,
    extra: str,
    args: tuple[str, ...],
    starts: str,
    says: str,
) -> None:
    """Each of these AWS refuses at CreateTrainingJob: cloudtrain refuses it first, from botocore's service model and
    AWS's documented rules (cloudtrain.backends.sagemaker.rules, the control plane's too), naming the spec field."""
    spec = write_job(tmp_path, "print('hi')\n")
    text = spec.read_text()
    if extra.startswith("data"):
        text = re.sub(r"^data:.*\n", "", text, flags=re.M)
    spec.write_text(text + extra)
    result = ct("submit", str(spec), "--backend", "sagemaker", *args, home=home)
    assert result.code == 2, result.err
    line = one_line_error(result)
    start = re.escape(f"error: {starts}: ").replace("SPEC", re.escape(str(spec))).replace("LINE", r"\d+")
    assert re.match(start, line) and says in line, line
    assert uploads(sagemaker_endpoint.requests) == [] and not sagemaker_endpoint.calls("CreateTrainingJob")


def test_the_control_plane_refuses_what_aws_refuses(sagemaker_endpoint: ControlPlane, tmp_path: Path) -> None:
    """The oracle of the test above: the same requests sent straight to the endpoint are ValidationExceptions."""
    sagemaker_endpoint.run_jobs = False
    plan = ct("submit", str(write_job(tmp_path, "print(1)\n")), "--dry-run", "--json", home=tmp_path / "h")
    request = plan.json()["plan"]["request"]
    sm = boto3.client("sagemaker")
    bad: list[dict[str, Any]] = [
        {"ResourceConfig": {**request["ResourceConfig"], "InstanceType": "ml.g5.3xlarge"}},
        {"Tags": [{"Key": "team", "Value": "ml\tops"}]},
        {
            "EnableManagedSpotTraining": True,
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
            "ResourceConfig": {**request["ResourceConfig"], "KeepAlivePeriodInSeconds": 600},
        },
        {"ResourceConfig": {**request["ResourceConfig"], "InstanceType": "ml.g6.xlarge", "VolumeKmsKeyId": "k"}},
    ]
    for i, change in enumerate(bad):
        with pytest.raises(sm.exceptions.ClientError, match="ValidationException"):
            sm.create_training_job(**{**request, "TrainingJobName": f"bad-{i}", **change})


def test_volume_kms_key_is_left_out_on_instances_with_local_storage(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """g5, g6, p5, trn1 and the `d` families have NVMe instance storage: no VolumeKmsKeyId (the SDK's list)."""
    sent = {}
    for instance_type in ("ml.g6.xlarge", "ml.p5.48xlarge", "ml.g6e.xlarge", "ml.p4d.24xlarge", "ml.m5.xlarge"):
        spec = with_spec(tmp_path / instance_type, "aws: {kms_key_id: alias/ml}\n")
        plan = ct(
            "submit", str(spec), "--dry-run", "--json", "--set", f"resources.instance_type={instance_type}", home=home
        )
        assert plan.code == 0, plan.err
        sent[instance_type] = plan.json()["plan"]["request"]["ResourceConfig"].get("VolumeKmsKeyId")
    assert sent == {
        "ml.g6.xlarge": None,
        "ml.p5.48xlarge": None,
        "ml.g6e.xlarge": None,
        "ml.p4d.24xlarge": None,
        "ml.m5.xlarge": "alias/ml",
    }


def test_a_bucket_in_another_region_is_refused_before_any_upload(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="ct-eu-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    spec = write_job(tmp_path, "print('hi')\n")
    result = ct("submit", str(spec), "--backend", "sagemaker", "--set", "data.extra=s3://ct-eu-data/x/", home=home)
    assert result.code == 2, result.err
    assert "data.extra: the S3 bucket ct-eu-data is in eu-west-1, the job would run in us-east-1" in one_line_error(
        result
    )
    assert uploads(sagemaker_endpoint.requests) == []


# --- the default bucket: ExpectedBucketOwner on every request, a squatted one refused -----------------


def test_every_s3_request_to_the_default_bucket_names_its_owner(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    done = ct("submit", str(write_job(tmp_path, "print('hi')\n")), "--backend", "sagemaker", "--wait", home=home)
    assert done.code == 0, done.err
    name = next(line for line in done.err.splitlines() if line.startswith("job ")).split()[1]
    fetched = ct("fetch-model", name, "--to", str(tmp_path / "out"), home=home)
    assert fetched.code == 0, fetched.err
    to_default = [
        r
        for r in sagemaker_endpoint.requests
        if r.service == "s3" and r.path.startswith(f"/{DEFAULT_BUCKET}") and not r.platform
    ]
    kinds = {r.operation for r in to_default}
    assert {"HeadBucket", "CreateBucket", "PutObject", "HeadObject", "GetObject"} <= kinds, kinds
    wrong = [  # every request, not one per operation: a single PutObject without the header is a hole
        (r.operation, r.path, r.headers.get("x-amz-expected-bucket-owner"))
        for r in to_default
        if r.headers.get("x-amz-expected-bucket-owner") != (None if r.operation == "CreateBucket" else "123456789012")
    ]
    assert wrong == []


def test_a_default_bucket_owned_by_another_account_gets_nothing(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """Someone else created `sagemaker-<region>-<our account>` and planted a tarball at the content-addressed
    key of our code: the submit refuses in one line (exit 5), sends nothing there, creates no job."""
    spec = write_job(tmp_path, "print('hi')\n")
    plan = ct("submit", str(spec), "--backend", "sagemaker", "--dry-run", "--json", home=home)
    code_uri = plan.json()["plan"]["uploads"][0]["s3_uri"]
    squatter = sagemaker_endpoint.moto("s3")
    squatter.create_bucket(Bucket=DEFAULT_BUCKET)
    squatter.put_object(Bucket=DEFAULT_BUCKET, Key=code_uri.split("/", 3)[3], Body=b"planted")
    sagemaker_endpoint.bucket_owners[DEFAULT_BUCKET] = "999999999999"
    seen = len(sagemaker_endpoint.requests)

    result = ct("submit", str(spec), "--backend", "sagemaker", home=home)
    assert result.code == 5, result.err
    assert f"the S3 bucket {DEFAULT_BUCKET} is not account 123456789012's" in one_line_error(result)
    later = sagemaker_endpoint.requests[seen:]
    assert [r for r in later if r.operation in S3_WRITES] == [] and not sagemaker_endpoint.calls("CreateTrainingJob")
    assert all(r.headers.get("x-amz-expected-bucket-owner") == "123456789012" for r in later if r.service == "s3")


# --- exit code 5: AWS refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ValidationException", "1 validation error detected"),
        ("AccessDeniedException", "not authorized to perform: iam:PassRole"),
        ("ResourceLimitExceeded", "The account-level service limit 'ml.p4d.24xlarge for training job usage' is 0"),
        ("ThrottlingException", "Rate exceeded"),
    ],
)
def test_aws_refusing_a_submit_exits_5(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path, code: str, message: str
) -> None:
    sagemaker_endpoint.run_jobs = False
    spec = write_job(tmp_path, "print('hi')\n")
    refusal = Fault("error", service="sagemaker", operation="CreateTrainingJob", code=code, message=message, times=20)
    with FaultProxy(sagemaker_endpoint.url, [refusal]) as proxy:
        result = cloudtrain("submit", str(spec), "--backend", "sagemaker", home=home, env=endpoint_env(proxy.url))
    assert result.code == 5, result.err
    assert code in one_line_error(result) or message in one_line_error(result)


def endpoint_env(url: str) -> dict[str, str]:
    """The fixture's AWS settings through a fault proxy; two attempts a request, so throttling outlasts them soon."""
    return aws_env() | {"AWS_ENDPOINT_URL": url, "AWS_MAX_ATTEMPTS": "2"}


# --- logs: every line of a lagging host, one line when the logs API fails --------------------------------


def lines_of(text: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {"algo-1": set(), "algo-2": set()}
    for host, n in re.findall(r"(algo-\d) n=(\d+)$", text, flags=re.M):
        found[host].add(int(n))
    return found


def test_logs_of_a_host_ten_seconds_late_lose_no_line(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """algo-2's lines reach CloudWatch 10 s after they are written, algo-1's after 1 s; 800 lines in 4 s.
    `submit --wait` and a `logs --follow` started with it both show all 800, each once."""
    sagemaker_endpoint.log_lag.update({"algo-1": 1.0, "algo-2": 10.0})
    spec = write_job(tmp_path, CHATTY)
    waited = subprocess.Popen(
        [sys.executable, "-m", "cloudtrain", "submit", str(spec), "--backend", "sagemaker", "--wait"],
        cwd=REPO,
        env=clean_env(home) | aws_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    job = None
    assert waited.stderr is not None
    err = []
    for line in waited.stderr:
        err.append(line)
        if m := re.match(r"job (\S+) submitted", line):
            job = m.group(1)
            break
    assert job, "".join(err)
    follower = Follower(job, home)
    _, rest = waited.communicate(timeout=240)
    assert waited.returncode == 0, rest
    assert follower.wait(120) == 0, follower.err
    everything = range(400)
    shown = lines_of("".join(err) + rest)
    assert shown == {"algo-1": set(everything), "algo-2": set(everything)}
    assert len(re.findall(r"algo-\d n=\d+$", rest, flags=re.M)) == 800  # each once
    followed = [(e["host"], e["message"]) for _, e in follower.lines if " n=" in e["message"]]
    assert sorted(followed) == sorted((h, f"{h} n={i}") for h in ("algo-1", "algo-2") for i in everything)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("error", service="logs", code="AccessDeniedException", message="not authorized: logs:GetLogEvents"),
        Fault("error", service="logs", code="ExpiredTokenException", message="The security token has expired"),
    ],
    ids=["denied", "expired"],
)
def test_a_failing_logs_api_gives_one_line_and_the_wait_goes_on(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path, fault: Fault
) -> None:
    fault.times = 1000
    spec = write_job(tmp_path, QUIET)
    with FaultProxy(sagemaker_endpoint.url, [fault]) as proxy:
        result = cloudtrain(
            "submit", str(spec), "--backend", "sagemaker", "--wait", home=home, env=endpoint_env(proxy.url), timeout=240
        )
    assert fault.hits >= 1
    assert result.code == 0, result.err  # the job Completed
    assert "Traceback" not in result.err
    stopped = [line for line in result.err.splitlines() if line.startswith("logs stopped: ")]
    assert len(stopped) == 1 and stopped[0].endswith("still waiting for the job's status"), result.err
    assert [line for line in result.err.splitlines() if line.startswith("status ")][-1].startswith("status Completed")


@pytest.mark.parametrize(
    "fault",
    [
        Fault("throttle", service="logs", operation="GetLogEvents", times=12),
        Fault("throttle", service="logs", operation="DescribeLogStreams", times=12),
        Fault("throttle", service="sagemaker", operation="DescribeTrainingJob", skip=1, times=12),
        Fault(
            "error", service="logs", operation="GetLogEvents", code="ServiceUnavailableException", status=503, times=12
        ),
    ],
    ids=["GetLogEvents", "DescribeLogStreams", "DescribeTrainingJob", "logs-5xx"],
)
def test_throttling_and_5xx_back_off_and_never_end_a_wait_or_a_follow(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path, fault: Fault
) -> None:
    """AWS busy past botocore's retries (two attempts here): the wait and a `logs --follow` back off and go on;
    every line shows, nothing says the logs stopped, the wait ends with the job."""
    spec = write_job(tmp_path, QUIET)
    with FaultProxy(sagemaker_endpoint.url, [fault]) as proxy:
        env = endpoint_env(proxy.url)
        result = cloudtrain("submit", str(spec), "--backend", "sagemaker", "--wait", home=home, env=env, timeout=300)
        job = next(line for line in result.err.splitlines() if line.startswith("job ")).split()[1]
        followed = cloudtrain("logs", job, "--follow", home=home, env=env, timeout=300)
    assert fault.hits == fault.times, (fault.hits, result.err)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err and "logs stopped" not in result.err, result.err
    assert [line for line in result.err.splitlines() if line.startswith("status ")][-1].startswith("status Completed")
    for out in (result.err, followed.out):
        assert len(re.findall(r"algo-\d working$", out, flags=re.M)) == 2, out
        assert len(re.findall(r"algo-\d done$", out, flags=re.M)) == 2, out
    assert followed.code == 0, followed.err


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # Debian's faketime (scripts/setup)


@pytest.mark.parametrize("skew", ["+5m", "-5m"])
def test_a_64_host_wait_stays_within_the_account_quotas_and_loses_no_line(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path, skew: str
) -> None:
    """`submit --wait` of a 64-host job on a machine whose clock is 5 minutes off, half the hosts' lines reaching
    CloudWatch 10 s late: every line shows once, and the control plane (AWS's per-account quotas: 10 GetLogEvents,
    5 DescribeLogStreams a second) never had to throttle it."""
    if not LIBFAKETIME.exists():
        pytest.skip(f"{LIBFAKETIME} is missing (Debian's faketime package; scripts/setup installs it as root)")
    sagemaker_endpoint.run_jobs = False  # held InProgress: this test plays the 64 hosts' streams itself
    spec = write_job(tmp_path, "print('hi')\n")
    spec.write_text(re.sub(r"instance_count: 2", "instance_count: 64", spec.read_text()))
    env = clean_env(home) | aws_env() | {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": skew}
    waited = subprocess.Popen(
        [sys.executable, "-m", "cloudtrain", "submit", str(spec), "--backend", "sagemaker", "--wait"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert waited.stderr is not None
    err = []
    job = None
    for line in waited.stderr:
        err.append(line)
        if m := re.match(r"job (\S+) submitted", line):
            job = m.group(1)
            break
    assert job, "".join(err)
    logs = sagemaker_endpoint.moto("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=LOG_GROUP)
    streams = {f"algo-{i}": f"{job}/algo-{i}-{int(time.time())}" for i in range(1, 65)}
    for name in streams.values():
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=name)
    held: list[tuple[float, str, dict[str, Any]]] = []
    for n in range(5):  # 5 lines a host, one round a second; the even hosts' lines reach CloudWatch 10 s late
        for host, name in streams.items():
            event = {"timestamp": int(time.time() * 1000), "message": f"{host} n={n}"}
            if int(host.split("-")[1]) % 2 == 0:
                held.append((time.monotonic() + 10, name, event))
            else:
                logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=name, logEvents=[event])
        time.sleep(1)
    boto3.client("sagemaker").stop_training_job(TrainingJobName=job)  # it ends with lines still to come
    for due, name, event in held:
        time.sleep(max(0.0, due - time.monotonic()))
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=name, logEvents=[event])
    _, rest = waited.communicate(timeout=300)
    assert waited.returncode == 1, rest  # Stopped
    shown = re.findall(r"(algo-\d+ n=\d)$", "".join(err) + rest, flags=re.M)
    assert sorted(shown) == sorted(f"{h} n={n}" for h in streams for n in range(5)), rest[-2000:]
    assert sagemaker_endpoint.logs.throttled == 0
    calls = Counter(r.operation for r in sagemaker_endpoint.requests)
    assert calls["GetLogEvents"] >= 64 and calls["FilterLogEvents"] == 0


def test_a_clock_five_minutes_off_is_one_line_with_the_offset(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """AWS refuses a request signed with a clock past SigV4's 5 minutes: the line says so, with the offset."""
    expired = Fault(
        "error",
        service="sagemaker",
        operation="DescribeTrainingJob",
        code="InvalidSignatureException",
        message="Signature expired: 20261207T013000Z is now earlier than 20261207T013012Z (20261207T013512Z - 5 min.)",
        times=100,
    )
    with FaultProxy(sagemaker_endpoint.url, [expired]) as proxy:
        result = cloudtrain("status", "any-job", "--backend", "sagemaker", home=home, env=endpoint_env(proxy.url))
    assert result.code == 3, result.err
    assert one_line_error(result).startswith(
        "error: this machine's clock is 5m12s behind AWS's (InvalidSignatureException): AWS refuses requests signed"
    )


def test_credentials_expiring_mid_wait_say_so_and_leave_the_job_running(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """A CI role's session ends during `--wait`: one line, exit 3, and the job is not stopped."""
    spec = write_job(tmp_path, "import time\nprint('long', flush=True)\ntime.sleep(300)\n")
    expired = Fault(
        "error",
        service="sagemaker",
        operation="DescribeTrainingJob",
        code="ExpiredTokenException",
        message="The security token included in the request is expired",
        skip=2,
        times=100,
    )
    with FaultProxy(sagemaker_endpoint.url, [expired]) as proxy:
        result = cloudtrain(
            "submit",
            str(spec),
            "--backend",
            "sagemaker",
            "--wait",
            "--stop-on-interrupt",
            home=home,
            env=endpoint_env(proxy.url),
            timeout=120,
        )
    assert result.code == 3, result.err
    line = one_line_error(result)
    assert "rejected the credentials (ExpiredTokenException) while waiting; job " in line and "keeps running" in line
    assert not sagemaker_endpoint.calls("StopTrainingJob")
    job = line.split("; job ", 1)[1].split()[0]
    assert boto3.client("sagemaker").describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "InProgress"
    boto3.client("sagemaker").stop_training_job(TrainingJobName=job)


# --- smaller: region advice, unique names, billable time, warm-pool cost ---------------------------------


def test_no_region_says_what_botocore_reads(sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path) -> None:
    """botocore reads AWS_DEFAULT_REGION (or the profile's), not AWS_REGION: the advice names what works."""
    no_region = {k: v for k, v in aws_env().items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    result = cloudtrain("status", "--backend", "sagemaker", home=home, env=no_region | {"AWS_REGION": "us-east-1"})
    assert result.code == 3
    assert "AWS_DEFAULT_REGION" in one_line_error(result) and "AWS_REGION" not in one_line_error(result).replace(
        "AWS_DEFAULT_REGION", ""
    )
    advised = cloudtrain(
        "status", "--backend", "sagemaker", home=home, env=no_region | {"AWS_DEFAULT_REGION": "us-east-1"}
    )
    assert advised.code == 0, advised.err


def test_job_names_made_in_the_same_second_differ() -> None:
    """1000 names within a second (the old suffix, seconds and one random byte, collided 1 in 256 a pair)."""
    from cloudtrain.api import job_name_for

    names = [job_name_for("digits") for _ in range(1000)]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"digits-[0-9a-z]{12}", n) for n in names)
    assert names[0][:13] <= names[-1][:13]  # the time part sorts


def test_billable_time_is_shown_for_every_instance_and_warm_pools_are_costed(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    done = ct(
        "submit", str(write_job(tmp_path, "print('hi')\n")), "--backend", "sagemaker", "--wait", "--json", home=home
    )
    assert done.code == 0, done.err
    job = done.json()["job"]
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=job["name"])
    assert job["billable_seconds"] == described["BillableTimeInSeconds"]  # per instance, as AWS says
    assert job["billable_instance_seconds"] == 2 * described["BillableTimeInSeconds"]
    shown = ct("status", job["name"], home=home).out
    assert f"{2 * described['BillableTimeInSeconds']}s (2 x {described['BillableTimeInSeconds']}s)" in shown

    spec = with_spec(tmp_path / "warm", "")
    cold = ct("submit", str(spec), "--dry-run", "--json", home=home).json()["plan"]["cost"]
    warm = ct("submit", str(spec), "--dry-run", "--json", "--set", "resources.keep_alive=30m", home=home)
    cost = warm.json()["plan"]["cost"]
    assert cost["warm_pool_hours"] == 0.5  # on top of max_runtime's 24 h, for each of the 2 instances
    assert cost["total_usd"] == pytest.approx(cold["total_usd"] * 24.5 / 24, abs=0.01)
    assert "0.5 h warm pool" in cost["summary"]


# --- doctor, and the IAM policy cloudtrain documents ---------------------------------------------------

SAGEMAKER_TRUST = json.dumps(
    {
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
    }
)


def doctor(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict[str, str]]]:
    result = cloudtrain("doctor", "--json", *args, home=home, env=env if env is not None else aws_env())
    assert "Traceback" not in result.err, result.err
    return result.code, {c["name"]: c for c in result.json()["checks"]}


def test_doctor_checks_credentials_region_role_and_bucket(sagemaker_endpoint: ControlPlane, home: Path) -> None:
    iam = boto3.client("iam")
    code, checks = doctor(home)  # the fixture's role does not exist in this account yet
    assert code == 5 and checks["role"]["status"] == "fail" and "does not exist" in checks["role"]["detail"]
    assert checks["credentials"]["status"] == "ok" and "account 123456789012" in checks["credentials"]["detail"]
    assert checks["bucket"] == {
        "name": "bucket",
        "status": "ok",
        "detail": f"{DEFAULT_BUCKET} (the default bucket) does not exist yet: the first submit creates it",
    }
    iam.create_role(RoleName="SageMakerRole", AssumeRolePolicyDocument=SAGEMAKER_TRUST)
    boto3.client("s3").create_bucket(Bucket=DEFAULT_BUCKET)
    code, checks = doctor(home)
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"} and list(checks) == [
        "region",
        "credentials",
        "role",
        "bucket",
    ]

    iam.create_role(RoleName="LambdaRole", AssumeRolePolicyDocument=SAGEMAKER_TRUST.replace("sagemaker", "lambda"))
    code, checks = doctor(home, "--role-arn", "arn:aws:iam::123456789012:role/LambdaRole")
    assert code == 5 and "does not let sagemaker.amazonaws.com assume it" in checks["role"]["detail"]

    sagemaker_endpoint.bucket_owners[DEFAULT_BUCKET] = "999999999999"
    code, checks = doctor(home)
    assert code == 5 and checks["bucket"]["status"] == "fail" and "another account's" in checks["bucket"]["detail"]

    no_region = {k: v for k, v in aws_env().items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    code, checks = doctor(home, env=no_region)
    assert code == 3 and list(checks) == ["region"] and "AWS_DEFAULT_REGION" in checks["region"]["detail"]
    shown = cloudtrain("doctor", home=home, env=aws_env())
    assert shown.code == 5 and re.search(r"^FAIL +bucket +sagemaker-us-east-1-123456789012", shown.out, flags=re.M)


S3_ACTIONS = {  # the IAM action each S3 request needs
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "CreateBucket": "s3:CreateBucket",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",  # CopyObject too (a PUT with a key), which also reads its source
    "UploadPart": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
}


def test_the_documented_policy_allows_every_call_cloudtrain_makes(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """Submit, wait, logs, list, fetch, resume, stop and doctor through the endpoint: every request maps to an
    action docs/iam-policy.json allows (and the job role's policy lets the toolkit find model_dir's bucket)."""
    boto3.client("iam").create_role(RoleName="SageMakerRole", AssumeRolePolicyDocument=SAGEMAKER_TRUST)
    setup = len(sagemaker_endpoint.requests)  # the test's own
    spec = write_job(tmp_path, "print('hi', flush=True)\n")
    first = ct("submit", str(spec), "--backend", "sagemaker", "--wait", "--json", home=home)
    assert first.code == 0, first.err
    name = first.json()["job"]["name"]
    assert ct("logs", name, home=home).code == 0
    assert ct("status", "--backend", "sagemaker", home=home).code == 0
    assert ct("fetch-model", name, "--to", str(tmp_path / "out"), home=home).code == 0
    boto3.client("s3").put_object(Bucket=DEFAULT_BUCKET, Key=f"cloudtrain/{name}/checkpoints/state.json", Body=b"{}")
    resumed = ct("submit", str(spec), "--backend", "sagemaker", "--resume", name, "--json", home=home)
    assert resumed.code == 0, resumed.err
    assert ct("stop", resumed.json()["job"]["name"], home=home).code == 0
    assert doctor(home)[0] == 0

    policy = json.loads((REPO / "docs" / "iam-policy.json").read_text())
    allowed = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    needed = set()
    for r in sagemaker_endpoint.requests[setup:]:  # and one PutObject of the test's, which cloudtrain needs too
        needed.add(S3_ACTIONS[r.operation] if r.service == "s3" else f"{r.service}:{r.operation}")
        if r.operation == "CreateTrainingJob":
            needed |= {"sagemaker:AddTags", "iam:PassRole"}  # tags on create; the role handed to SageMaker
    assert needed - allowed == set()
    assert {"sagemaker:Search", "logs:GetLogEvents", "s3:CreateBucket", "iam:GetRole"} <= needed
    job_role = json.loads((REPO / "docs" / "iam-job-role-policy.json").read_text())
    assert any("s3:GetBucketLocation" in s["Action"] for s in job_role["Statement"])

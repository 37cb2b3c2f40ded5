"""The SageMaker control plane stand-in is no kinder than AWS: what AWS refuses, it refuses; what AWS does to a
job (sync every host's checkpoints, fail on a missing bucket, checksum artifacts), it does.

Each test here failed on the control plane before its validator (now cloudtrain.backends.sagemaker.rules) and
the changes that came with it: a test double kinder than AWS lets the product pass where it would fail.
"""

from __future__ import annotations

import base64
import copy
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.sagemaker_control_plane import ControlPlane
from tests.test_faults import crc64nvme
from tests.test_sagemaker_e2e import TINY, ct, wait_for, write_job

CHECKPOINTER = """\
    import os, pathlib
    folder = pathlib.Path(os.environ["CLOUDTRAIN_CHECKPOINT_DIR"])
    host = os.environ["SM_CURRENT_HOST"]
    if host == "algo-1":
        (folder / "ckpt-1.data-00000-of-00001").write_text("weights")
        (folder / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"')
    else:
        (folder / f"{host}.state").write_text("worker state")
    print("saved", flush=True)
    """


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def submitted_request(plane: ControlPlane, tmp_path: Path, home: Path, script: str = TINY) -> dict[str, Any]:
    """A CreateTrainingJob request cloudtrain really sent (code and data in S3), its job held for capacity."""
    plane.run_jobs = False
    submitted = ct("submit", str(write_job(tmp_path, script)), "--backend", "sagemaker", "--json", home=home)
    assert submitted.code == 0, submitted.err
    (request,) = [r.json() for r in plane.calls("CreateTrainingJob")]
    return request


def refused(request: dict[str, Any]) -> str:
    """The ValidationException's message for a request sent without botocore's own checks (as a buggy client)."""
    raw = boto3.client("sagemaker", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as e:
        raw.create_training_job(**request)
    assert e.value.response["Error"]["Code"] == "ValidationException", e.value.response
    return str(e.value.response["Error"]["Message"])


def changed(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(request)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    out["TrainingJobName"] = "refused"
    return out


REFUSED = [  # (field, value, what the answer says): each was accepted before
    ("AlgorithmSpecification.TrainingInputMode", "Bogus", "'algorithmSpecification.trainingInputMode'"),
    ("ResourceConfig.InstanceType", "ml.bogus.huge", "'resourceConfig.instanceType' failed to satisfy"),
    ("ResourceConfig.KeepAlivePeriodInSeconds", 99999, "less than or equal to 21600"),
    ("StoppingCondition.MaxRuntimeInSeconds", 10**9, "less than or equal to 2419200"),
    ("Environment", {"bad key!": "x"}, "'environment.bad key!.key'"),
    ("Environment", {"LONG": "x" * 5000}, "'environment.LONG.value' failed to satisfy constraint"),
    ("Environment", {f"V{i}": "x" for i in range(101)}, "at 'environment' failed"),
    ("Tags", [{"Key": f"aws:t{i}", "Value": "x"} for i in range(60)], "at 'tags' failed"),
    ("Tags", [{"Key": "aws:owner", "Value": "me"}], "reserved prefix 'aws:'"),
    ("Tags", [{"Key": "team", "Value": "a"}, {"Key": "team", "Value": "b"}], "unique per resource"),
    ("Tags", [{"Key": "bad\u0007key", "Value": "x"}], "'tags.1.member.key'"),
    ("RetryStrategy", {"MaximumRetryAttempts": 99}, "'retryStrategy.maximumRetryAttempts'"),
    ("HyperParameters.epochs", "9" * 2501, "'hyperParameters.epochs.value'"),
    ("OutputDataConfig.S3OutputPath", "https://example.com/out", "is not an s3:// URI"),
]


def test_create_refuses_what_aws_refuses(sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path) -> None:
    request = submitted_request(sagemaker_endpoint, tmp_path, home)
    for path, value, message in REFUSED:
        answer = refused(changed(request, path, value))
        assert message in answer, (path, answer)
    boto3.client("sagemaker").create_training_job(**{**request, "TrainingJobName": "accepted"})  # the rest is fine


def test_other_operations_are_checked_against_the_model_too(sagemaker_endpoint: ControlPlane) -> None:
    raw = boto3.client("sagemaker", config=Config(parameter_validation=False))
    with pytest.raises(ClientError, match=r"'maxResults' failed to satisfy constraint.*less than or equal to 100"):
        raw.list_training_jobs(MaxResults=1000)
    with pytest.raises(ClientError, match="'sortBy'"):
        raw.list_training_jobs(SortBy="Size")


def test_a_channel_that_names_no_object_is_refused_at_create(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """AWS lists every S3Prefix channel when the job is created: an empty prefix or a missing bucket is refused."""
    request = submitted_request(sagemaker_endpoint, tmp_path, home)
    channel = request["InputDataConfig"][0]
    role = request["RoleArn"]
    for uri in ("s3://sagemaker-us-east-1-123456789012/nothing-here/", "s3://no-such-bucket-ct/train/"):
        source = {**channel["DataSource"]["S3DataSource"], "S3Uri": uri}
        bad = {
            **request,
            "TrainingJobName": "empty",
            "InputDataConfig": [{**channel, "DataSource": {"S3DataSource": source}}],
        }
        bucket = uri.split("/")[2]
        assert refused(bad) == (
            f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the bucket '
            f"exists in the selected region (us-east-1), that objects exist under that S3 prefix, and that the role "
            f'"{role}" has "s3:ListBucket" permissions on bucket "{bucket}".'
        )
    assert [r.json()["TrainingJobName"] for r in sagemaker_endpoint.calls("CreateTrainingJob")][1:] == ["empty"] * 2
    sm = boto3.client("sagemaker")
    assert [s["TrainingJobName"] for s in sm.list_training_jobs()["TrainingJobSummaries"]] == [
        request["TrainingJobName"]
    ]


def test_a_missing_output_bucket_fails_the_job_after_training(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """The bucket went away while the job ran: the upload fails and so does the job, with SageMaker's reason."""
    request = submitted_request(sagemaker_endpoint, tmp_path, home)
    sagemaker_endpoint.run_jobs = True
    job = {**request, "TrainingJobName": "no-bucket", "OutputDataConfig": {"S3OutputPath": "s3://gone-bucket-ct/out"}}
    job.pop("CheckpointConfig")
    sm = boto3.client("sagemaker")
    sm.create_training_job(**job)
    described = wait_for(
        "the job to end",
        lambda: (d := sm.describe_training_job(TrainingJobName="no-bucket"))["TrainingJobStatus"] != "InProgress" and d,
    )
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith(
        "ClientError: Artifact upload failed:Unable to upload file to s3://gone-bucket-ct/out/no-bucket/output/"
    )
    assert "NoSuchBucket" in described["FailureReason"]
    assert "ModelArtifacts" not in described
    status = ct("status", "no-bucket", "--backend", "sagemaker", "--json", home=home).json()
    assert status["status"] == "Failed" and "NoSuchBucket" in status["failure_reason"]


def test_artifacts_carry_s3s_crc64nvme_as_sagemakers_do(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    done = ct("submit", str(write_job(tmp_path, TINY)), "--backend", "sagemaker", "--wait", "--json", home=home)
    assert done.code == 0, done.err
    uri = done.json()["job"]["artifacts"]["model"]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert head["ChecksumCRC64NVME"] == base64.b64encode(crc64nvme(body).to_bytes(8, "big")).decode()
    assert "ChecksumCRC32" not in head


def test_every_hosts_checkpoints_are_synced_in_no_set_order(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, home: Path
) -> None:
    """Both hosts' files reach the checkpoint prefix; the order is not index-last, so a resume can meet a torn one."""
    offered: list[list[str]] = []

    def index_first(files: list[Any]) -> list[Any]:
        ordered = sorted(files, key=lambda f: f[1] != "checkpoint")
        offered.append([f"{host}/{rel}" for host, rel, _ in ordered])
        return ordered

    sagemaker_endpoint.checkpoint_order = index_first
    put: list[str] = []  # what the control plane really sent to S3, in its order (not the order offered above)
    sagemaker_endpoint.moto("s3").meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: put.append(params["Key"].rsplit("/", 1)[-1])
    )
    spec = write_job(tmp_path, CHECKPOINTER)
    done = ct("submit", str(spec), "--backend", "sagemaker", "--wait", "--json", home=home)
    assert done.code == 0, done.err
    uri = boto3.client("sagemaker").describe_training_job(TrainingJobName=done.json()["job"]["name"])
    bucket, _, prefix = uri["CheckpointConfig"]["S3Uri"].removeprefix("s3://").partition("/")
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
    assert sorted(o["Key"].removeprefix(prefix + "/") for o in listed) == [
        "algo-2.state",
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
    ]
    assert "algo-2/algo-2.state" in next(files for files in reversed(offered) if files)
    # The index reached S3 before the data it names: a reader meanwhile sees a torn checkpoint.
    assert put.index("checkpoint") < put.index("ckpt-1.data-00000-of-00001"), put


def test_get_log_events_is_as_strict_as_cloudwatch(sagemaker_endpoint: ControlPlane) -> None:
    """Pages of at most 1 MB (moto caps only the count at 10,000), an empty page with a moved token before the
    end of a stream, and ThrottlingException above the account's 10 GetLogEvents a second."""
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/strict")
    logs.create_log_stream(logGroupName="/strict", logStreamName="s")
    line, now = "x" * 100_000, int(time.time() * 1000)
    for i in range(25):  # 2.5 MB in all
        event = {"timestamp": now + i, "message": f"{i:02d} {line}"}
        sagemaker_endpoint.moto("logs").put_log_events(logGroupName="/strict", logStreamName="s", logEvents=[event])
    sagemaker_endpoint.logs.empty_every = 2
    pages, token, seen = [], None, []
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = logs.get_log_events(logGroupName="/strict", logStreamName="s", startFromHead=True, **kwargs)
        pages.append(len(page["events"]))
        assert sum(len(e["message"].encode()) + 26 for e in page["events"]) <= 1_048_576
        seen += [e["message"][:2] for e in page["events"]]
        if page["nextForwardToken"] == token:
            break
        token = page["nextForwardToken"]
    assert seen == [f"{i:02d}" for i in range(25)], pages  # every event once, in order
    assert 0 in pages[:-1] and max(pages) < 25, pages  # an empty page before the end; no page holds them all
    sagemaker_endpoint.logs.empty_every = 0
    fast = boto3.client("logs", config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    def one(_: int) -> str:
        try:
            fast.get_log_events(logGroupName="/strict", logStreamName="s", limit=1)
            return "ok"
        except ClientError as e:
            return str(e.response["Error"]["Code"])

    began = time.monotonic()
    with ThreadPoolExecutor(10) as pool:  # 40 at once: well above 10 a second
        codes = list(pool.map(one, range(40)))
    allowed = 10 + 10 * (time.monotonic() - began)  # a second's burst, then 10 a second
    assert "ThrottlingException" in codes and codes.count("ok") <= allowed, codes

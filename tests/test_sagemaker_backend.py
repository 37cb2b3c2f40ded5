"""The SageMaker backend against moto's server on loopback: the request, uploads, jobs, logs, artifacts.

Nothing of cloudtrain is patched: every test talks to the real endpoint the `aws_endpoint` fixture
starts, and checks what arrived there with plain boto3 calls of its own.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.session import get_session
from botocore.validate import ParamValidator

from cloudtrain.backends.sagemaker.backend import SageMakerBackend
from cloudtrain.backends.sagemaker.cloudwatch import LOG_GROUP
from cloudtrain.backends.sagemaker.request import CODE_TAG, GIT_TAG, MANAGED_TAG, SPEC_TAG
from cloudtrain.errors import BackendUnavailable, JobExists, JobNotFound, UserError
from cloudtrain.pricing import price_per_hour
from cloudtrain.records import for_job
from cloudtrain.settings import Options, aws_configured, for_spec
from cloudtrain.spec.models import JobSpec, spec_digest
from cloudtrain.transfer import vendor
from cloudtrain.transfer.code import build_code_package, code_tree, tarball_digest
from cloudtrain.transfer.tarballs import bytes_tarball
from tests.job_project import make_spec

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
ACCOUNT = "123456789012"  # moto's
DEFAULT_BUCKET = f"sagemaker-us-east-1-{ACCOUNT}"
GPU_219 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.19-gpu-py312"


def sagemaker(
    spec: JobSpec | None = None,
    *,
    role_arn: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    **intervals: float,
) -> SageMakerBackend:
    """The backend as a command opens it: its settings resolved once, from the command line's (these
    arguments), CLOUDTRAIN_*, the spec and the config file; `profile` stands for the spec's aws.profile."""
    options = Options(backend="sagemaker", role_arn=role_arn, endpoint_url=endpoint_url)
    settings = for_spec(options, spec)[0] if spec is not None else for_job(options)
    if profile is not None:
        settings = replace(settings, aws_profile=profile)
    return SageMakerBackend(settings, **intervals)


FULL: dict[str, Any] = {
    "resources": {
        "volume_size_gb": 50,
        "max_runtime": "2h",
        "spot": {"enabled": True, "max_wait": "3h"},  # so no keep_alive: AWS has no warm pools for spot
        "max_retry_attempts": 2,
    },
    "distribution": {"strategy": "multi_worker_mirrored", "communication": "nccl"},
    "data": {"extra": "s3://ct-shared-data/digits/"},
    "hyperparameters": {"learning_rate": 0.01, "optimizer": "adam", "shuffle": True},
    "environment": {"TF_CPP_MIN_LOG_LEVEL": "2"},
    "checkpoints": {"local_path": "/opt/ml/checkpoints"},
    "output": {"s3_uri": "s3://ct-test-out/runs"},
    "metrics": [{"name": "val_accuracy", "regex": "val_accuracy=([0-9.]+)"}],
    "aws": {"kms_key_id": "alias/cloudtrain", "vpc": {"subnets": ["subnet-0abc"], "security_group_ids": ["sg-0abc"]}},
    "tags": {"team": "ml"},
}


def all_objects(s3: Any) -> dict[str, tuple[str, int, Any]]:
    """bucket/key -> (ETag, size, when written) of everything in moto's S3."""
    found: dict[str, tuple[str, int, Any]] = {}
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for item in page.get("Contents", []):
                found[f"{bucket['Name']}/{item['Key']}"] = (item["ETag"], item["Size"], item["LastModified"])
    return found


def validate_create_training_job(request: dict[str, Any]) -> None:
    """botocore's own validator on the sagemaker service model (what boto3 runs before sending)."""
    shape = get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


# --- the request ----------------------------------------------------------------------------------


def test_plan_maps_every_field_and_passes_botocore_validation(aws_endpoint: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, FULL)
    plan = sagemaker(spec).plan(spec, "digits-1")
    req = plan["request"]
    validate_create_training_job(req)

    code_upload, data_upload = plan["uploads"]
    assert code_upload["kind"] == "code" and code_upload["exists"] is False
    assert code_upload["s3_uri"] == f"s3://ct-test-out/runs/code/{code_upload['sha256']}/sourcedir.tar.gz"
    assert data_upload["kind"] == "data" and data_upload["name"] == "train"
    assert data_upload["s3_uri"] == f"s3://ct-test-out/runs/data/{data_upload['sha256']}/"

    assert req["TrainingJobName"] == "digits-1"
    assert req["AlgorithmSpecification"] == {
        "TrainingImage": GPU_219,
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "val_accuracy", "Regex": "val_accuracy=([0-9.]+)"}],
        "EnableSageMakerMetricsTimeSeries": True,
    }
    # User values JSON-encoded as the SDK does (strings quoted), then the TF estimator's script-mode ones.
    assert req["HyperParameters"] == {
        "epochs": "5",
        "learning_rate": "0.01",
        "optimizer": '"adam"',
        "shuffle": "true",
        "sagemaker_submit_directory": json.dumps(code_upload["s3_uri"]),
        "sagemaker_program": '"train.py"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"digits-1"',
        "sagemaker_region": '"us-east-1"',
        "sagemaker_multi_worker_mirrored_strategy_enabled": "true",
        "model_dir": '"s3://ct-test-out/runs/digits-1/model"',
    }
    assert req["RoleArn"] == ROLE
    assert sorted(req["InputDataConfig"], key=lambda c: c["ChannelName"]) == [
        {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
            },
            "CompressionType": "None",
            "RecordWrapperType": "None",
        }
        for name, uri in (("extra", "s3://ct-shared-data/digits/"), ("train", data_upload["s3_uri"]))
    ]
    assert req["OutputDataConfig"] == {"S3OutputPath": "s3://ct-test-out/runs", "KmsKeyId": "alias/cloudtrain"}
    # g5 has instance storage: SageMaker refuses a VolumeKmsKeyId there (the SDK's rule).
    assert req["ResourceConfig"] == {
        "InstanceType": "ml.g5.xlarge",
        "InstanceCount": 2,
        "VolumeSizeInGB": 50,
    }
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 10800}
    assert req["EnableManagedSpotTraining"] is True
    assert req["CheckpointConfig"] == {
        "S3Uri": "s3://ct-test-out/runs/digits-1/checkpoints",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert req["Environment"] == {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_USE_LEGACY_KERAS": "1",  # model.fit under MWMS on 2 instances needs tf-keras
        "CLOUDTRAIN_STRATEGY": "multi_worker_mirrored",
        "CLOUDTRAIN_COMMUNICATION": "nccl",
        "CLOUDTRAIN_CHECKPOINT_DIR": "/opt/ml/checkpoints",
    }
    assert req["VpcConfig"] == {"SecurityGroupIds": ["sg-0abc"], "Subnets": ["subnet-0abc"]}
    assert req["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    tags = {t["Key"]: t["Value"] for t in req["Tags"]}
    assert tags["team"] == "ml" and tags[MANAGED_TAG] == "true"
    assert tags[CODE_TAG] == code_upload["sha256"]
    assert tags[SPEC_TAG] == spec_digest(spec)
    assert GIT_TAG not in tags  # tmp_path is no git checkout
    assert plan["estimated_cost_usd"] == round(2 * 2 * price_per_hour("ml.g5.xlarge"), 2)  # 2 instances, 2 h
    assert "approximate, us-east-1" in plan["cost"]["summary"] and "approximate, us-east-1" in plan["cost_note"]

    # Without KMS, spot, VPC or retries those fields are absent; an EBS-backed type gets VolumeKmsKeyId.
    small = make_spec(tmp_path / "small", drop=("data",))
    req = sagemaker(small).plan(small, "digits-2")["request"]
    validate_create_training_job(req)
    assert {"VpcConfig", "RetryStrategy", "InputDataConfig"}.isdisjoint(req)
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert req["EnableManagedSpotTraining"] is False
    assert req["CheckpointConfig"]["S3Uri"] == f"s3://{DEFAULT_BUCKET}/cloudtrain/digits-2/checkpoints"
    m5 = make_spec(
        tmp_path / "m5",
        {"resources": {"instance_type": "ml.m5.xlarge", "keep_alive": "10m"}, "aws": {"kms_key_id": "k"}},
    )
    req = sagemaker(m5).plan(m5, "digits-3")["request"]
    assert req["ResourceConfig"]["VolumeKmsKeyId"] == "k"
    assert req["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600
    assert req["AlgorithmSpecification"]["TrainingImage"].endswith("tensorflow-training:2.19-cpu-py312")


def test_plan_creates_nothing(aws_endpoint: str, tmp_path: Path) -> None:
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    spec = make_spec(tmp_path)  # default bucket: sagemaker-<region>-<account>, which does not exist yet
    plan = sagemaker(spec).plan(spec, "dry-1")
    assert s3.list_buckets()["Buckets"] == []
    assert sm.list_training_jobs()["TrainingJobSummaries"] == []
    assert all(u["exists"] is False and u["uploaded_bytes"] == 0 for u in plan["uploads"])
    assert any(DEFAULT_BUCKET in note and "does not exist" in note for note in plan["notes"])
    assert plan["request"]["OutputDataConfig"]["S3OutputPath"] == f"s3://{DEFAULT_BUCKET}/cloudtrain"


def test_plan_without_aws_still_shows_the_request(aws_endpoint: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    plan = sagemaker(spec, endpoint_url=f"http://127.0.0.1:{closed_port()}").plan(spec, "offline-1")
    validate_create_training_job(plan["request"])
    assert all(u["exists"] is None for u in plan["uploads"])
    assert "AWS not reached" in plan["notes"][0]


def test_missing_role_names_the_field(aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(tmp_path, drop=("aws.role_arn",))
    with pytest.raises(UserError, match=r"aws\.role_arn") as e:
        sagemaker(spec).submit(spec, "no-role")
    assert e.value.exit_code == 2
    assert boto3.client("s3").list_buckets()["Buckets"] == []
    monkeypatch.setenv("CLOUDTRAIN_ROLE_ARN", ROLE)
    assert sagemaker(spec).plan(spec, "env-role")["request"]["RoleArn"] == ROLE
    other = "arn:aws:iam::123456789012:role/FromCli"
    assert sagemaker(spec, role_arn=other).plan(spec, "cli-role")["request"]["RoleArn"] == other


def test_reserved_hyperparameters_and_tags_are_refused(aws_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"hyperparameters\.sagemaker_program"):
        sagemaker(spec := make_spec(tmp_path, {"hyperparameters": {"sagemaker_program": "x.py"}})).submit(spec, "hp")
    assert boto3.client("s3").list_buckets()["Buckets"] == []  # refused before any bucket or upload
    with pytest.raises(UserError, match=r"tags\.cloudtrain:managed"):
        sagemaker(spec := make_spec(tmp_path / "t", {"tags": {"cloudtrain:managed": "no"}})).plan(spec, "tag")


# --- content-addressed uploads (the code package itself: tests/test_code_package.py) -----------------


def test_tf_keras_is_packed_for_an_image_that_may_lack_it(aws_endpoint: str, tmp_path: Path) -> None:
    """A 2-instance MWMS job on AWS's image of this Python's TensorFlow minor (2.21 today: tf-keras not among its
    listed packages) gets this Python's tf-keras in its code, on the PYTHONPATH AWS's toolkit hands on; on 2.19's
    image (which has it) none. The minor follows the installed tf-keras, so the test runs whatever TF moves to."""
    import tf_keras  # scripts/setup installs it at TensorFlow's minor: missing is a broken set-up, not a skip

    minor = ".".join(tf_keras.__version__.split(".")[:2])
    spec = make_spec(tmp_path, {"image": {"framework_version": minor}})
    request = sagemaker(spec).plan(spec, "digits-1")["request"]
    assert request["Environment"]["PYTHONPATH"] == "/opt/ml/code/.cloudtrain/vendor"
    assert request["Environment"]["TF_USE_LEGACY_KERAS"] == "1"
    names = build_code_package(spec.code, tmp_path / "a", extra=vendor.job_entries(spec)).names
    assert ".cloudtrain/vendor/tf_keras/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n]

    on_219 = make_spec(tmp_path, {"image": {"framework_version": "2.19"}})
    assert (
        vendor.job_entries(on_219) == []
        and "PYTHONPATH" not in sagemaker(on_219).plan(on_219, "d-2")["request"]["Environment"]
    )


def test_second_submit_of_unchanged_code_and_data_uploads_nothing(aws_endpoint: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    spec = make_spec(tmp_path)
    backend = sagemaker(spec)
    backend.submit(spec, "run-1")
    first = backend.last_plan
    assert first is not None
    assert all(u.uploaded_bytes > 0 and u.exists is False for u in first.uploads)
    assert first.uploads[1].uploaded_bytes == first.uploads[1].size  # data as is; code as a tarball
    after_first = all_objects(s3)
    code, data = first.uploads
    code_key = f"{DEFAULT_BUCKET}/cloudtrain/code/{code.sha256}/sourcedir.tar.gz"
    assert set(after_first) == {
        code_key,
        f"{DEFAULT_BUCKET}/cloudtrain/data/{data.sha256}/x.csv",
        f"{DEFAULT_BUCKET}/cloudtrain/data/{data.sha256}.json",  # the manifest, outside the channel's prefix
    }
    stored = s3.get_object(Bucket=DEFAULT_BUCKET, Key=code_key.split("/", 1)[1])["Body"].read()
    (tmp_path / "stored.tar.gz").write_bytes(stored)
    assert tarball_digest(tmp_path / "stored.tar.gz") == code.sha256 == code_tree(spec.code).sha256
    assert code.uploaded_bytes == len(stored)

    # From here S3 keeps every version: a rewrite, even of identical bytes (same ETag, size, second), adds one.
    s3.put_bucket_versioning(Bucket=DEFAULT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    backend.submit(spec, "run-2")
    second = backend.last_plan
    assert second is not None
    assert second.uploaded_bytes == 0 and all(u.exists for u in second.uploads)
    assert all_objects(s3) == after_first
    versions = s3.list_object_versions(Bucket=DEFAULT_BUCKET).get("Versions", [])
    assert [v["Key"] for v in versions if v["VersionId"] != "null"] == []  # not one object rewritten
    assert [u.s3_uri for u in second.uploads] == [u.s3_uri for u in first.uploads]

    (tmp_path / "code" / "train.py").write_text("print('changed')\n")
    backend.submit(spec, "run-3")
    third = backend.last_plan
    assert third is not None
    assert [u.uploaded_bytes > 0 for u in third.uploads] == [True, False]  # new code, same data


# --- jobs -------------------------------------------------------------------------------------------


def test_submit_describe_list_stop_on_moto(aws_endpoint: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"output": {"s3_uri": "s3://ct-test-out/runs"}})
    backend = sagemaker(spec)
    with pytest.raises(UserError, match=r"output\.s3_uri: the S3 bucket 'ct-test-out' does not exist"):
        backend.submit(spec, "digits-a")
    boto3.client("s3").create_bucket(Bucket="ct-test-out")
    info = backend.submit(spec, "digits-a")
    assert backend.last_plan is not None
    # What SageMaker says of a job it has just accepted, from the request: no DescribeTrainingJob, no ListTags.
    assert info.name == "digits-a" and info.backend == "sagemaker" and info.status == "InProgress"
    assert info.tags[MANAGED_TAG] == "true" and info.tags[CODE_TAG] == backend.last_plan.code.sha256
    assert info.instance_type == "ml.g5.xlarge" and info.instance_count == 2
    assert info.artifacts["model"] == "s3://ct-test-out/runs/digits-a/output/model.tar.gz"

    described = backend.describe("digits-a")
    assert described.status == "Completed"  # moto: at once
    assert described.tags == {}  # one DescribeTrainingJob: the tags only when asked for
    assert backend.describe("digits-a", tags=True).tags[CODE_TAG] == backend.last_plan.code.sha256
    assert described.artifacts == {
        "model": "s3://ct-test-out/runs/digits-a/output/model.tar.gz",
        "output": "s3://ct-test-out/runs/digits-a/output/output.tar.gz",
        "checkpoints": "s3://ct-test-out/runs/digits-a/checkpoints",
        "tensorboard": "s3://ct-test-out/runs/digits-a/tensorboard-output",  # where SageMaker uploads them
    }
    assert described.transitions and described.transitions[0].status == "Starting"
    assert described.metrics == {"train:progress": 100.0}  # moto's FinalMetricDataList, name and value read
    assert described.created is not None and described.to_json()["name"] == "digits-a"

    time.sleep(0.01)
    backend.submit(spec, "digits-b")
    boto3.client("sagemaker").create_training_job(  # someone else's job: not listed
        TrainingJobName="not-ours",
        AlgorithmSpecification={"TrainingImage": GPU_219, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://ct-test-out/other"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    assert [j.name for j in backend.list_jobs()] == ["digits-b", "digits-a"]
    assert [j.name for j in backend.list_jobs(limit=1)] == ["digits-b"]
    assert backend.list_jobs()[0].tags[MANAGED_TAG] == "true"

    with pytest.raises(JobExists):  # moto accepts a taken name; AWS answers ResourceInUse; both are JobExists
        backend.submit(spec, "digits-a")
    with pytest.raises(JobNotFound):
        backend.describe("nope")
    assert backend.stop("digits-a").status == "Completed"  # terminal already: nothing to stop

    with pytest.raises(UserError, match="--resume: job 'digits-a' saved no checkpoints under s3://ct-test-out/runs/"):
        backend.plan(spec, "digits-c", resume_from="digits-a")
    boto3.client("s3").put_object(Bucket="ct-test-out", Key="runs/digits-a/checkpoints/ckpt-1.index", Body=b"i")
    resumed = backend.plan(spec, "digits-c", resume_from="digits-a")
    assert resumed["request"]["CheckpointConfig"]["S3Uri"] == "s3://ct-test-out/runs/digits-c/checkpoints"
    assert any("resume: 1 checkpoint file(s), 1 bytes, of digits-a are copied from" in n for n in resumed["notes"])
    with pytest.raises(JobNotFound):
        backend.plan(spec, "digits-d", resume_from="never-ran")


# --- logs -------------------------------------------------------------------------------------------


def test_logs_merge_streams_in_time_order_tagged_by_host(aws_endpoint: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    backend = sagemaker(spec, poll_interval=0.05, max_poll_interval=0.1)
    backend.submit(spec, "demo")
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    now = int(time.time() * 1000) - 1_000  # a second ago: an ingestion lag (ingestionTime - timestamp) of ~1 s
    lines = {
        "demo/algo-1-1700000000": [(now + 0, "a0"), (now + 20, "a2"), (now + 40, "a4\n")],
        "demo/algo-2-1700000000": [(now + 10, "b1"), (now + 30, "b3"), (now + 50, "b5")],
        "demo-2/algo-1-1700000000": [(now + 5, "other job")],  # shares the name prefix, not the stream prefix
    }
    for stream, events in lines.items():
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        for ts, message in events:  # one call per line, as a busy host's agent might
            logs.put_log_events(
                logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[{"timestamp": ts, "message": message}]
            )

    merged = list(backend.logs("demo"))
    assert [(e.host, e.message) for e in merged] == [
        ("algo-1", "a0"),
        ("algo-2", "b1"),
        ("algo-1", "a2"),
        ("algo-2", "b3"),
        ("algo-1", "a4"),
        ("algo-2", "b5"),
    ]
    assert merged[0].timestamp == pytest.approx(now / 1000)
    assert [e.message for e in backend.logs("demo", host="algo-2")] == ["b1", "b3", "b5"]
    followed = list(backend.logs("demo", follow=True))  # the job is terminal: drains, then ends
    assert [e.message for e in followed] == [e.message for e in merged]
    with pytest.raises(JobNotFound):
        list(backend.logs("nope"))


def test_logs_follow_reads_each_of_many_streams_with_its_own_token(aws_endpoint: str, tmp_path: Path) -> None:
    """120 streams (60 hosts, each container started twice): each read from its start with GetLogEvents and its
    forward token, every line once, merged by time; FilterLogEvents (5 requests/s per account) is never used."""
    spec = make_spec(tmp_path, {"resources": {"instance_count": 60}})
    backend = sagemaker(spec, poll_interval=0.01)
    backend.submit(spec, "wide")
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    now = int(time.time() * 1000) - 1_000  # a second ago: an ingestion lag (ingestionTime - timestamp) of ~1 s
    expected = []
    for start in (1700000000, 1700000100):
        for i in range(1, 61):
            stream = f"wide/algo-{i}-{start}"
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
            event = {"timestamp": now + len(expected), "message": f"{start} {i}"}
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[event])
            expected.append((f"algo-{i}", f"{start} {i}"))
    asked: list[tuple[str, str]] = []
    backend._session().boto_session.register(
        "provide-client-params.logs", lambda params, model, **_: asked.append((model.name, params.get("logStreamName")))
    )
    followed = list(backend.logs("wide", follow=True))  # terminal (moto): reads everything, then ends
    assert [(e.host, e.message) for e in followed] == expected
    reads = [stream for operation, stream in asked if operation == "GetLogEvents"]
    assert {op for op, _ in asked} == {"DescribeLogStreams", "GetLogEvents"}
    assert set(reads) == {f"wide/algo-{i}-{start}" for start in (1700000000, 1700000100) for i in range(1, 61)}


def test_logs_before_any_log_group_exist_are_empty(aws_endpoint: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    backend = sagemaker(spec, poll_interval=0.01)
    backend.submit(spec, "quiet")
    assert list(backend.logs("quiet")) == []
    assert list(backend.logs("quiet", follow=True)) == []


# --- artifacts --------------------------------------------------------------------------------------


def test_fetch_artifacts_downloads_in_parts_and_extracts(aws_endpoint: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ct-test-out")
    spec = make_spec(tmp_path, {"output": {"s3_uri": "s3://ct-test-out/runs"}})
    backend = sagemaker(spec)
    backend.submit(spec, "fetch-me")
    weights = os.urandom(20 << 20)  # incompressible: a 20 MiB model.tar.gz is three 8 MiB parts
    model = bytes_tarball({"model.keras": weights, "1/saved_model.pb": b"pb"})
    output = bytes_tarball({"eval_report.json": b'{"accuracy": 0.97}'})
    # Uploaded in 8 MiB parts: its checksum is of the parts, so only size and ETag pinning apply.
    multipart = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    s3.upload_fileobj(io.BytesIO(model), "ct-test-out", "runs/fetch-me/output/model.tar.gz", Config=multipart)
    assert "-" in s3.head_object(Bucket="ct-test-out", Key="runs/fetch-me/output/model.tar.gz")["ETag"]
    s3.put_object(
        Bucket="ct-test-out", Key="runs/fetch-me/output/output.tar.gz", Body=output, ChecksumAlgorithm="SHA256"
    )
    s3.put_object(Bucket="ct-test-out", Key="runs/fetch-me/checkpoints/ckpt-1.index", Body=b"index")
    s3.put_object(Bucket="ct-test-out", Key="runs/fetch-me/checkpoints/worker-1/ckpt-1.data", Body=b"data" * 1000)

    progress: list[tuple[int, int]] = []
    dest = tmp_path / "artifacts"
    got = backend.fetch_artifacts("fetch-me", dest, on_progress=lambda done, total: progress.append((done, total)))
    assert got.model == dest / "model" and got.output == dest / "output" and got.checkpoints == dest / "checkpoints"
    assert got.checked == {"model.tar.gz": "size only", "output.tar.gz": "SHA256"}
    assert (dest / "model" / "model.keras").read_bytes() == weights
    assert (dest / "model" / "1" / "saved_model.pb").read_bytes() == b"pb"
    assert (dest / "model.tar.gz").read_bytes() == model
    assert json.loads((dest / "output" / "eval_report.json").read_text()) == {"accuracy": 0.97}
    assert (dest / "checkpoints" / "ckpt-1.index").read_bytes() == b"index"
    assert (dest / "checkpoints" / "worker-1" / "ckpt-1.data").read_bytes() == b"data" * 1000
    total = len(model) + len(output) + 5 + 4000
    assert progress and progress[-1] == (total, total) and all(t == total for _, t in progress)
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoints", "model", "model.tar.gz", "output", "output.tar.gz"]

    again = backend.fetch_artifacts("fetch-me", dest)  # replaces what is there
    assert again.model == dest / "model" and (dest / "model" / "model.keras").stat().st_size == len(weights)


def test_fetch_artifacts_refuses_an_unsafe_archive(aws_endpoint: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ct-test-out")
    spec = make_spec(tmp_path, {"output": {"s3_uri": "s3://ct-test-out/runs"}})
    backend = sagemaker(spec)
    backend.submit(spec, "evil")
    s3.put_object(
        Bucket="ct-test-out", Key="runs/evil/output/model.tar.gz", Body=bytes_tarball({"../escaped.txt": b"x"})
    )
    dest = tmp_path / "artifacts"
    with pytest.raises(UserError, match="unsafe path"):
        backend.fetch_artifacts("evil", dest)
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "model").exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]


def test_fetch_artifacts_of_a_job_without_any(aws_endpoint: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    backend = sagemaker(spec)
    backend.submit(spec, "empty")
    got = backend.fetch_artifacts("empty", tmp_path / "artifacts")
    assert (got.model, got.output, got.checkpoints) == (None, None, None)


# --- AWS unreachable, configuration, laziness -----------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_closed_endpoint_is_backend_unavailable_in_one_line(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    for call in (lambda b: b.describe("x"), lambda b: b.list_jobs(), lambda b: list(b.logs("x"))):
        with pytest.raises(BackendUnavailable) as e:
            call(sagemaker())
        message = str(e.value)
        assert e.value.exit_code == 3
        assert message == f"cannot reach AWS at http://127.0.0.1:{port}: connection refused"
        assert "testing-secret-key" not in message and "testing-access-key" not in message
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        sagemaker(endpoint_url=f"http://user:pw@127.0.0.1:{port}").describe("x")
    assert time.monotonic() - started < 20  # fails fast: no ten adaptive retries with backoff


def test_missing_credentials_are_backend_unavailable(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BackendUnavailable, match="no AWS credentials"):
        sagemaker().describe("x")
    with pytest.raises(UserError, match="AWS profile"):
        sagemaker(profile="nobody").describe("x")


def test_aws_configured_is_a_cheap_local_check(tmp_path: Path) -> None:
    assert not aws_configured({}, home=tmp_path)
    assert aws_configured({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}, home=tmp_path)
    assert aws_configured({"AWS_PROFILE": "dev"}, home=tmp_path)
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_access_key_id = a\n")
    assert aws_configured({}, home=tmp_path)


def test_importing_the_aws_modules_does_not_import_boto3() -> None:
    code = (
        "import sys, cloudtrain.aws, cloudtrain.transfer.code, cloudtrain.image.stock, cloudtrain.pricing, "
        "cloudtrain.backends.sagemaker.backend; "
        "print(sorted(m for m in ('boto3', 'botocore', 'sagemaker') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- what `status` imports ---------------------------------------------------------------------------


def test_status_of_a_job_loads_neither_boto3_nor_the_spec_models(
    aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status JOB --json` is botocore and one request: no boto3 (s3transfer), no pydantic spec models, no YAML,
    no rich. (Checking CLOUDTRAIN_ROLE_ARN needs only the stdlib patterns.)"""
    sagemaker(spec := make_spec(tmp_path)).submit(spec, "light")
    monkeypatch.setenv("CLOUDTRAIN_ROLE_ARN", ROLE)
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path / "home"))
    code = (
        "import runpy, sys\n"
        "sys.argv = ['cloudtrain', 'status', 'light', '--backend', 'sagemaker', '--json']\n"
        "try:\n    runpy.run_module('cloudtrain', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = ('boto3', 's3transfer', 'cloudtrain.spec.models', 'cloudtrain.spec.source', 'yaml', 'rich')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "light"
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_first_submits_at_once_outside_us_east_1_share_the_new_bucket(aws_endpoint: str, tmp_path: Path) -> None:
    """Two first submits racing to create `sagemaker-eu-west-1-<account>`: S3 answers the second with
    BucketAlreadyOwnedByYou, which is as good as creating it."""
    from cloudtrain.aws import AwsSession
    from cloudtrain.settings import Settings

    session = AwsSession(Settings(region="eu-west-1"))
    bucket = f"sagemaker-eu-west-1-{ACCOUNT}"
    SageMakerBackend._create_bucket(session, bucket)
    SageMakerBackend._create_bucket(session, bucket)  # the other submit's: no error
    located = boto3.client("s3", region_name="eu-west-1").get_bucket_location(Bucket=bucket)
    assert located["LocationConstraint"] == "eu-west-1"

"""Channel kinds on the SageMaker path: the control plane serves each as AWS does (ShardedByS3Key shares, FastFile
fetched on first read, counted at its own S3 front), from the request cloudtrain sends."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import boto3
import pytest

from cloudtrain.channels import lazyfs
from tests.clirun import cloudtrain
from tests.sagemaker_control_plane import ControlPlane
from tests.test_sagemaker_e2e import aws_env

OBJECTS = 10
SPEC = """\
name: shards
code: {source_dir: code, entry_point: train.py}
image: {framework_version: "2.19"}
resources: {instance_type: ml.m5.xlarge, instance_count: 2}
distribution: {strategy: none}
data:
  train: {uri: "s3://datasets/ds/", mode: fastfile, distribution: sharded}
  eval: s3://datasets/eval/
"""
READ_ONE = """\
    import json, os, sys
    host, folder = os.environ["SM_CURRENT_HOST"], os.environ["SM_CHANNEL_TRAIN"]
    names = sorted(os.listdir(folder))
    def say(*words):  # one write per line: toolkit 5.1.4 relays each write of the script as a line of its own
        sys.stdout.write(" ".join(words) + "\\n")
        sys.stdout.flush()
    say("files", host, json.dumps(names))
    say("config", host, json.dumps(json.loads(os.environ["SM_INPUT_DATA_CONFIG"])["train"]))
    say("eval", host, json.dumps(sorted(os.listdir(os.environ["SM_CHANNEL_EVAL"]))))
    with open(os.path.join(folder, names[0]), "rb") as f:  # one file of the host's five
        f.read()
    """


NO_FUSE = pytest.mark.skipif(bool(lazyfs.unavailable()), reason=f"FastFile needs FUSE: {lazyfs.unavailable()}")


@NO_FUSE
def test_a_sharded_fastfile_channel_gives_each_host_its_share_fetched_as_read(
    sagemaker_endpoint: ControlPlane, tmp_path: Path
) -> None:
    served_as_aws_does(sagemaker_endpoint, tmp_path)


@NO_FUSE
def test_aws_toolkit_hands_the_script_each_channels_share_mode_and_distribution(
    toolkit_endpoint: ControlPlane, tmp_path: Path
) -> None:
    """AWS's own toolkit (4.8.3 and 5.1.4, each host in its network namespace) is the judge of what a script gets."""
    served_as_aws_does(toolkit_endpoint, tmp_path)


def served_as_aws_does(sagemaker_endpoint: ControlPlane, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="datasets")
    for i in range(OBJECTS):
        s3.put_object(Bucket="datasets", Key=f"ds/part-{i:03d}.bin", Body=bytes([i]) * 100_000)
    s3.put_object(Bucket="datasets", Key="eval/all.bin", Body=b"e")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text(textwrap.dedent(READ_ONE))
    (tmp_path / "job.yaml").write_text(SPEC)
    home = tmp_path / "home"
    before = len(sagemaker_endpoint.requests)
    ran = cloudtrain(
        "submit", str(tmp_path / "job.yaml"), "--backend", "sagemaker", "--wait", "--json", home=home, env=aws_env()
    )
    assert ran.code == 0, ran.err
    job = ran.json()["job"]["name"]

    said: dict[tuple[str, str], object] = {}
    for host in ("algo-1", "algo-2"):  # each host's output as the instance wrote it (before CloudWatch's lag)
        stream = sagemaker_endpoint.home / "jobs" / job / "logs" / f"{host}.jsonl"
        for line in stream.read_text().splitlines():
            if m := re.search(r"\b(files|config|eval) (algo-\d) (.*)$", json.loads(line)["m"]):
                said[(m[1], m[2])] = json.loads(m[3])
    assert {("files", "algo-1"), ("files", "algo-2")} <= said.keys(), (sorted(said), stream.read_text()[-3000:])
    assert said[("files", "algo-1")] == [f"part-{i:03d}.bin" for i in range(0, OBJECTS, 2)]
    assert said[("files", "algo-2")] == [f"part-{i:03d}.bin" for i in range(1, OBJECTS, 2)]
    assert said[("eval", "algo-1")] == said[("eval", "algo-2")] == ["all.bin"]  # replicated: every host
    assert said[("config", "algo-2")] == {
        "TrainingInputMode": "FastFile",
        "S3DistributionType": "ShardedByS3Key",
        "RecordWrapperType": "None",
    }
    # At the plane's S3 front: the channel listed, and of its objects only the two that were read fetched.
    reads = [r.path.split("?")[0] for r in sagemaker_endpoint.requests[before:] if r.operation == "GetObject"]
    assert sorted(p for p in reads if p.startswith("/datasets/ds/")) == [
        "/datasets/ds/part-000.bin",
        "/datasets/ds/part-001.bin",
    ]

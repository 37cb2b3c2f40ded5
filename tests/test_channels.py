"""Channel options: the spec's short and long forms, refused as SageMaker refuses them (one line naming file,
line and field); the Channel fields the sagemaker SDK sends for the same options; S3 channels on this machine
(a download cache keyed by ETag, ShardedByS3Key shares, FastFile's lazy reads counted at the S3 front)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import boto3
import pytest

from cloudtrain.channels.fields import container_channel, sagemaker_channel
from cloudtrain.channels.s3cache import ChannelCache, host_share, list_channel, write_manifest
from cloudtrain.errors import SpecError
from cloudtrain.spec.load import load_spec
from cloudtrain.spec.models import ChannelSpec, spec_digest
from tests.faultproxy import FaultProxy
from tests.sdk import SDK_MISSING, SDK_PYTHON, run_sdk

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name: demo
code:
  source_dir: code
  entry_point: train.py
"""
VPC = "aws:\n  vpc: {subnets: [subnet-0123abcd], security_group_ids: [sg-0123abcd]}\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print('training')\n")
    (tmp_path / "data" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spec_file(project: Path, data: str, extra: str = "") -> Path:
    path = project / "job.yaml"
    path.write_text(SPEC + "data:\n" + textwrap.indent(textwrap.dedent(data), "  ") + extra)
    return path


# --------------------------------------------------------------------------------------------- the spec


def test_the_short_form_is_a_channel_with_every_default_and_digests_as_before(project: Path) -> None:
    spec = load_spec(spec_file(project, "train: data/train\neval: s3://bucket/eval\n"))
    assert spec.data["train"] == ChannelSpec(uri=str(project / "data" / "train"))
    assert spec.data["eval"].mode == "file" and spec.data["eval"].distribution == "replicated"
    # dumped (and digested) as it was written before channels had options: job records and idempotent
    # submits of existing specs see the same digest
    dumped = spec.model_dump(mode="json")["data"]
    assert dumped == {"train": str(project / "data" / "train"), "eval": "s3://bucket/eval"}
    assert spec_digest(spec) == spec_digest(
        load_spec(spec_file(project, "train: {uri: data/train}\neval: s3://bucket/eval\n"))
    )


def test_the_long_form(project: Path) -> None:
    spec = load_spec(
        spec_file(
            project,
            """\
            train: {uri: s3://bucket/train, mode: fastfile, distribution: sharded, content_type: application/x-npz}
            stream: {uri: s3://bucket/stream, mode: pipe, compression: gzip}
            lustre: {file_system: {type: fsx_lustre, id: fs-0123456789abcdef0, path: /fsx/digits}}
            """,
            VPC,
        )
    )
    assert spec.model_dump(mode="json")["data"]["train"] == {
        "uri": "s3://bucket/train",
        "file_system": None,
        "mode": "fastfile",
        "distribution": "sharded",
        "compression": "none",
        "content_type": "application/x-npz",
    }
    assert spec.data["lustre"].file_system is not None and spec.data["lustre"].file_system.access == "ro"


@pytest.mark.parametrize(
    ("data", "extra", "line", "field", "message"),
    [
        ("train: {uri: s3://bkt/x, mode: fast}\n", "", 6, "data.train.mode", "did you mean 'fastfile'?"),
        ("train: {uri: s3://bkt/x, compression: gzip}\n", "", 6, "data.train.compression", "for pipe mode only"),
        (
            "train: {uri: s3://bkt/x, mode: fastfile, compression: gzip}\n",
            "",
            6,
            "data.train.compression",
            "ignores it in fastfile mode",
        ),
        ("train: {uri: s3://bkt/x, distribution: shared}\n", "", 6, "data.train.distribution", "'sharded'"),
        ("train: {mode: fastfile}\n", "", 6, "data.train", "give exactly one of uri or file_system"),
        (
            "train: {uri: s3://bkt/x, file_system: {type: efs, id: fs-12345678, path: /x}}\n",
            VPC,
            6,
            "data.train",
            "give exactly one of uri or file_system",
        ),
        (
            "fs: {file_system: {type: efs, id: fs-12345678, path: /x}}\n",
            "",
            6,
            "data.fs.file_system",
            "EFS is reached only from inside a VPC: set aws.vpc",
        ),
        (
            "fs: {file_system: {type: fsx_lustre, id: fs-12345678, path: /fsx}, mode: fastfile}\n",
            VPC,
            6,
            "data.fs.mode",
            "FSx for Lustre channels are mounted in file mode only",
        ),
        (
            "fs: {file_system: {type: efs, id: fs-12345678, path: /x}, distribution: sharded}\n",
            VPC,
            6,
            "data.fs.distribution",
            "mounted whole on every instance",
        ),
        ("fs: {file_system: {type: efs, id: fs-1234, path: /x}}\n", VPC, 6, "data.fs.file_system.id", "fs-"),
        ("fs: {file_system: {type: efs, id: fs-12345678, path: x}}\n", VPC, 6, "data.fs.file_system.path", "absolute"),
        ("fs: {file_system: {type: nfs, id: fs-12345678, path: /x}}\n", VPC, 6, "data.fs.file_system.type", "efs"),
        ("train: {uri: s3://bkt/x, content_type: " + "x" * 257 + "}\n", "", 6, "data.train.content_type", "256"),
        ("train: {uri: s3:/bkt/x, mode: fastfile}\n", "", 6, "data.train.uri", "is not an S3 URI"),
        ("train: {uri: data/trian}\n", "", 6, "data.train.uri", "'data/trian' does not exist"),
        ("".join(f"c{i}: s3://bkt/{i}\n" for i in range(21)), "", 5, "data", "20"),
    ],
)
def test_channel_mistakes_are_one_line_naming_file_line_and_field(
    project: Path, data: str, extra: str, line: int, field: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(project, data, extra))
    e = info.value
    assert "\n" not in str(e) and "pydantic" not in str(e)
    assert (e.file.endswith("job.yaml"), e.line, e.field) == (True, line, field), str(e)
    assert message in e.message, str(e)


def test_validate_warns_where_the_script_shards_a_sharded_channel_again(project: Path) -> None:
    from cloudtrain.spec.lint import spec_warnings

    (project / "code" / "train.py").write_text(
        "options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA\n"
    )
    spec = load_spec(spec_file(project, "train: {uri: s3://bkt/train, distribution: sharded}\neval: s3://bkt/eval\n"))
    (warning,) = spec_warnings(spec)
    assert warning.startswith("data.train.distribution: sharded, but train.py sets AutoShardPolicy.DATA")
    replicated = load_spec(spec_file(project, "train: s3://bkt/train\n"))
    assert spec_warnings(replicated) == []


# ------------------------------------------------------------------------- the request, against the SDK's


SDK_CHANNELS = """
import json, sys
from sagemaker.inputs import FileSystemInput, TrainingInput
from sagemaker.job import _Job

inputs = {
    "train": TrainingInput("s3://bucket/train/", distribution="ShardedByS3Key", input_mode="FastFile"),
    "eval": TrainingInput("s3://bucket/eval/"),
    "stream": TrainingInput("s3://bucket/stream/", input_mode="Pipe", compression="Gzip", content_type="text/csv"),
    "lustre": FileSystemInput("fs-0123456789abcdef0", "FSxLustre", "/fsx/digits", "ro"),
    "efs": FileSystemInput("fs-89abcdef", "EFS", "/datasets", "rw"),
}
print(json.dumps(_Job._format_inputs_to_input_config(inputs)))
"""


def with_defaults(channel: dict[str, object]) -> dict[str, object]:
    """A channel with the values AWS gives the fields left out (as DescribeTrainingJob shows them)."""
    return {"CompressionType": "None", "RecordWrapperType": "None", **channel}


@pytest.mark.skipif(not SDK_PYTHON.exists(), reason=SDK_MISSING)
def test_channel_fields_match_what_the_sagemaker_sdk_sends(project: Path, tmp_path: Path) -> None:
    spec = load_spec(
        spec_file(
            project,
            """\
            train: {uri: s3://bucket/train/, mode: fastfile, distribution: sharded}
            eval: s3://bucket/eval/
            stream: {uri: s3://bucket/stream/, mode: pipe, compression: gzip, content_type: text/csv}
            lustre: {file_system: {type: fsx_lustre, id: fs-0123456789abcdef0, path: /fsx/digits}}
            efs: {file_system: {type: efs, id: fs-89abcdef, path: /datasets, access: rw}}
            """,
            VPC,
        )
    )
    theirs = run_sdk(SDK_CHANNELS, {}, tmp_path)
    ours = [sagemaker_channel(name, channel) for name, channel in spec.data.items()]
    assert [with_defaults(c) for c in ours] == [with_defaults(c) for c in theirs]


def test_the_containers_input_config_carries_mode_and_distribution() -> None:
    sharded = ChannelSpec(uri="s3://bkt/x", mode="fastfile", distribution="sharded", content_type="text/csv")
    assert container_channel(sharded) == {
        "ContentType": "text/csv",
        "TrainingInputMode": "FastFile",
        "S3DistributionType": "ShardedByS3Key",
        "RecordWrapperType": "None",
    }
    assert container_channel(ChannelSpec(uri="/data")) == {
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
    }


# ------------------------------------------------------------------------------ S3 channels on this machine


def put_dataset(s3: object, files: int, size: int, prefix: str = "ds/train") -> None:
    s3.create_bucket(Bucket="datasets")  # type: ignore[attr-defined]
    for i in range(files):
        s3.put_object(Bucket="datasets", Key=f"{prefix}/part-{i:03d}.bin", Body=os.urandom(size))  # type: ignore[attr-defined]


def test_sharded_by_s3_key_gives_each_host_about_1_over_n_of_the_objects_each_once(aws_endpoint: str) -> None:
    s3 = boto3.client("s3")
    put_dataset(s3, files=11, size=10)
    objects = list_channel(s3, "s3://datasets/ds/train")
    shares = [host_share(objects, i, 3, "sharded") for i in range(3)]
    assert sorted(len(s) for s in shares) == [3, 4, 4]
    assert sorted(o.key for share in shares for o in share) == sorted(o.key for o in objects)
    assert host_share(objects, 1, 3, "replicated") == objects


def test_file_mode_downloads_once_and_fetches_a_changed_object_again(aws_endpoint: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    put_dataset(s3, files=4, size=1000)
    cache = ChannelCache(tmp_path / "cache")
    objects = list_channel(s3, "s3://datasets/ds/train")
    assert cache.fetch(s3, objects) == 4000
    cache.link_into(objects, tmp_path / "job1")
    assert cache.fetch(s3, list_channel(s3, "s3://datasets/ds/train")) == 0  # the second job reuses it
    s3.put_object(Bucket="datasets", Key="ds/train/part-002.bin", Body=b"changed")
    again = list_channel(s3, "s3://datasets/ds/train")
    assert cache.fetch(s3, again) == len(b"changed")
    cache.link_into(again, tmp_path / "job2")
    assert (tmp_path / "job2" / "part-002.bin").read_bytes() == b"changed"
    assert (tmp_path / "job1" / "part-002.bin").stat().st_size == 1000  # a running job's files stay as they were


def test_fastfile_fetches_only_what_the_script_reads(aws_endpoint: str, tmp_path: Path) -> None:
    from cloudtrain.channels import lazyfs

    if reason := lazyfs.unavailable():
        pytest.skip(f"FastFile needs FUSE here: {reason}")
    s3 = boto3.client("s3")
    put_dataset(s3, files=100, size=10_000)
    objects = list_channel(s3, "s3://datasets/ds/train")
    cache = ChannelCache(tmp_path / "cache")
    write_manifest(tmp_path / "manifest.json", objects, cache)
    mount = tmp_path / "train"
    with FaultProxy(aws_endpoint) as front:  # the S3 front that counts what is read
        env = {**os.environ, "AWS_ENDPOINT_URL": front.url}
        with lazyfs.mounted(tmp_path / "manifest.json", mount, tmp_path / "lazyfs.log", env):
            assert len(os.listdir(mount)) == 100  # listed at once, nothing fetched
            assert front.seen("GetObject") == []
            assert (mount / "part-042.bin").read_bytes() == s3.get_object(
                Bucket="datasets", Key="ds/train/part-042.bin"
            )["Body"].read()
            assert (mount / "part-042.bin").stat().st_size == 10_000
        fetched = front.seen("GetObject")
    assert {s.target.split("?")[0] for s in fetched} == {"/datasets/ds/train/part-042.bin"}  # 1 of 100 files
    assert not os.path.ismount(mount)


def test_each_host_gets_its_share_of_a_sharded_channel_and_all_of_a_replicated_one(
    aws_endpoint: str, tmp_path: Path
) -> None:
    from cloudtrain.channels.hosts import lay_out_channels

    s3 = boto3.client("s3")
    put_dataset(s3, files=5, size=100)
    local = tmp_path / "local"
    local.mkdir()
    for i in range(4):
        (local / f"shard-{i}.npz").write_bytes(b"x" * i)
    channels = {
        "train": ChannelSpec(uri="s3://datasets/ds/train", distribution="sharded"),
        "eval": ChannelSpec(uri="s3://datasets/ds/train"),
        "extra": ChannelSpec(uri=str(local), distribution="sharded"),
    }
    hosts = [tmp_path / "hosts" / "algo-1", tmp_path / "hosts" / "algo-2"]
    cache = ChannelCache(tmp_path / "cache")
    mounts = lay_out_channels(channels, hosts, cache=cache, manifests=tmp_path, s3=lambda: s3)
    assert mounts == []

    def names(host: Path, channel: str) -> list[str]:
        return sorted(p.name for p in (host / "input" / "data" / channel).iterdir())

    assert names(hosts[0], "train") == ["part-000.bin", "part-002.bin", "part-004.bin"]
    assert names(hosts[1], "train") == ["part-001.bin", "part-003.bin"]
    assert names(hosts[0], "eval") == names(hosts[1], "eval") == [f"part-{i:03d}.bin" for i in range(5)]
    assert names(hosts[0], "extra") == ["shard-0.npz", "shard-2.npz"]
    assert names(hosts[1], "extra") == ["shard-1.npz", "shard-3.npz"]
    # 5 objects fetched once for both channels and both hosts
    assert len([p for p in cache.root.rglob("*") if p.is_file()]) == 5


def test_a_request_channel_reads_back_as_the_options_that_made_it() -> None:
    from cloudtrain.channels.fields import from_sagemaker_channel
    from cloudtrain.spec.models import FileSystemSpec

    for channel in (
        ChannelSpec(uri="s3://bkt/train/", mode="fastfile", distribution="sharded", content_type="text/csv"),
        ChannelSpec(uri="s3://bkt/stream/", mode="pipe", compression="gzip"),
        ChannelSpec(file_system=FileSystemSpec(type="efs", id="fs-12345678", path="/x", access="rw")),
    ):
        assert from_sagemaker_channel(sagemaker_channel("c", channel)) == channel


@pytest.mark.skipif(not SDK_PYTHON.exists(), reason=SDK_MISSING)
def test_the_dry_run_request_carries_the_channels_the_sdk_sends_and_what_each_instance_copies(
    aws_endpoint: str, project: Path, tmp_path: Path
) -> None:
    from tests.clirun import cloudtrain
    from tests.loopback_aws import ROLE_ARN, aws_env

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bucket")
    for channel, count in (("train", 4), ("eval", 2)):
        for i in range(count):
            s3.put_object(Bucket="bucket", Key=f"{channel}/part-{i}", Body=b"x" * 1_000_000)
    job = spec_file(
        project,
        """\
        train: {uri: s3://bucket/train/, mode: fastfile, distribution: sharded}
        eval: s3://bucket/eval/
        stream: {uri: s3://bucket/stream/, mode: pipe, compression: gzip, content_type: text/csv}
        lustre: {file_system: {type: fsx_lustre, id: fs-0123456789abcdef0, path: /fsx/digits}}
        efs: {file_system: {type: efs, id: fs-89abcdef, path: /datasets, access: rw}}
        """,
        VPC + "resources: {instance_count: 2}\n",
    )
    env = {**aws_env(aws_endpoint, tmp_path / "no-aws"), "CLOUDTRAIN_ROLE_ARN": ROLE_ARN}
    ran = cloudtrain("submit", str(job), "--backend", "sagemaker", "--dry-run", "--json", home=tmp_path / "h", env=env)
    assert ran.code == 0, ran.err
    plan = ran.json()["plan"]
    request = plan["request"]
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "File"  # as the SDK leaves it
    theirs = run_sdk(SDK_CHANNELS, {}, tmp_path)
    assert [with_defaults(c) for c in request["InputDataConfig"]] == [with_defaults(c) for c in theirs]
    copies = {c["channel"]: c for c in plan["data_copies"]}
    assert copies["eval"]["bytes_per_instance"] == 2_000_000  # file mode, replicated: all of it on each
    assert copies["train"]["bytes_per_instance"] == 0  # fastfile: nothing before the start
    assert any(n.startswith("data.eval (file, replicated): each instance copies up to 2.0 MB") for n in plan["notes"])

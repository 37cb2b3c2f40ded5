"""S3 datasets on the local backend, as a new user tries them: the digits job with s3:// channels trains on this
machine (downloaded once, then from the cache), and with `mode: fastfile, distribution: sharded` on 2 workers
each host reads only its share, lazily, and every example is used once per epoch. Every S3 request goes through
a front that counts them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import pytest

from cloudtrain.channels import lazyfs
from tests.clirun import REPO, cloudtrain
from tests.faultproxy import FaultProxy
from tests.loopback_aws import ROLE_ARN, aws_env

pytestmark = pytest.mark.slow
BUCKET = "datasets"
TRAIN_SHARDS = 6

SPEC = """\
name: digits-s3
backend: local
code: {{source_dir: {code}, entry_point: train.py}}
resources: {{instance_count: {hosts}}}
distribution: {{strategy: multi_worker_mirrored}}
data:
{data}
hyperparameters: {{epochs: {epochs}, batch_size: 64, learning_rate: 0.002}}
"""


@pytest.fixture
def digits_on_s3(aws_endpoint: str, tmp_path: Path) -> int:
    """The digits channels on the loopback S3: train as TRAIN_SHARDS .npz objects, eval as one; the train size."""
    out = tmp_path / "digits"
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(out)], check=True)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    with np.load(out / "train" / "digits.npz") as train:
        x, y = train["x"], train["y"]
    for i, (xs, ys) in enumerate(zip(np.array_split(x, TRAIN_SHARDS), np.array_split(y, TRAIN_SHARDS), strict=True)):
        body = io.BytesIO()
        np.savez(body, x=xs, y=ys)
        s3.put_object(Bucket=BUCKET, Key=f"digits/train/digits-{i:02d}.npz", Body=body.getvalue())
    s3.upload_file(str(out / "eval" / "digits.npz"), BUCKET, "digits/eval/digits.npz")
    return len(y)


def spec(tmp_path: Path, data: str, hosts: int = 2, epochs: int = 6) -> Path:
    path = tmp_path / "job.yaml"
    code = REPO / "job_specs" / "digits"
    path.write_text(SPEC.format(code=code, hosts=hosts, data=data, epochs=epochs))
    return path


def env_through(front: FaultProxy, tmp_path: Path) -> dict[str, str]:
    return {**aws_env(front.url, tmp_path / "no-aws"), "CLOUDTRAIN_ROLE_ARN": ROLE_ARN}


def history(home: Path, job: str) -> list[dict[str, float]]:
    return json.loads((home / "jobs" / job / "hosts" / "algo-1" / "checkpoints" / "history.json").read_text())


def test_a_digits_job_on_s3_channels_trains_locally_and_the_next_one_reads_the_cache(
    aws_endpoint: str, digits_on_s3: int, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    job_spec = spec(tmp_path, "  train: s3://datasets/digits/train\n  eval: s3://datasets/digits/eval\n")
    with FaultProxy(aws_endpoint) as front:  # the S3 front, counting every request
        env = env_through(front, tmp_path)
        first = cloudtrain("submit", str(job_spec), "--wait", "--json", home=home, env=env)
        assert first.code == 0, first.err
        job = json.loads(first.out)["job"]["name"]
        got = Counter(s.target.split("?")[0] for s in front.seen("GetObject"))
        assert set(got) == {f"/datasets/digits/train/digits-{i:02d}.npz" for i in range(TRAIN_SHARDS)} | {
            "/datasets/digits/eval/digits.npz"
        }
        epochs = history(home, job)
        assert [h["examples"] for h in epochs] == [digits_on_s3] * 6
        assert epochs[-1]["val_accuracy"] >= 0.85
        assert cloudtrain("status", job, "--json", home=home, env=env).json()["status"] == "Completed"

        front.log.clear()
        second = cloudtrain("submit", str(job_spec), "--wait", "--json", home=home, env=env)
        assert second.code == 0, second.err
        assert front.seen("GetObject") == []  # every object came from the cache
        assert {s.operation for s in front.log} <= {"ListObjects", "HeadBucket", "GetBucketLocation"}


@pytest.mark.skipif(bool(lazyfs.unavailable()), reason=f"FastFile needs FUSE: {lazyfs.unavailable()}")
def test_fastfile_sharded_on_two_workers_each_host_reads_its_share_once_per_epoch(
    aws_endpoint: str, digits_on_s3: int, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    data = (
        "  train: {uri: s3://datasets/digits/train, mode: fastfile, distribution: sharded}\n"
        "  eval: {uri: s3://datasets/digits/eval, mode: fastfile}\n"
    )
    job_spec = spec(tmp_path, data)
    with FaultProxy(aws_endpoint) as front:
        env = env_through(front, tmp_path)
        ran = cloudtrain("submit", str(job_spec), "--wait", "--json", home=home, env=env)
        assert ran.code == 0, ran.err
        job = json.loads(ran.out)["job"]["name"]
        fetched = Counter(s.target.split("?")[0] for s in front.seen("GetObject"))
    job_dir = home / "jobs" / job
    shares = {
        host: [o["name"] for o in json.loads((job_dir / "channels" / f"{host}-train.json").read_text())["objects"]]
        for host in ("algo-1", "algo-2")
    }
    assert shares == {
        "algo-1": ["digits-00.npz", "digits-02.npz", "digits-04.npz"],
        "algo-2": ["digits-01.npz", "digits-03.npz", "digits-05.npz"],
    }
    # Lazily: nothing before the script read it, and each shard fetched once, by the one host that has it
    # (a GET per part of an object, one part each here); eval, replicated, is fetched once into the shared cache.
    assert set(fetched) == {f"/datasets/digits/train/digits-{i:02d}.npz" for i in range(TRAIN_SHARDS)} | {
        "/datasets/digits/eval/digits.npz"
    }
    assert all(n == 1 for n in fetched.values()), fetched
    # Each host trained on its share only and every example was used exactly once per epoch.
    assert [h["examples"] for h in history(home, job)] == [digits_on_s3] * 6
    config = json.loads((job_dir / "hosts" / "algo-2" / "input" / "config" / "inputdataconfig.json").read_text())
    assert config["train"] == {
        "TrainingInputMode": "FastFile",
        "S3DistributionType": "ShardedByS3Key",
        "RecordWrapperType": "None",
    }
    assert not any(lazyfs.mounted_here(job_dir / "hosts" / h / "input" / "data" / "train") for h in shares)

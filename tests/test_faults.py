"""Faults that must lose nothing: dropped connections, throttling, a full disk, a folder that cannot be written.

Every test runs the real `cloudtrain` command in a subprocess. AWS is moto's server on loopback, reached
through `tests/faultproxy.py`, which cuts uploads and downloads mid-body and throttles on a schedule; what
arrived is then read straight from moto (not through the proxy) and compared byte for byte.

Destination faults: a 1 MiB tmpfs for "disk full" (where this process may mount one; else skipped) and
RLIMIT_FSIZE for "file too large" (always), a folder without write permission (root ignores modes, so the
command runs without CAP_DAC_OVERRIDE), and a destination under a regular file. Each must end in one line
on stderr with exit code 2 (the destination the user gave cannot take the files: bad input, not a backend
that cannot be reached, and not worth retrying as is), with what was at the destination before untouched
and no `*.part` file or half-extracted folder left behind.

And (`--slow`) the digits example on the local backend with a random worker SIGKILLed at a random moment,
ten times, each run resumed from the one before: no checkpointed epoch is lost and the final model is whole.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import hashlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from cloudtrain.api import fetched_files
from cloudtrain.transfer.code import tarball_digest
from cloudtrain.transfer.tarballs import bytes_tarball
from tests.clirun import REPO, Result, cloudtrain
from tests.faultproxy import Fault, FaultProxy
from tests.test_cli import TINY, write_job

if TYPE_CHECKING:
    from tests.sagemaker_control_plane import ControlPlane

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "ct-faults"
MIB = 1 << 20


# --- helpers ---------------------------------------------------------------------------------------------


def aws_env(endpoint: str) -> dict[str, str]:
    """The AWS settings the `aws_endpoint` fixture made, pointed at `endpoint` (the proxy or moto itself)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=endpoint, CLOUDTRAIN_ROLE_ARN=ROLE)
    return env


def run_cli(
    *args: str, home: Path, env: dict[str, str] | None = None, preexec: Callable[[], None] | None = None
) -> Result:
    """`cloudtrain ARGS` as `tests.clirun.cloudtrain` runs it, with a hook run in the child before exec."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
    base.update({"CLOUDTRAIN_HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **(env or {})})
    proc = subprocess.run(
        [sys.executable, "-m", "cloudtrain", *args],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=preexec,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (symlinks as `-> target`)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            out[rel] = sha256(path.read_bytes())
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary or half-written things under root: `*.part` files or folders, `.*.old` folders."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.name.endswith(".part") or p.name.endswith(".old")
    )


def one_line_error(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


COMPRESSIBLE = b"\1" * MIB  # a MiB that compresses a thousandfold and, unlike zeros, is not extracted as a hole


def weights(mib: int, seed: int) -> bytes:
    """Incompressible bytes (a model's float weights compress poorly), the same for the same seed."""
    return random.Random(seed).randbytes(mib * MIB)


# --- SageMaker: a project to submit, a finished job to fetch ---------------------------------------------


def sagemaker_project(root: Path) -> Path:
    """A project whose data channel is multipart-sized (24 MiB file + a 3 MiB one + small files)."""
    code = root / "code"
    code.mkdir(parents=True)
    (code / "train.py").write_text("print('training')\n")
    (code / "requirements.txt").write_text("numpy\n")
    train = root / "data" / "train"
    (train / "shards").mkdir(parents=True)
    (train / "big.bin").write_bytes(weights(24, seed=1))
    (train / "shards" / "part-1.bin").write_bytes(weights(3, seed=2))
    (train / "labels.csv").write_text("".join(f"{i},{i % 10}\n" for i in range(1000)))
    spec = root / "job.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            name: faults
            code: {source_dir: code, entry_point: train.py, requirements: requirements.txt}
            resources: {instance_type: ml.m5.xlarge, instance_count: 2}
            data: {train: data/train}
            aws: {region: us-east-1}
            """
        )
    )
    return spec


def finished_sagemaker_job(
    name: str, model_mib: int = 20, compressible: bool = False, checkpoint_mib: int = 2
) -> dict[str, bytes]:
    """A training job in moto whose model (incompressible, 8 MiB-part multipart), output and checkpoints are in S3.

    Returns what was uploaded: key -> bytes.
    """
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET)
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": "123.dkr.ecr.us-east-1.amazonaws.com/x:1",
            "TrainingInputMode": "File",
        },
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/runs"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        CheckpointConfig={"S3Uri": f"s3://{BUCKET}/runs/{name}/checkpoints"},
    )
    objects = {
        f"runs/{name}/output/model.tar.gz": bytes_tarball(
            {
                "model.keras": COMPRESSIBLE * model_mib if compressible else weights(model_mib, seed=3),
                "1/saved_model.pb": b"pb" * 1000,
                "1/variables/v.index": b"i",
            }
        ),
        f"runs/{name}/output/output.tar.gz": bytes_tarball({"eval_report.json": b'{"accuracy": 0.97}'}),
        f"runs/{name}/checkpoints/checkpoint": b'model_checkpoint_path: "ckpt-3"\n',
        f"runs/{name}/checkpoints/ckpt-3.data-00000-of-00001": weights(checkpoint_mib, seed=4),
    }
    multipart = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    for key, body in objects.items():
        s3.upload_fileobj(io.BytesIO(body), BUCKET, key, Config=multipart)
    return objects


# --- uploads and downloads through an unreliable network --------------------------------------------------


def test_submit_uploads_everything_through_dropped_connections_and_throttling(
    aws_endpoint: str, tmp_path: Path
) -> None:
    spec = sagemaker_project(tmp_path)
    faults = [  # (botocore's adaptive retries slow down after each throttle: a few make the point)
        Fault("throttle", service="sts"),  # the reachability probe ...
        Fault("drop_response", service="sts", after=50),  # ... and its answer cut short (invalid XML)
        Fault("throttle", service="s3", operation="HeadObject"),  # "is this code uploaded already?"
        Fault("drop_request", service="s3", operation="PutObject", target="/code/", after=4096),
        Fault("drop_request", service="s3", operation="UploadPart", after=MIB, times=2),
        Fault("throttle", service="s3", operation="UploadPart"),
        Fault("drop_request", service="s3", operation="PutObject", target=r"/data/[0-9a-f]+\.json", after=100),
        Fault("throttle", service="sagemaker", operation="CreateTrainingJob"),
        # Cut short with a FIN: botocore takes it for a whole answer (cloudtrain has to check its length).
        # (A submit's one DescribeTrainingJob: "is the name free?")
        Fault("drop_response", service="sagemaker", operation="DescribeTrainingJob", after=40),
    ]
    with FaultProxy(aws_endpoint, faults) as proxy:
        submitted = cloudtrain(
            "submit", str(spec), "--backend", "sagemaker", "--json", home=tmp_path / "home", env=aws_env(proxy.url)
        )
    assert submitted.code == 0, submitted.err
    assert not proxy.unfired(), [str(f) for f in proxy.unfired()]
    job = submitted.json()["job"]["name"]

    s3 = boto3.client("s3")  # straight to moto, not through the proxy
    request = boto3.client("sagemaker").describe_training_job(TrainingJobName=job)
    code_uri = json.loads(request["HyperParameters"]["sagemaker_submit_directory"])
    bucket, code_key = code_uri.removeprefix("s3://").split("/", 1)
    code = s3.get_object(Bucket=bucket, Key=code_key)["Body"].read()
    (tmp_path / "sourcedir.tar.gz").write_bytes(code)
    assert tarball_digest(tmp_path / "sourcedir.tar.gz") == code_key.split("/")[-2], "named by the digest of its files"

    channel = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    prefix = channel.removeprefix(f"s3://{bucket}/")
    local = tree(tmp_path / "data" / "train")
    remote = {
        item["Key"].removeprefix(prefix): sha256(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    }
    assert remote == local, "every file of the channel arrived whole"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix.rstrip("/") + ".json")["Body"].read())
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == local
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "no multipart upload left half-done"
    assert len(proxy.seen("UploadPart")) > 2, "the 24 MiB file went up in parts"


def test_submit_whose_create_answer_is_lost_reports_the_job_it_created(
    sagemaker_endpoint: ControlPlane, tmp_path: Path
) -> None:
    """CreateTrainingJob reached SageMaker, its answer did not: botocore sends it again and SageMaker (the control
    plane stand-in, which keeps names unique as AWS does) answers ResourceInUse. That job is this submit's own."""
    sagemaker_endpoint.run_jobs = False
    spec = write_job(tmp_path, TINY)
    lost = Fault("drop_response", service="sagemaker", operation="CreateTrainingJob", after=5)
    with FaultProxy(sagemaker_endpoint.url, [lost]) as proxy:
        submitted = cloudtrain(
            "submit", str(spec), "--backend", "sagemaker", "--json", home=tmp_path / "home", env=aws_env(proxy.url)
        )
    assert lost.hits == 1 and len(proxy.seen("CreateTrainingJob")) == 2, "sent twice"
    assert submitted.code == 0, submitted.err
    assert submitted.json()["created"] is True
    jobs = boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in jobs] == [submitted.json()["job"]["name"]], "one job, the one reported"


def test_fetch_model_downloads_everything_through_dropped_connections_and_throttling(
    aws_endpoint: str, tmp_path: Path
) -> None:
    objects = finished_sagemaker_job("fetch-me")
    dest = tmp_path / "artifacts"
    (dest / "model").mkdir(parents=True)
    (dest / "model" / "stale.txt").write_text("from an earlier fetch")
    fetched_files(dest, write=True)  # as an earlier fetch-model records what it wrote
    faults = [
        Fault("throttle", service="sagemaker", operation="DescribeTrainingJob"),
        Fault("throttle", service="s3", operation="HeadObject"),
        Fault("drop_response", service="s3", operation="GetObject", target="model.tar.gz", after=MIB, times=3),
        Fault("drop_response", service="s3", operation="GetObject", target="model.tar.gz", after=0),
        Fault("throttle", service="s3", operation="GetObject", target="model.tar.gz"),
        Fault("drop_response", service="s3", operation="GetObject", target="output.tar.gz", after=10),
        Fault("drop_response", service="s3", operation="GetObject", target="ckpt-3", after=MIB + 1),
        Fault("drop_response", service="s3", operation="ListObjects", after=100),
    ]
    with FaultProxy(aws_endpoint, faults) as proxy:
        fetched = cloudtrain(
            "fetch-model",
            "fetch-me",
            "--to",
            str(dest),
            "--backend",
            "sagemaker",
            "--json",
            home=tmp_path / "home",
            env=aws_env(proxy.url),
        )
    assert fetched.code == 0, fetched.err
    assert not proxy.unfired(), [str(f) for f in proxy.unfired()]
    assert len(proxy.seen("GetObject")) > 3 + 8, "the 20 MiB model came in ranged parts, some twice"

    model = objects["runs/fetch-me/output/model.tar.gz"]
    assert sha256((dest / "model.tar.gz").read_bytes()) == sha256(model)
    assert (dest / "model" / "model.keras").read_bytes() == weights(20, seed=3)
    assert sorted(tree(dest / "model")) == ["1/saved_model.pb", "1/variables/v.index", "model.keras"], "replaced whole"
    assert json.loads((dest / "output" / "eval_report.json").read_text()) == {"accuracy": 0.97}
    assert tree(dest / "checkpoints") == {
        "checkpoint": sha256(objects["runs/fetch-me/checkpoints/checkpoint"]),
        "ckpt-3.data-00000-of-00001": sha256(weights(2, seed=4)),
    }
    assert leftovers(dest) == []


def test_fetch_model_gives_up_on_a_part_that_keeps_failing_and_leaves_the_old_model(
    aws_endpoint: str, tmp_path: Path
) -> None:
    finished_sagemaker_job("flaky")
    dest = tmp_path / "artifacts"
    (dest / "model").mkdir(parents=True)
    (dest / "model" / "model.keras").write_bytes(b"the previous model")
    (dest / "model.tar.gz").write_bytes(b"the previous tarball")
    fetched_files(dest, write=True)  # as fetch-model records what it wrote
    before = tree(dest)
    always = Fault("drop_response", service="s3", operation="GetObject", target="model.tar.gz", after=MIB, times=10**6)
    with FaultProxy(aws_endpoint, [always]) as proxy:
        started = time.monotonic()
        fetched = cloudtrain(
            "fetch-model",
            "flaky",
            "--to",
            str(dest),
            "--backend",
            "sagemaker",
            home=tmp_path / "home",
            env=aws_env(proxy.url),
        )
        elapsed = time.monotonic() - started
    assert fetched.code == 3, fetched.err  # the backend could not be reached reliably: try again later
    line = one_line_error(fetched)
    assert "model.tar.gz" in line and "connection" in line, line
    assert elapsed < 60, "bounded attempts, bounded backoff"
    assert always.hits >= 3 * 2, "each part was retried before giving up"
    assert tree(dest) == before and leftovers(dest) == []


# --- S3's own checksums -------------------------------------------------------------------------------------

CRT_PATH = REPO / ".venv-crt"  # awscrt alone (scripts/setup --with-sdk): cloudtrain as `cloudtrain[crt]` runs


@functools.cache
def crc64nvme(data: bytes) -> int:
    """CRC-64/NVME, bit by bit from its definition (reflected, poly 0x9A6C9329AC4BC9B5): the test's own oracle."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x9A6C9329AC4BC9B5 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def test_the_crc64nvme_oracle_gives_the_standard_check_value() -> None:
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888


def model_with_only_s3s_default_checksum(name: str) -> tuple[bytes, str]:
    """A finished job whose model.tar.gz was uploaded in parts without a checksum, as SageMaker's uploader may.

    Its ETag is of the parts (not an MD5 of the file). Real S3 keeps a full-object CRC64NVME of it (its
    default since December 2024); moto cannot compute one without awscrt, so the fault proxy adds the headers
    S3 would send. Returns the model and its base64 CRC64NVME.
    """
    objects = finished_sagemaker_job(name, model_mib=6)
    key = f"runs/{name}/output/model.tar.gz"
    model = objects[key]
    plain = boto3.client("s3", config=Config(request_checksum_calculation="when_required"))
    parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    plain.upload_fileobj(io.BytesIO(model), BUCKET, key, Config=parts)
    head = plain.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-2"'), head["ETag"]
    assert not [k for k in head if k.startswith("Checksum")], "moto keeps no checksum of its own here"
    return model, base64.b64encode(crc64nvme(model).to_bytes(8, "big")).decode()


def s3_reports_crc64nvme(value: str) -> Fault:
    headers = {"x-amz-checksum-crc64nvme": value, "x-amz-checksum-type": "FULL_OBJECT"}
    return Fault("add_headers", service="s3", operation="HeadObject", target="model.tar.gz", headers=headers)


def fetch(name: str, dest: Path, proxy: FaultProxy, home: Path, *, crt: bool) -> Result:
    env = aws_env(proxy.url)
    if crt:
        env["PYTHONPATH"] = str(CRT_PATH)
    return cloudtrain("fetch-model", name, "--to", str(dest), "--backend", "sagemaker", "--json", home=home, env=env)


def test_fetch_model_without_awscrt_says_the_crc64nvme_went_unchecked(aws_endpoint: str, tmp_path: Path) -> None:
    model, crc = model_with_only_s3s_default_checksum("plain")
    with FaultProxy(aws_endpoint, [s3_reports_crc64nvme(crc)]) as proxy:
        fetched = fetch("plain", tmp_path / "artifacts", proxy, tmp_path / "home", crt=False)
    assert fetched.code == 0, fetched.err
    assert fetched.json()["checked"] == {
        "model.tar.gz": "size only (S3's CRC64NVME needs awscrt: pip install 'cloudtrain[crt]')",
        "output.tar.gz": "CRC32",  # botocore's default for an upload: S3 keeps it
    }
    assert (tmp_path / "artifacts" / "model.tar.gz").read_bytes() == model


@pytest.mark.skipif(not CRT_PATH.is_dir(), reason="no .venv-crt (scripts/setup --with-sdk makes it)")
def test_fetch_model_with_awscrt_checks_s3s_crc64nvme(aws_endpoint: str, tmp_path: Path) -> None:
    model, crc = model_with_only_s3s_default_checksum("checked")
    with FaultProxy(aws_endpoint, [s3_reports_crc64nvme(crc)]) as proxy:
        fetched = fetch("checked", tmp_path / "artifacts", proxy, tmp_path / "home", crt=True)
    assert fetched.code == 0, fetched.err
    assert fetched.json()["checked"] == {"model.tar.gz": "CRC64NVME", "output.tar.gz": "CRC32"}
    assert (tmp_path / "artifacts" / "model.tar.gz").read_bytes() == model


@pytest.mark.skipif(not CRT_PATH.is_dir(), reason="no .venv-crt (scripts/setup --with-sdk makes it)")
def test_fetch_model_refuses_a_model_whose_crc64nvme_differs_and_keeps_the_old_one(
    aws_endpoint: str, tmp_path: Path
) -> None:
    _, crc = model_with_only_s3s_default_checksum("corrupt")
    wrong = base64.b64encode((int.from_bytes(base64.b64decode(crc), "big") ^ 1).to_bytes(8, "big")).decode()
    dest = tmp_path / "artifacts"
    (dest / "model").mkdir(parents=True)
    (dest / "model" / "model.keras").write_bytes(b"the previous model")
    fetched_files(dest, write=True)  # as fetch-model records what it wrote
    before = tree(dest)
    with FaultProxy(aws_endpoint, [s3_reports_crc64nvme(wrong)]) as proxy:
        fetched = fetch("corrupt", dest, proxy, tmp_path / "home", crt=True)
    assert fetched.code == 1, fetched.err
    assert one_line_error(fetched).endswith("model.tar.gz: CRC64NVME checksum mismatch after download")
    assert tree(dest) == before and leftovers(dest) == []


# --- a destination that cannot take the files -------------------------------------------------------------


@pytest.fixture(scope="module")
def local_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished local job (plain Python, two hosts): its home and name."""
    root = tmp_path_factory.mktemp("local-job")
    spec = write_job(root, TINY)
    submitted = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=root / "home")
    assert submitted.code == 0, submitted.err
    return root / "home", submitted.json()["job"]["name"]


@pytest.fixture
def big_local_job(local_job: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A copy of the finished local job whose model.tar.gz holds a 3 MiB model."""
    home, job = local_job
    copy = tmp_path / "home"
    shutil.copytree(home, copy, symlinks=True)
    (copy / "jobs" / job / "model.tar.gz").write_bytes(bytes_tarball({"model.keras": weights(3, seed=5)}))
    return copy, job


Backend = str


def fetch_into(
    backend: Backend, dest: Path, tmp_path: Path, request: pytest.FixtureRequest, compressible: bool = False, **run: Any
) -> Result:
    """`cloudtrain fetch-model JOB --to DEST` of a finished job of that backend with a 3 MiB model.

    Compressible: the model is zeros, so its tarball is small and only extracting it needs the space.
    """
    if backend == "local":
        home, job = request.getfixturevalue("big_local_job")
        if compressible:
            (home / "jobs" / job / "model.tar.gz").write_bytes(bytes_tarball({"model.keras": COMPRESSIBLE * 3}))
        return run_cli("fetch-model", job, "--to", str(dest), home=home, **run)
    endpoint = request.getfixturevalue("aws_endpoint")
    finished_sagemaker_job("big", model_mib=3, compressible=compressible, checkpoint_mib=0)
    home = tmp_path / "home"
    return run_cli(
        "fetch-model", "big", "--to", str(dest), "--backend", "sagemaker", home=home, env=aws_env(endpoint), **run
    )


def previous_fetch(dest: Path) -> dict[str, str]:
    """What an earlier fetch left in dest; returns its tree to compare with afterwards."""
    (dest / "model").mkdir(parents=True, exist_ok=True)
    (dest / "model" / "model.keras").write_bytes(b"yesterday's model")
    (dest / "model.tar.gz").write_bytes(b"yesterday's tarball")
    fetched_files(dest, write=True)  # as fetch-model records what it wrote
    return tree(dest)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs the right to mount: root in this sandbox; skipped elsewhere)."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the RLIMIT_FSIZE test stands in")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("compressible", [False, True], ids=["download-fails", "extraction-fails"])
@pytest.mark.parametrize("backend", ["local", "sagemaker"])
def test_fetch_model_onto_a_full_disk(
    backend: Backend, compressible: bool, tiny_disk: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dest = tiny_disk / "artifacts"
    before = previous_fetch(dest)
    fetched = fetch_into(backend, dest, tmp_path, request, compressible=compressible)
    assert fetched.code == 2, fetched.err
    line = one_line_error(fetched)
    assert "No space left on device" in line and str(dest) in line, line
    assert tree(dest) == before and leftovers(tiny_disk) == []


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec hook: files may not grow past `limit` bytes, and writing past it fails with EFBIG."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("backend", ["local", "sagemaker"])
def test_fetch_model_past_the_file_size_limit(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """RLIMIT_FSIZE: the stand-in for a full disk that needs no mount (writes past 1 MiB fail with EFBIG)."""
    dest = tmp_path / "artifacts"
    before = previous_fetch(dest)
    fetched = fetch_into(backend, dest, tmp_path, request, preexec=file_size_limit(MIB))
    assert fetched.code == 2, fetched.err
    line = one_line_error(fetched)
    assert "File too large" in line and str(dest) in line, line
    assert tree(dest) == before and leftovers(dest) == []


def without_root_powers() -> None:
    """A preexec hook: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so file modes apply to root too."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="module")
def modes_apply() -> None:
    """Skip where file modes cannot be made to apply (root without the right to drop its capabilities)."""
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=without_root_powers, check=True)
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot run a command without CAP_DAC_OVERRIDE here: {e}")


@pytest.mark.usefixtures("modes_apply")
@pytest.mark.parametrize("backend", ["local", "sagemaker"])
def test_fetch_model_into_a_folder_without_write_permission(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dest = tmp_path / "artifacts"
    before = previous_fetch(dest)
    dest.chmod(0o555)
    try:
        fetched = fetch_into(backend, dest, tmp_path, request, preexec=without_root_powers)
    finally:
        dest.chmod(0o755)
    assert fetched.code == 2, fetched.err
    line = one_line_error(fetched)
    assert "Permission denied" in line and str(dest) in line, line
    assert tree(dest) == before and leftovers(dest) == []


@pytest.mark.parametrize("backend", ["local", "sagemaker"])
def test_fetch_model_to_a_path_under_a_file(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    dest = tmp_path / "notes.txt" / "artifacts"
    fetched = fetch_into(backend, dest, tmp_path, request)
    assert fetched.code == 2, fetched.err
    line = one_line_error(fetched)
    assert "Not a directory" in line and str(dest) in line, line
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


# --- a worker killed at a random moment, ten times, each time resumed -------------------------------------

DIGITS = str(REPO / "job_specs" / "digits.yaml")
EPOCHS = 40
KILLS = 10


def status_of(home: Path, job: str) -> dict[str, Any]:
    result = cloudtrain("status", job, "--json", home=home)
    assert result.code == 0, result.err
    return result.json()


def chief_log(home: Path, job: str) -> list[str]:
    stream = home / "jobs" / job / "logs" / "algo-1.jsonl"
    return [json.loads(line)["m"] for line in stream.read_text().splitlines()] if stream.exists() else []


def started_at(home: Path, job: str) -> int | None:
    """The epoch the job's chief restored (from its `training N epoch(s)` line), None if it never got there."""
    for line in chief_log(home, job):
        if m := re.search(r"\(chief, task 0 of \d+\): training (\d+) epoch\(s\)", line):
            return EPOCHS - int(m.group(1))
    return None


def checkpointed(home: Path, job: str) -> int:
    """The newest epoch whose checkpoint the chief wrote whole, index and data (what a resume restores), 0 for none.

    Not the epoch the `checkpoint` file names: a worker killed after writing ckpt-N but before naming it there
    leaves that file one epoch behind, and a resume still restores ckpt-N.
    """
    folder = home / "jobs" / job / "hosts" / "algo-1" / "checkpoints"
    written = (re.fullmatch(r"ckpt-(\d+)\.index", p.name) for p in folder.glob("ckpt-*.index"))
    return max((int(m[1]) for m in written if m and any(folder.glob(f"ckpt-{m[1]}.data-*"))), default=0)


def last_logged_epoch(home: Path, job: str) -> int:
    return max((int(m) for line in chief_log(home, job) for m in re.findall(r"^epoch=(\d+) ", line)), default=0)


def near_the_end(home: Path, job: str) -> bool:
    """Whether the job could finish within a few epochs (a kill must land while it still runs)."""
    start = started_at(home, job)
    return max(last_logged_epoch(home, job), start if start is not None else 0) >= EPOCHS - 3


def wait_for_workers(home: Path, job: str, hosts: int = 2, timeout: float = 120) -> dict[str, int]:
    path = home / "jobs" / job / "workers.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            workers = json.loads(path.read_text())
            if len(workers) == hosts:
                return {host: int(pid) for host, pid in workers.items()}
        time.sleep(0.1)
    raise AssertionError(f"{job}: workers never started ({status_of(home, job)})")


def wait_until_over(home: Path, job: str, workers: dict[str, int], timeout: float = 120) -> dict[str, Any]:
    """The job's final status, once it has ended and every process of its workers is gone."""
    deadline = time.monotonic() + timeout
    while (status := status_of(home, job))["status"] not in ("Failed", "Completed", "Stopped"):
        assert time.monotonic() < deadline, f"{job} still {status['status']}"
        time.sleep(1)
    for pid in workers.values():
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    return status


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`--set` arguments pointing the digits example at freshly prepared channels."""
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(out)], check=True)
    return ["--set", f"data.train={out / 'train'}", "--set", f"data.eval={out / 'eval'}"]


@pytest.mark.slow
def test_a_worker_killed_ten_times_at_random_then_resumed_loses_no_epoch(
    tmp_path: Path, digits_data: list[str]
) -> None:
    seed = int(os.environ.get("CLOUDTRAIN_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed {seed} (CLOUDTRAIN_FAULT_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    home = tmp_path / "home"
    submit = ["submit", DIGITS, "--backend", "local", *digits_data, "--set", f"hyperparameters.epochs={EPOCHS}"]
    submit += ["--set", "hyperparameters.batch_size=8"]  # epochs of about half a second: kills land mid-run
    fast_failure = {"CLOUDTRAIN_FAILURE_GRACE": "1"}  # the runner SIGKILLs the survivors 1 s after a death

    previous: str | None = None
    for kill in range(1, KILLS + 1):
        resume = ["--resume", previous] if previous else []
        submitted = cloudtrain(*submit, *resume, "--json", home=home, env=fast_failure)
        assert submitted.code == 0, submitted.err
        job = submitted.json()["job"]["name"]
        workers = wait_for_workers(home, job)
        # Start-up (imports, cluster) takes several seconds, then an epoch about 0.5 s: kills land in both.
        host, delay = rng.choice(sorted(workers)), rng.uniform(0.0, 16.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not near_the_end(home, job):
            time.sleep(0.05)
        os.kill(workers[host], signal.SIGKILL)  # ProcessLookupError here: the job ended before its kill
        status = wait_until_over(home, job, workers)
        restored, saved = started_at(home, job), checkpointed(home, job)
        print(f"kill {kill}: {job} {host} after {delay:.1f}s: restored {restored}, checkpointed {saved}")
        assert status["status"] == "Failed" and host in status["failure_reason"], status
        if previous is not None and restored is not None:
            assert restored == checkpointed(home, previous), "resumed from the previous job's last checkpoint"
        assert saved >= (checkpointed(home, previous) if previous else 0), "a checkpoint was lost"
        previous = job

    final = cloudtrain(*submit, "--resume", previous, "--wait", "--json", home=home, env=fast_failure)
    assert final.code == 0, final.err
    job = final.json()["job"]["name"]
    assert started_at(home, job) == checkpointed(home, previous)
    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=home)
    assert fetched.code == 0, fetched.err
    report = json.loads((tmp_path / "out" / "output" / "eval_report.json").read_text())
    assert [h["epoch"] for h in report["history"]] == list(range(1, EPOCHS + 1)), "every epoch once, none lost"
    model = tmp_path / "out" / "model"
    assert (model / "1" / "saved_model.pb").is_file()
    load = "import keras, sys; print(keras.models.load_model(sys.argv[1]).count_params())"
    loaded = subprocess.run([sys.executable, "-c", load, str(model / "model.keras")], capture_output=True, text=True)
    assert loaded.returncode == 0 and int(loaded.stdout.split()[-1]) > 0, loaded.stderr[-2000:]

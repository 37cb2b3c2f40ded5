"""Row `fetch`: fetch-model of a 1 GB model.tar.gz (download and extract) against the AWS CLI both ways a user
would: the streaming `aws s3 cp s3://... - | tar -xzf -` (one stream, overlapping download and extraction as
cloudtrain does) and `aws s3 cp s3://... model.tar.gz && tar -xzf model.tar.gz` (the CLI's parallel ranged
download to a file, then the extraction). The headline ratio is against the faster of the two.

The model is made once per bench run: random (incompressible) bytes in a SavedModel-like layout, streamed into
a tarfile with gzip level 1. The job is a real cloudtrain submit to moto; its model.tar.gz is answered by the
bench's proxy from the local file (moto reads a whole object per ranged GET, which would measure moto), as
S3 answers a SageMaker artifact: a multipart ETag and a full-object CRC64NVME (S3's default checksum) for
requests that ask for checksums. Both clients use the same endpoint, and between runs the outputs are deleted
and the page cache is synced.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from pathlib import Path

from benchlib.aws import CountingProxy
from benchlib.context import Context, write_spec
from benchlib.core import AWS, CLOUDTRAIN, CRT_PATH, VENV_PY, Row, Run, Stats, interleave, ratio_text
from benchlib.profiling import top_functions

MIB = 1 << 20
PEAK_RSS_LIMIT_MB = 150
SMALL_FILES = {"1/saved_model.pb": 512 << 10, "1/fingerprint.pb": 64, "1/variables/variables.index": 24 << 10}
SHARDS = 2


class _RandomReader:
    """A file-like object of `size` random bytes (for tarfile.addfile)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def make_model(path: Path, payload: int) -> dict[str, int]:
    """model.tar.gz with `payload` random bytes in all, as SageMaker packs /opt/ml/model; the files and sizes."""
    files = dict(SMALL_FILES)
    bulk = payload - sum(files.values())
    for i in range(SHARDS):
        files[f"1/variables/variables.data-{i:05d}-of-{SHARDS:05d}"] = bulk // SHARDS + (bulk % SHARDS if i == 0 else 0)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.copybufsize = 1 << 20
        for name, size in files.items():
            info = tarfile.TarInfo(name)
            info.size = size
            info.mtime = int(time.time())
            tar.addfile(info, _RandomReader(size))  # type: ignore[arg-type]
    return files


def crc64nvme_of(path: Path, ctx: Context) -> str:
    """The file's CRC64NVME as S3 reports it (base64), computed by awscrt from .venv-crt in a child process."""
    code = (
        "import base64, sys\nfrom awscrt import checksums\ncrc = 0\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    while chunk := f.read(1 << 24):\n        crc = checksums.crc64nvme(chunk, crc)\n"
        "print(base64.b64encode(crc.to_bytes(8, 'big')).decode())"
    )
    env = {**ctx.base_env, "PYTHONPATH": str(CRT_PATH)}
    return ctx.processes.run([str(VENV_PY), "-c", code, str(path)], env=env).check("crc64nvme").out.strip()


def _check(folder: Path, files: dict[str, int], what: str) -> None:
    for name, size in files.items():
        got = (folder / name).stat().st_size if (folder / name).is_file() else -1
        if got != size:
            raise RuntimeError(f"{what}: {name} has {got} bytes, expected {size}")


def _reset(*folders: Path) -> None:
    """Outputs gone and dirty pages written (untimed), so no run pays for the previous one's writeback."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    os.sync()


def run(ctx: Context) -> Row:
    moto = ctx.moto()
    work = ctx.folder("fetch")
    payload = (64 if ctx.quick else 1024) * MIB
    tarball = work / "model.tar.gz"
    ctx.log(f"fetch: making a {payload / MIB:.0f} MiB model.tar.gz (random bytes, gzip level 1)")
    began = time.perf_counter()
    files = make_model(tarball, payload)
    size = tarball.stat().st_size
    ctx.log(f"fetch: made {size / MIB:.0f} MiB in {time.perf_counter() - began:.1f} s")

    proxy = CountingProxy(moto.url)
    ctx.stack.callback(proxy.close)
    home = ctx.folder("fetch-home")
    env = ctx.aws_env(proxy.url, home)
    code = ctx.folder("fetch-code")
    (code / "train.py").write_text("print('bench')\n")
    job = ctx.submit(write_spec(work / "spec.json", name="bench-fetch", source_dir=code, backend="sagemaker"), env)
    status = ctx.cloudtrain("status", job, "--json", env=env).check("cloudtrain status")
    model_uri = json.loads(status.out)["artifacts"]["model"]
    bucket, key = model_uri.removeprefix("s3://").split("/", 1)
    proxy.serve(bucket, key, tarball, crc64nvme=crc64nvme_of(tarball, ctx))

    ct_out, aws_out = work / "out-cloudtrain", work / "out-aws"
    ct_cmd = [str(CLOUDTRAIN), "fetch-model", job, "--to", str(ct_out), "--json"]
    stream = f"set -o pipefail; {AWS} s3 cp --only-show-errors {model_uri} - | tar -xzf - -C {aws_out / 'model'}"
    aws_cmd = ["bash", "-c", stream]
    to_file = (
        f"set -e; {AWS} s3 cp --only-show-errors {model_uri} {aws_out / 'model.tar.gz'}; "
        f"tar -xzf {aws_out / 'model.tar.gz'} -C {aws_out / 'model'}"
    )
    file_cmd = ["bash", "-c", to_file]

    checked: list[dict[str, str]] = []

    def cloudtrain() -> tuple[float, int]:
        """Wall time and peak RSS in KB."""
        _reset(ct_out)
        run = ctx.processes.run(ct_cmd, env=env, timeout=1800).check("cloudtrain fetch-model")
        _check(ct_out / "model", files, "cloudtrain fetch-model")
        checked.append(json.loads(run.out)["checked"])
        return run.wall, run.maxrss_kb

    def aws() -> tuple[float, int]:
        """The pipeline's wall time and the peak RSS in KB of its largest process (wait4 of bash)."""
        _reset(aws_out)
        (aws_out / "model").mkdir(parents=True)
        run: Run = ctx.processes.run(aws_cmd, env=env, timeout=1800).check("aws s3 cp - | tar -xzf -")
        _check(aws_out / "model", files, "aws s3 cp - | tar")
        return run.wall, run.maxrss_kb

    def aws_file() -> tuple[float, int]:
        """Download to a file (the CLI's parallel ranged GETs), then extract: wall time of both, peak RSS."""
        _reset(aws_out)
        (aws_out / "model").mkdir(parents=True)
        run: Run = ctx.processes.run(file_cmd, env=env, timeout=1800).check("aws s3 cp FILE && tar -xzf FILE")
        _check(aws_out / "model", files, "aws s3 cp FILE && tar")
        return run.wall, run.maxrss_kb

    runs = ctx.runs(5, 2)
    ctx.log(f"fetch: {runs} interleaved runs of cloudtrain fetch-model, aws s3 cp - | tar, aws s3 cp FILE && tar")
    results = interleave([("cloudtrain", cloudtrain), ("aws", aws), ("aws-file", aws_file)], runs)
    _reset(ct_out, aws_out)
    ct_runs: list[tuple[float, int]] = results["cloudtrain"]
    ct_walls = [r[0] for r in ct_runs]
    walls = {name: [r[0] for r in results[name]] for name in ("aws", "aws-file")}
    best = min(walls, key=lambda name: Stats.of(walls[name]).median)  # the user's better choice
    aws_walls = walls[best]
    ratio, text = ratio_text(aws_walls, ct_walls)  # throughput ratio = inverse of the time ratio
    ratios = {name: ratio_text(walls[name], ct_walls)[1] for name in walls}
    ct_thr = Stats.of([size / w / MIB for w in ct_walls])
    aws_thr = Stats.of([size / w / MIB for w in aws_walls])
    labels = {"aws": "`aws s3 cp s3://... - | tar -xzf -`", "aws-file": "`aws s3 cp s3://... FILE && tar -xzf FILE`"}
    peak = max(r[1] for r in ct_runs) / 1024
    details = [
        f"model.tar.gz: {size / MIB:.0f} MiB ({len(files)} files, random bytes, gzip level 1); times are download "
        "and extraction together, throughput is the tarball's size over that time.",
        f"cloudtrain: {Stats.of(ct_walls).fmt()}; peak RSS {peak:.0f} MB (max over runs, wait4 of the process).",
        *(
            f"{labels[name]}: {Stats.of(walls[name]).fmt()}, "
            f"{Stats.of([size / w / MIB for w in walls[name]]).median:.0f} MiB/s; cloudtrain's throughput against "
            f"it {ratios[name]}; peak RSS of its largest process "
            f"{max(r[1] for r in results[name]) / 1024:.0f} MB."
            for name in walls
        ),
        f"Headline against the faster of the AWS CLI's two ways: {labels[best]}.",
        f"The object carries a full-object CRC64NVME, as SageMaker's artifacts do; what cloudtrain checked: "
        f"{'; '.join(sorted({f'{k}: {v}' for c in checked for k, v in c.items()}))}.",
    ]
    _reset(ct_out)
    profile = top_functions(ctx.processes, ct_cmd[1:], env, work, count=7)
    _reset(ct_out)
    details.append(
        "cloudtrain, one profiled run (its main thread waits while the download threads fetch and one more "
        "thread extracts what has landed): " + "; ".join(profile)
    )
    return Row(
        name="fetch",
        title=f"fetch-model of a {size / 2**30:.2f} GiB model.tar.gz (download + extract)",
        figure=f"{ct_thr.fmt('MiB/s')}; peak RSS {peak:.0f} MB",
        against=f"{labels[best]} {aws_thr.fmt('MiB/s')} (the faster of the CLI's pipe and file-then-tar)",
        ratio=text,
        target=f"≥ 1.0x throughput, peak RSS < {PEAK_RSS_LIMIT_MB} MB",
        met=ratio >= 1.0 and peak < PEAK_RSS_LIMIT_MB,
        commands=[
            f"AWS_ENDPOINT_URL=<proxy in front of moto> {' '.join(ct_cmd)}",
            f"AWS_ENDPOINT_URL=<same> bash -c '{stream}'",
            f"AWS_ENDPOINT_URL=<same> bash -c '{to_file}'",
        ],
        details=details,
        data={"cloudtrain": ct_runs, "aws": results["aws"], "aws_file": results["aws-file"], "size": size},
    )

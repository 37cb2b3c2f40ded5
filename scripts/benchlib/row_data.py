"""Rows for data at scale: `data-resubmit` (an unchanged data tree submitted again: its digest from the cache
against a full re-hash, and the bytes a resubmit sends), `data-resume` (an upload cut at 50 % and resumed: the
bytes the resume sends against a full upload's) and `data-first-step` (a local 2-worker job on an s3:// channel:
submit to first training step against dataset size, File mode against FastFile).

Uploads go through the counting proxy in front of moto, which adds up the body bytes of every PutObject and
UploadPart; the cut is the tests' fault proxy dropping every upload request after half of them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from benchlib.aws import CountingProxy
from benchlib.context import Context, write_spec
from benchlib.core import Row, Stats, interleave, poll, ratio_text
from tests.faultproxy import Fault, FaultProxy
from tests.loopback_aws import client

MIB = 1 << 20
GIB = 1 << 30
UPLOADS = ("PutObject", "UploadPart")
FILE_SIZE = 32 * MIB  # the tree's files: 2 parts each above the 16 MiB multipart threshold


def make_tree(folder: Path, total: int, file_size: int = FILE_SIZE) -> Path:
    """`total` bytes of incompressible files, written once and back-dated (not "racily clean")."""
    folder.mkdir(parents=True)
    for i in range(max(1, total // file_size)):
        with open(folder / f"shard-{i:04d}.bin", "wb") as f:
            for _ in range(file_size // MIB):
                f.write(os.urandom(MIB))
    old = time.time() - 60
    for path in folder.iterdir():
        os.utime(path, (old, old))
    return folder


def resubmit_row(ctx: Context) -> Row:
    from cloudtrain.transfer.upload import DigestCache, tree_digest

    size = (128 * MIB) if ctx.quick else GIB
    work = ctx.folder("data-resubmit")
    tree = make_tree(work / "tree", size)
    cache = DigestCache(work / "digests")
    tree_digest(tree, cache)  # the first submit's digest fills the cache

    def timed(use_cache: bool) -> float:
        began = time.perf_counter()
        tree_digest(tree, cache if use_cache else None)
        return time.perf_counter() - began

    runs = ctx.runs(5, 2)
    ctx.log(f"data-resubmit: {runs} interleaved digests of a {size / GIB:.2f} GiB tree, cached and full")
    results = interleave([("cached", lambda: timed(True)), ("full", lambda: timed(False))], runs)
    ratio, text = ratio_text(results["cached"], results["full"])

    moto = ctx.moto()
    proxy = CountingProxy(moto.url)
    ctx.stack.callback(proxy.close)
    home = ctx.folder("data-resubmit-home")
    env = ctx.aws_env(proxy.url, home)
    code = work / "code"
    code.mkdir()
    (code / "train.py").write_text("print('bench')\n")
    spec = write_spec(work / "spec.json", name="bench-data", source_dir=code, backend="sagemaker", data={"train": tree})
    ctx.log("data-resubmit: a first submit uploads the tree, a second sends nothing")
    sent: list[int] = []
    walls: list[float] = []
    for _ in range(2):
        mark = proxy.mark()
        began = time.perf_counter()
        ctx.submit(spec, env)
        walls.append(time.perf_counter() - began)
        sent.append(sum(s.body_bytes for s in proxy.since(mark) if s.operation in UPLOADS))
    return Row(
        name="data-resubmit",
        title=f"resubmit of an unchanged {size / GIB:.2f} GiB data tree: digest from the cache, bytes sent",
        figure=f"digest from cache {Stats.of(results['cached']).fmt()}; second `cloudtrain submit` "
        f"{walls[1]:.2f} s, sent {sent[1]} bytes (first: {walls[0]:.2f} s, {sent[0] / MIB:.0f} MiB)",
        against=f"full re-hash {Stats.of(results['full']).fmt()}",
        ratio=text,
        target="≤ 0.05x, 0 bytes sent",
        met=ratio <= 0.05 and sent[1] == 0,
        commands=[f"cloudtrain submit {spec.name} --json (sagemaker backend on moto), twice"],
        details=[
            f"Tree: {max(1, size // FILE_SIZE)} files of {FILE_SIZE // MIB} MiB, random bytes, in the page cache "
            "(the full re-hash reads from memory: on a cold disk it is slower, the cached digest is not).",
            "4 GiB was not run on this shared machine: moto keeps every uploaded byte in memory.",
        ],
        data={"cached_s": results["cached"], "full_s": results["full"], "sent": sent, "submit_s": walls},
    )


def resume_row(ctx: Context) -> Row:
    from cloudtrain.transfer.s3 import S3Location
    from cloudtrain.transfer.upload import S3Uploader, tree_digest

    size = (128 * MIB) if ctx.quick else GIB // 2
    work = ctx.folder("data-resume")
    moto = ctx.moto()
    proxy = CountingProxy(moto.url)
    ctx.stack.callback(proxy.close)
    s3 = client("s3", proxy.url)
    s3.create_bucket(Bucket="bench-resume")
    runs = ctx.runs(2, 1)
    full_bytes: list[int] = []
    resumed_bytes: list[int] = []
    full_s: list[float] = []
    resumed_s: list[float] = []
    for run in range(runs):
        tree = make_tree(work / f"tree-{run}", size)  # new content each run: nothing of it on S3 yet
        digest = tree_digest(tree)
        parts = sum(-(-f.size // (16 * MIB)) for f in digest.files)
        mark = proxy.mark()
        began = time.perf_counter()
        S3Uploader(s3).upload_channel("train", tree, S3Location("bench-resume", f"full-{run}"), digest)
        full_s.append(time.perf_counter() - began)
        full_bytes.append(sum(s.body_bytes for s in proxy.since(mark) if s.operation in UPLOADS))
        cut = Fault("drop_request", service="s3", operation="UploadPart", skip=parts // 2, times=10**9, after=4096)
        prefix = S3Location("bench-resume", f"cut-{run}")
        with FaultProxy(proxy.url, [cut]) as faulty:
            try:
                S3Uploader(client("s3", faulty.url)).upload_channel("train", tree, prefix, digest)
            except Exception:  # the cut: whatever the connection error
                pass
            else:
                raise RuntimeError("data-resume: the cut did not stop the upload")
        mark = proxy.mark()
        began = time.perf_counter()
        S3Uploader(s3).upload_channel("train", tree, prefix, digest)
        resumed_s.append(time.perf_counter() - began)
        resumed_bytes.append(sum(s.body_bytes for s in proxy.since(mark) if s.operation in UPLOADS))
        _empty(client("s3", moto.url), "bench-resume")  # moto keeps objects in memory: free them for the next run
    ratio, text = ratio_text(resumed_bytes, full_bytes)
    return Row(
        name="data-resume",
        title=f"upload of a {size / GIB:.2f} GiB data tree cut at 50 % of its parts, then resumed: bytes sent",
        figure=f"resumed: {Stats.of([b / MIB for b in resumed_bytes]).fmt('MiB')}, {Stats.of(resumed_s).fmt()}",
        against=f"a full upload: {Stats.of([b / MIB for b in full_bytes]).fmt('MiB')}, {Stats.of(full_s).fmt()}",
        ratio=text,
        target="≤ 0.55x",
        met=ratio <= 0.55,
        commands=["S3Uploader.upload_channel through the tests' fault proxy, then again without it"],
        details=[
            f"Tree: {max(1, size // FILE_SIZE)} files of {FILE_SIZE // MIB} MiB (16 MiB parts); the cut drops every "
            "UploadPart after half of them (the connection reset mid-body), as a lost network or a Ctrl-C would.",
            "The resume lists what is under the tree's prefix and each open multipart upload's parts: only the "
            "missing parts are sent (the manifest, written last, is a PutObject of under 1 kB).",
        ],
        data={"resumed_bytes": resumed_bytes, "full_bytes": full_bytes, "resumed_s": resumed_s, "full_s": full_s},
    )


FIRST_STEP_SCRIPT = '''\
"""Print when the first batch of the channel is read, as a training loop's first step would."""
import os, sys, time
from pathlib import Path
began = time.time()
folder = Path(os.environ["SM_CHANNEL_TRAIN"])
first = sorted(p for p in folder.iterdir() if p.is_file())[0]
with open(first, "rb") as f:
    f.read(1 << 20)
print(f"first-step {time.time():.3f}", flush=True)
'''


def first_step_row(ctx: Context) -> Row:
    """Submit to first step (the script has read its first MiB) of a local job on an s3:// channel."""
    sizes = [64 * MIB, 256 * MIB] if ctx.quick else [100 * 1000**2, GIB]
    work = ctx.folder("data-first-step")
    moto = ctx.moto()
    s3 = client("s3", moto.url)
    s3.create_bucket(Bucket="bench-data")
    code = work / "code"
    code.mkdir()
    (code / "train.py").write_text(FIRST_STEP_SCRIPT)
    results: dict[str, dict[int, list[float]]] = {"file": {}, "fastfile": {}}
    runs = ctx.runs(2, 1)
    for size in sizes:
        prefix = f"ds-{size}"
        chunk = os.urandom(MIB)
        for i in range(max(1, size // FILE_SIZE)):
            s3.put_object(Bucket="bench-data", Key=f"{prefix}/shard-{i:04d}.bin", Body=chunk * (FILE_SIZE // MIB))
        for mode in ("file", "fastfile"):
            results[mode][size] = []
        for _ in range(runs):
            for mode in ("file", "fastfile"):
                home = ctx.folder(f"first-step-home-{mode}")  # a cold cache each time
                env = ctx.aws_env(moto.url, home)
                spec_path = write_spec(
                    work / f"spec-{mode}.json", name=f"bench-{mode}", source_dir=code, backend="local", instance_count=1
                )
                spec = json.loads(spec_path.read_text())
                spec["data"] = {"train": {"uri": f"s3://bench-data/{prefix}", "mode": mode}}
                spec["distribution"] = {"strategy": "none"}
                spec_path.write_text(json.dumps(spec))
                began = time.time()
                job = ctx.submit(spec_path, env)
                log = home / "jobs" / job / "logs" / "algo-1.jsonl"
                line = poll(lambda log=log: _first_step(log), timeout=600, what=f"{job}'s first step")
                results[mode][size].append(line - began)
                ctx.cloudtrain("logs", job, "--follow", env=env, timeout=600)  # returns when the job ends
    fmt = "; ".join(
        f"{size / MIB:.0f} MiB: File {Stats.of(results['file'][size]).fmt()}, "
        f"FastFile {Stats.of(results['fastfile'][size]).fmt()}"
        for size in sizes
    )
    largest = sizes[-1]
    _, text = ratio_text(results["fastfile"][largest], results["file"][largest])
    return Row(
        name="data-first-step",
        title="local job on an s3:// channel: submit to first step, by dataset size, FastFile against File",
        figure=fmt,
        against="File mode (every object downloaded before the script starts)",
        ratio=f"FastFile/File at {largest / MIB:.0f} MiB: {text}",
        target="recorded",
        met=None,
        commands=["cloudtrain submit spec --json (local backend, moto's S3); the script reads 1 MiB of one file"],
        details=[
            "Each run starts with an empty cache (a new CLOUDTRAIN_HOME): File mode downloads the whole channel "
            "first, FastFile lists it and fetches the one file the script opens.",
            "4 GB was not run on this shared machine: moto keeps every object in memory.",
        ],
        data={"file_s": results["file"], "fastfile_s": results["fastfile"], "sizes": sizes},
    )


def _empty(s3: object, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):  # type: ignore[attr-defined]
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})  # type: ignore[attr-defined]


def _first_step(log: Path) -> float | None:
    try:
        text = log.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        message = json.loads(line).get("m", "")
        if message.startswith("first-step "):
            return float(message.split()[1])
    return None

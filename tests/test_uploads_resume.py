"""Uploads that scale: an upload cut halfway resumes with only what is missing, and an unchanged tree's digest
comes from its cache (path, size, mtime) without reading a byte of it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import boto3
import pytest

from cloudtrain.transfer import upload as upload_module
from cloudtrain.transfer.s3 import S3Location
from cloudtrain.transfer.upload import MULTIPART_CHUNKSIZE, DigestCache, S3Uploader, tree_digest
from tests.faultproxy import Fault, FaultProxy

BUCKET = "resume-bucket"


def make_tree(root: Path, files: int, size: int) -> Path:
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"part-{i:03d}.bin").write_bytes(os.urandom(size))
    old = time.time() - 60  # not "racily clean": written well before it is hashed
    for path in root.iterdir():
        os.utime(path, (old, old))
    return root


def upload_cut_then_resumed(endpoint: str, tree: Path, operation: str, let_through: int) -> tuple[int, int]:
    """(bytes of the whole tree, bytes the resumed upload sent), the first upload's connection cut
    after `let_through` uploads of `operation` (PutObject, UploadPart); the channel is whole on S3 after."""
    client(endpoint).create_bucket(Bucket=BUCKET)
    prefix = S3Location(BUCKET, "cloudtrain")
    digest = tree_digest(tree)
    folder, manifest = upload_module.data_location(prefix, digest)
    cut = Fault("drop_request", service="s3", operation=operation, skip=let_through, times=1_000_000, after=1000)
    with FaultProxy(endpoint, [cut]) as proxy:
        with pytest.raises(Exception):  # noqa: B017 (whatever the connection error: the upload stopped)
            S3Uploader(client(proxy.url)).upload_channel("train", tree, prefix, digest)
        assert cut.hits
        assert not S3Uploader(client(endpoint)).exists(manifest)  # nothing says "complete" yet
        proxy.faults.clear()
        proxy.log.clear()
        resumed = S3Uploader(client(proxy.url)).upload_channel("train", tree, prefix, digest)
        requests = [s for s in proxy.log if s.operation == operation]
    s3 = client(endpoint)
    assert S3Uploader(s3).exists(manifest)
    for f in digest.files:
        assert s3.get_object(Bucket=BUCKET, Key=folder.join(f.name).key)["Body"].read() == f.path.read_bytes()
    # what it says it sent is what went on the wire (a file or a part per request; PutObject: the manifest too)
    pieces = len(digest.files) if operation == "PutObject" else -(-digest.size // MULTIPART_CHUNKSIZE)
    assert len(requests) - (operation == "PutObject") == round(pieces * resumed.uploaded_bytes / digest.size)
    return digest.size, resumed.uploaded_bytes


def client(endpoint: str) -> object:
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 2}))


def test_an_upload_of_many_files_cut_halfway_sends_only_the_missing_files(aws_endpoint: str, tmp_path: Path) -> None:
    total, sent = upload_cut_then_resumed(
        aws_endpoint, make_tree(tmp_path / "data", files=40, size=64 << 10), "PutObject", let_through=20
    )
    assert 0 < sent <= 0.55 * total


def test_a_large_file_cut_halfway_resumes_from_its_uploaded_parts(aws_endpoint: str, tmp_path: Path) -> None:
    size = 6 * MULTIPART_CHUNKSIZE
    total, sent = upload_cut_then_resumed(
        aws_endpoint, make_tree(tmp_path / "data", files=1, size=size), "UploadPart", let_through=3
    )
    assert 0 < sent <= 0.55 * total


def test_an_unchanged_tree_is_not_read_again_and_a_changed_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_tree(tmp_path / "data", files=5, size=1000)
    cache = DigestCache(tmp_path / "cache")
    first = tree_digest(tree, cache)
    read: list[Path] = []
    real = upload_module.sha256_file
    monkeypatch.setattr(upload_module, "sha256_file", lambda p: read.append(p) or real(p))
    assert tree_digest(tree, cache) == first
    assert read == []
    changed = tree / "part-002.bin"
    changed.write_bytes(b"new content")
    old = time.time() - 30
    os.utime(changed, (old, old))
    again = tree_digest(tree, cache)
    assert read == [changed]
    assert again.sha256 != first.sha256
    assert again == tree_digest(tree)  # the same digest a full re-hash gives

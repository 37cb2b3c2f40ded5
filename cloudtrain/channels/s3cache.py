"""S3 channels on this machine: each object downloaded once into a cache keyed by its bucket, key, ETag and size,
then hard-linked into every host's channel folder; ShardedByS3Key shares; FastFile manifests for `lazyfs`.

A second job over the same objects downloads nothing; an object changed on S3 has a new ETag, so it is fetched
again (the old copy stays until `prune`). Files land through a temporary name and a rename: a job never sees
half an object.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cloudtrain.errors import UserError, quoted
from cloudtrain.files import atomic_path
from cloudtrain.transfer.s3 import Progress, ProgressCallback, S3Location

DOWNLOAD_WORKERS = 8


@dataclass(frozen=True)
class ChannelObject:
    """One object of a channel: where it sits in the channel's folder, and what pins its content."""

    name: str  # path below the channel's folder
    bucket: str
    key: str
    size: int
    etag: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def list_channel(s3: Any, uri: str) -> list[ChannelObject]:
    """Every object under the channel's prefix (as a folder: `s3://b/train` lists `train/...`), by key.

    Folder markers are skipped; a key that would land outside the channel's folder is refused.
    """
    prefix = S3Location.parse(uri)
    key_prefix = prefix.key + "/" if prefix.key else ""
    found: list[ChannelObject] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=key_prefix):
        for item in page.get("Contents", []):
            name = item["Key"][len(key_prefix) :]
            if not name or name.endswith("/"):
                continue
            parts = PurePosixPath(name).parts
            if ".." in parts or name.startswith("/") or "\\" in name:
                raise UserError(f"{uri}: refusing object {quoted(item['Key'])}: its name leaves the channel folder")
            found.append(ChannelObject(name, prefix.bucket, item["Key"], int(item["Size"]), item.get("ETag", "")))
    return sorted(found, key=lambda o: o.key)


def host_share(objects: Sequence[Any], host_index: int, host_count: int, distribution: str) -> list[Any]:
    """The objects (or files) one host gets: all of them, or for `sharded` every host_count-th by key.

    SageMaker documents ShardedByS3Key as "each instance gets approximately 1/n of the number of S3 objects";
    dealing them out by key in turn makes the shares differ by at most one object, and each object lands on
    exactly one host.
    """
    if distribution != "sharded" or host_count <= 1:
        return list(objects)
    return list(objects)[host_index::host_count]


class ChannelCache:
    """Downloaded objects under `root` (`<home>/cache/s3`), one file per (bucket, key, ETag, size)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def blob(self, obj: ChannelObject) -> Path:
        ident = f"{obj.bucket}\0{obj.key}\0{obj.etag}\0{obj.size}".encode()
        digest = hashlib.sha256(ident).hexdigest()
        return self.root / "blobs" / digest[:2] / digest

    def cached(self, obj: ChannelObject) -> bool:
        try:
            return self.blob(obj).stat().st_size == obj.size
        except OSError:
            return False

    def fetch(self, s3: Any, objects: Iterable[ChannelObject], on_progress: ProgressCallback | None = None) -> int:
        """Download the objects not cached yet (parallel ranged GETs pinned to each ETag); the bytes fetched."""
        from cloudtrain.transfer.download import Downloader, S3Object

        missing = {o.key: o for o in objects if not self.cached(o)}.values()
        wanted = [
            S3Object(S3Location(o.bucket, o.key), o.size, o.etag, self.blob(o), verify_etag=False) for o in missing
        ]
        if not wanted:
            return 0
        total = sum(o.size for o in missing)
        Downloader(s3, DOWNLOAD_WORKERS, Progress(total, on_progress)).fetch(wanted)
        return total

    def fetch_one(self, s3: Any, obj: ChannelObject) -> Path:
        """The object's cached file, downloaded first if need be (FastFile's first read of a file).

        A lock file beside it makes other processes (the other hosts' mounts, another job) wait for this download
        instead of making their own.
        """
        if self.cached(obj):
            return self.blob(obj)
        lock = self.blob(obj).with_suffix(".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            if not self.cached(obj):
                self.fetch(s3, [obj])
        return self.blob(obj)

    def link_into(self, objects: Iterable[ChannelObject], folder: Path) -> None:
        """The cached objects as the files of `folder` (hard links, so no copy; a copy across filesystems)."""
        folder.mkdir(parents=True, exist_ok=True)
        for obj in objects:
            dest = folder / obj.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.blob(obj), dest)
            except OSError:
                with atomic_path(dest) as tmp:
                    shutil.copyfile(self.blob(obj), tmp)


def write_manifest(
    path: Path, objects: Iterable[ChannelObject], cache: ChannelCache, aws: dict[str, str | None] | None = None
) -> None:
    """What `lazyfs` serves at one host's channel folder: its share of the objects, the cache to fill, and where
    S3 is (`endpoint_url`, `region`, `profile`: settings, never credentials, which come from the environment)."""
    body = {"cache": str(cache.root), "objects": [asdict(o) for o in objects], "aws": aws or {}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body))


def read_manifest(path: Path) -> tuple[ChannelCache, list[ChannelObject], dict[str, str | None]]:
    body = json.loads(path.read_text())
    return ChannelCache(Path(body["cache"])), [ChannelObject(**o) for o in body["objects"]], body.get("aws") or {}

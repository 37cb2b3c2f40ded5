"""Each host's channel folders on this machine, as SageMaker fills /opt/ml/input/data on its instances.

- a local folder or file: linked, no copy (sharded: each host gets links to its share of the files, dealt out
  by name as ShardedByS3Key deals out the keys they would have after an upload);
- `s3://`, file mode: the host's share downloaded once into the ETag-keyed cache and hard-linked in;
- `s3://`, fastfile mode: an empty folder where `lazyfs` mounts the host's share while the job runs.

Pipe mode and FSx for Lustre / EFS exist only on SageMaker: such a channel is refused with what to do instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.channels.s3cache import ChannelCache, host_share, list_channel, write_manifest
from cloudtrain.errors import UserError
from cloudtrain.transfer.s3 import ProgressCallback

if TYPE_CHECKING:
    from cloudtrain.spec.models import ChannelSpec

MOUNTS_FILE = "mounts.json"


@dataclass(frozen=True)
class Mount:
    """A FastFile channel: `lazyfs` serves `manifest` at `mountpoint` while the job runs."""

    manifest: str
    mountpoint: str


def refuse_unreachable(channels: Mapping[str, ChannelSpec]) -> None:
    """Channels this machine cannot serve as SageMaker would, refused before anything is laid out."""
    for name, channel in channels.items():
        if channel.file_system is not None:
            raise UserError(
                f"data.{name}: a file system is reached only from inside its VPC, on SageMaker; to try the job "
                "locally, point uri at a copy of the data (a folder or s3:// URI)"
            )
        if channel.mode == "pipe":
            raise UserError(
                f"data.{name}: pipe mode (SageMaker's FIFOs) is not run by the local backend; mode: file or "
                "fastfile hand the script the same files"
            )
        if channel.mode == "fastfile" and channel.is_s3:
            from cloudtrain.channels import lazyfs

            if reason := lazyfs.unavailable():
                raise UserError(f"data.{name}: fastfile channels are mounted through FUSE here, and {reason}")


def lay_out_channels(
    channels: Mapping[str, ChannelSpec],
    host_dirs: Sequence[Path],
    *,
    cache: ChannelCache,
    manifests: Path,
    s3: Callable[[], Any],
    aws: dict[str, str | None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Mount]:
    """Fill `<host>/input/data/<channel>` of every host (in host order: algo-1 first); the FastFile mounts to make.

    `s3` makes the S3 client, only when a channel is on S3; `aws` tells `lazyfs` where S3 is. Every host's
    File-mode share is fetched in one go (objects already cached are not), before any folder is filled.
    """
    refuse_unreachable(channels)
    count = len(host_dirs)
    client = s3() if any(c.is_s3 for c in channels.values()) else None
    listed = {name: list_channel(client, c.uri) for name, c in channels.items() if c.is_s3 and c.uri}
    for name, objects in listed.items():
        if not objects:
            raise UserError(f"data.{name}: no objects under {channels[name].uri}")
    wanted = [o for name, objects in listed.items() if channels[name].mode == "file" for o in objects]
    if wanted:
        cache.fetch(client, wanted, on_progress)
    mounts: list[Mount] = []
    for name, channel in channels.items():
        for index, host_dir in enumerate(host_dirs):
            dest = host_dir / "input" / "data" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name in listed:
                share = host_share(listed[name], index, count, channel.distribution)
                if channel.mode == "file":
                    cache.link_into(share, dest)
                else:
                    dest.mkdir()
                    manifest = manifests / f"{host_dir.name}-{name}.json"
                    write_manifest(manifest, share, cache, aws)
                    mounts.append(Mount(str(manifest), str(dest)))
            else:
                _link_local(Path(channel.uri or ""), dest, index, count, channel.distribution)
    if mounts:
        (manifests / MOUNTS_FILE).write_text(json.dumps([asdict(m) for m in mounts]))
    return mounts


def load_mounts(manifests: Path) -> list[Mount]:
    try:
        return [Mount(**m) for m in json.loads((manifests / MOUNTS_FILE).read_text())]
    except FileNotFoundError:
        return []


def _link_local(source: Path, dest: Path, index: int, count: int, distribution: str) -> None:
    """A symlink to the channel's folder (no copy); a single file inside a folder of its own; a sharded folder's
    share as a folder of links to its files."""
    if source.is_file():
        dest.mkdir()
        (dest / source.name).symlink_to(source)
    elif distribution == "sharded" and count > 1:
        from cloudtrain.transfer.tarballs import tree_entries

        files = sorted(tree_entries(source)[0])
        dest.mkdir()
        for rel, path in host_share(files, index, count, distribution):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).symlink_to(path)
    else:
        dest.symlink_to(source, target_is_directory=True)

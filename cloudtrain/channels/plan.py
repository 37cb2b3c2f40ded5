"""What each instance copies before its script starts, and how long that takes at a stated throughput.

File mode copies the whole channel to every instance (or, sharded, that instance's share) before the script
starts, and that wait is billed; FastFile and Pipe start at once and fetch as the script reads; FSx for Lustre
and EFS are mounted. `--dry-run` shows it per channel, for the instance with the largest share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtrain.spec.models import ChannelSpec

# An assumed File-mode download rate per instance, stated with every estimate: AWS publishes none, and it varies
# with the instance type, object sizes and the volume (large objects on a recent instance reach several times it).
THROUGHPUT_MB_S = 200.0
LIST_LIMIT = 100_000


@dataclass(frozen=True)
class ChannelCopy:
    channel: str
    mode: str
    distribution: str
    objects: int | None  # None: not known (S3 not reached)
    total_bytes: int | None
    bytes_per_instance: int | None  # copied before the script starts, by the instance with the largest share
    seconds_before_start: float | None
    throughput_mb_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for the dry-run's notes."""
        where = f"data.{self.channel} ({self.mode}, {self.distribution})"
        if self.mode != "file" or self.objects == 0:
            how = "mounted" if self.distribution == "mounted" else "fetched as the script reads"
            return f"{where}: nothing is copied before the script starts ({how})"
        if self.bytes_per_instance is None or self.seconds_before_start is None:
            return f"{where}: copied to each instance before the script starts (size unknown: S3 did not list it)"
        return (
            f"{where}: each instance copies up to {_size(self.bytes_per_instance)} before the script starts, "
            f"{_duration(self.seconds_before_start)} at {self.throughput_mb_s:g} MB/s"
        )


def copy_plan(
    name: str,
    channel: ChannelSpec,
    sizes: Sequence[int] | None,
    instance_count: int,
    throughput_mb_s: float = THROUGHPUT_MB_S,
) -> ChannelCopy:
    """The copy for one channel; `sizes` are its objects' sizes in key order (None when unknown)."""
    distribution = "mounted" if channel.file_system is not None else channel.distribution
    if channel.file_system is not None or channel.mode != "file":
        per = 0
    elif sizes is None:
        per = None
    elif channel.distribution == "sharded" and instance_count > 1:
        per = max(sum(sizes[i::instance_count]) for i in range(instance_count))  # as host_share deals them
    else:
        per = sum(sizes)
    seconds = None if per is None else per / (throughput_mb_s * 1e6)
    return ChannelCopy(
        name,
        channel.mode,
        distribution,
        None if sizes is None else len(sizes),
        None if sizes is None else sum(sizes),
        per,
        seconds,
        throughput_mb_s,
    )


def copies(
    channels: Mapping[str, ChannelSpec], sizes: Mapping[str, Sequence[int] | None], instance_count: int
) -> list[ChannelCopy]:
    return [copy_plan(name, ch, sizes.get(name), instance_count) for name, ch in channels.items()]


def listed_sizes(s3: Any, uri: str, max_objects: int = LIST_LIMIT) -> list[int] | None:
    """The sizes of the objects under an S3 channel, in key order; None past `max_objects` (a dry run lists, it
    does not crawl a bucket of millions)."""
    from cloudtrain.transfer.s3 import S3Location

    prefix = S3Location.parse(uri)
    key_prefix = prefix.key + "/" if prefix.key else ""
    sizes: list[int] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=key_prefix):
        sizes += [int(o["Size"]) for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        if len(sizes) > max_objects:
            return None
    return sizes


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 120:
        return f"about {seconds:.0f} s"
    if seconds < 7200:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"

"""S3 locations, and progress added up across the threads of one transfer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudtrain.errors import UserError, quoted
from cloudtrain.spec.patterns import S3_URI

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key (or key prefix, without a trailing slash)."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        m = S3_URI.match(uri)
        if not m:
            raise UserError(f"{quoted(uri)} is not an S3 URI of the form s3://bucket/prefix")
        return cls(m.group("bucket"), (m.group("key") or "").strip("/"))

    def join(self, *parts: str) -> S3Location:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Location(self.bucket, key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"


class Progress:
    """Adds up bytes from s3transfer's worker threads and reports them to one callback."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self.callback = total, 0, callback
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            done = self.done
        if self.callback is not None:
            self.callback(done, self.total)


def subscriber(progress: Progress) -> Any:
    from s3transfer.subscribers import BaseSubscriber

    class ProgressSubscriber(BaseSubscriber):  # type: ignore[misc]
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress.add(bytes_transferred)

    return ProgressSubscriber()

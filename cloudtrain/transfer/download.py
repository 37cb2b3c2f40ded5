"""Downloads from S3 for fetch-model: parallel ranged GETs to temporary files, verified, renamed into place.

A tarball is extracted while it downloads: its parts land out of order, and an `ArrivingFile` hands the
extractor each byte once every part before it has landed. Fetch time is then about the download's, not the
download's plus the extraction's.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cloudtrain.aws import BODY_ATTEMPTS, backoff, error_code
from cloudtrain.errors import BackendUnavailable, CloudtrainError, UserError, quoted
from cloudtrain.files import atomic_path
from cloudtrain.transfer import checksums
from cloudtrain.transfer.checksums import Reported
from cloudtrain.transfer.s3 import Progress, S3Location
from cloudtrain.transfer.tarballs import safe_extract

PART_SIZE = 8 << 20
LARGE_PART_SIZE = 16 << 20
LARGE_OBJECT = 1 << 30
READ_CHUNK = 1 << 20
STOP_JOIN_S = 5.0  # how long an ended fetch waits for its threads (a GET may be blocked in a read)
EXTRACT_BUFFER = 1 << 20  # tarfile reads 10 KiB at a time: buffered, one wait and one pread per MiB


@dataclass(frozen=True)
class S3Object:
    location: S3Location
    size: int
    etag: str
    dest: Path
    reported: Reported = field(default_factory=lambda: Reported({}))  # S3's full-object checksums
    verify_etag: bool = True  # False where the ETag may not be an MD5 (SSE-KMS, unknown from a listing)

    @property
    def part_size(self) -> int:
        return LARGE_PART_SIZE if self.size > LARGE_OBJECT else PART_SIZE


def head_object(s3: Any, location: S3Location, dest: Path) -> S3Object | None:
    """The object at `location` bound for `dest`, with its size, ETag and checksums; None if there is none."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED")
    except ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404 or error_code(e) in ("404", "NoSuchKey"):
            return None
        raise
    plain = head.get("ServerSideEncryption") != "aws:kms"  # SSE-KMS ETags are not MD5s
    return S3Object(location, int(head["ContentLength"]), head.get("ETag", ""), dest, Reported.of_head(head), plain)


def list_objects(s3: Any, prefix: S3Location, into: Path) -> list[S3Object]:
    """Every object under the prefix, bound for the same relative path under `into`.

    Sizes and ETags come from the listing (no HeadObject per checkpoint file); the ETag pins each
    ranged GET but is not checked as an MD5, since a listing does not tell whether it is one.
    """
    key_prefix = prefix.key + "/" if prefix.key else ""
    found: list[S3Object] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=key_prefix):
        for item in page.get("Contents", []):
            rel = _relative_key(key_prefix, item["Key"])
            if rel is not None:
                location = S3Location(prefix.bucket, item["Key"])
                found.append(S3Object(location, int(item["Size"]), item.get("ETag", ""), into / rel, verify_etag=False))
    return found


def _relative_key(prefix: str, key: str) -> str | None:
    """A checkpoint object's path below the prefix, or None for folder markers; refuses escapes."""
    rel = key[len(prefix) :].lstrip("/") if prefix else key
    if not rel or rel.endswith("/"):
        return None
    parts = PurePosixPath(rel).parts
    if ".." in parts or rel.startswith("/") or "\\" in rel:
        raise UserError(f"refusing checkpoint object with unsafe key {quoted(key)}")
    return rel


def verify(obj: S3Object, path: Path) -> str:
    """Size always; then S3's strongest full-object checksum this install computes, else a plain-MD5 ETag.

    Returns how the file was checked, for fetch-model to say.
    """
    size = path.stat().st_size
    if size != obj.size:
        raise CloudtrainError(f"{obj.location.uri}: downloaded {size} bytes, expected {obj.size}")
    if usable := obj.reported.usable():
        algorithm, expected = usable
        if checksums.of_file(path, algorithm) != expected:
            raise CloudtrainError(f"{obj.location.uri}: {algorithm} checksum mismatch after download")
        return algorithm
    etag = obj.etag.strip('"')
    if obj.verify_etag and re.fullmatch(r"[0-9a-f]{32}", etag):
        if checksums.digest_of_file(path, "MD5").hex() != etag:
            raise CloudtrainError(f"{obj.location.uri}: MD5 does not match the ETag after download")
        return "MD5"
    if missing := obj.reported.unverifiable():
        return f"size only (S3's {missing[0]} needs awscrt: pip install 'cloudtrain[crt]')"
    return "size only"


class _Abandoned(CloudtrainError):
    """The download of a file being read has failed; its own error is the one reported."""


class ArrivingFile(io.RawIOBase):
    """A file being written in parts, in any order, read from the front as each byte becomes readable.

    `landed(start)` marks the part at `start` as written; a read waits until the bytes it returns have
    landed, and raises once `abandon()` is called.
    """

    def __init__(self, path: Path, size: int, part_size: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._size, self._part_size, self._pos = size, part_size, 0
        self._landed: set[int] = set()
        self._ready = 0  # bytes from the start that have landed
        self._abandoned = False
        self._changed = threading.Condition()

    def readable(self) -> bool:
        return True

    def landed(self, start: int) -> None:
        with self._changed:
            self._landed.add(start)
            while self._ready in self._landed:
                self._ready = min(self._ready + self._part_size, self._size)
            self._changed.notify_all()

    def abandon(self) -> None:
        with self._changed:
            self._abandoned = True
            self._changed.notify_all()

    def readinto(self, buffer: Any) -> int:
        with self._changed:
            while self._ready <= self._pos < self._size and not self._abandoned:
                self._changed.wait()
            if self._abandoned:
                raise _Abandoned("the download stopped")
            n = min(len(buffer), self._ready - self._pos)
        data = os.pread(self._fd, n, self._pos) if n > 0 else b""  # pread: macOS before 11 has no preadv
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class DaemonPool:
    """Worker threads that never keep the process alive, unlike ThreadPoolExecutor's (joined at exit): a GET
    blocked in a socket read cannot make an interrupted fetch hang."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._queue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # the caller raises it, as with ThreadPoolExecutor
                    future.set_exception(e)

    def shutdown(self, timeout: float) -> None:
        """Let the workers finish what they run, waiting at most `timeout` seconds in all."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Downloader:
    """Parallel ranged GETs (8-16 MiB parts) streamed to temporary files, so memory stays bounded.

    Every part is fetched with If-Match on the ETag seen by HeadObject, so a file changed mid-way fails
    instead of mixing two versions; each file is renamed into place only once complete and verified.
    """

    def __init__(self, s3: Any, workers: int, progress: Progress) -> None:
        self.s3, self.workers, self.progress = s3, workers, progress
        self._stopping = threading.Event()  # set when a fetch ends early: parts stop at their next chunk

    def _part(self, obj: S3Object, tmp: Path, start: int, end: int, landed: Callable[[int], None] | None) -> None:
        """One ranged GET into its place in tmp; a body cut short is fetched again (botocore does not retry reads)."""
        from botocore.exceptions import ClientError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        for attempt in range(1, BODY_ATTEMPTS + 1):
            written = 0
            try:
                kwargs: dict[str, Any] = {
                    "Bucket": obj.location.bucket,
                    "Key": obj.location.key,
                    "Range": f"bytes={start}-{end}",
                }
                if obj.etag:
                    kwargs["IfMatch"] = obj.etag
                try:
                    body = self.s3.get_object(**kwargs)["Body"]
                except ClientError as e:
                    if error_code(e) == "PreconditionFailed":
                        raise CloudtrainError(f"{obj.location.uri} changed during the download: fetch again") from None
                    raise
                fd = os.open(tmp, os.O_WRONLY)
                try:
                    for chunk in body.iter_chunks(READ_CHUNK):
                        if self._stopping.is_set():
                            raise _Abandoned("the download stopped")
                        os.pwrite(fd, chunk, start + written)
                        written += len(chunk)
                        self.progress.add(len(chunk))
                finally:
                    os.close(fd)
                    body.close()
            except (IncompleteReadError, ReadTimeoutError, ResponseStreamingError) as e:
                self.progress.add(-written)
                if attempt == BODY_ATTEMPTS:
                    raise BackendUnavailable(
                        f"lost the connection downloading {obj.location.uri} (bytes {start}-{end}) "
                        f"{BODY_ATTEMPTS} times in a row ({type(e).__name__}): try again later"
                    ) from None
                if self._stopping.wait(backoff(attempt)):
                    raise _Abandoned("the download stopped") from None
                continue
            if written != end - start + 1:
                raise CloudtrainError(f"{obj.location.uri}: short read of bytes {start}-{end}")
            if landed is not None:
                landed(start)
            return

    def fetch(self, objects: list[S3Object], extract: Mapping[Path, Path] | None = None) -> dict[Path, str]:
        """Every object to its dest; how each was checked (`verify`), by dest.

        An object whose dest is a key of `extract` is also extracted (`safe_extract`) into the folder it
        maps to, while it downloads. A failure of either stops both, and is the one raised.
        """
        extract = extract or {}
        self._stopping.clear()
        with contextlib.ExitStack() as stack:
            temps: list[tuple[S3Object, Path]] = []
            for obj in objects:
                tmp = stack.enter_context(atomic_path(obj.dest))
                with open(tmp, "wb") as f:
                    f.truncate(obj.size)
                temps.append((obj, tmp))
            arriving = {
                obj.dest: stack.enter_context(ArrivingFile(tmp, obj.size, obj.part_size))
                for obj, tmp in temps
                if obj.dest in extract
            }
            pool = DaemonPool(self.workers, "cloudtrain-get")
            extractor = DaemonPool(1, "cloudtrain-extract")
            parts: list[Future[None]] = []
            try:
                extraction = extractor.submit(self._extract, arriving, extract)
                for obj, tmp in temps:
                    landed = arriving[obj.dest].landed if obj.dest in arriving else None
                    for start in range(0, obj.size, obj.part_size):
                        end = min(start + obj.part_size, obj.size) - 1
                        parts.append(pool.submit(self._part, obj, tmp, start, end, landed))

                def cancel_parts_if_failed(future: Future[None]) -> None:
                    if future.exception() is not None:  # a refused member, say: the rest is not wanted
                        for part in parts:
                            part.cancel()

                extraction.add_done_callback(cancel_parts_if_failed)
                done, _ = wait(parts, return_when=FIRST_EXCEPTION)
                _raise_first(f for f in done if not f.cancelled())
                if extraction.done() and extraction.exception() is not None:
                    extraction.result()
                checked = {obj.dest: verify(obj, tmp) for obj, tmp in temps}  # beside the extraction's tail
                extraction.result()
                return checked
            finally:
                # What cannot block comes first, so a second Ctrl-C during the joins leaves nothing waiting: parts
                # stop at their next chunk, the extractor wakes from its wait, and no GET still blocked in a
                # socket read keeps the process alive (daemon threads, joined for a bounded time only).
                self._stopping.set()
                for part in parts:
                    part.cancel()
                for file in arriving.values():
                    file.abandon()
                pool.shutdown(STOP_JOIN_S)
                extractor.shutdown(STOP_JOIN_S)

    @staticmethod
    def _extract(arriving: Mapping[Path, ArrivingFile], into: Mapping[Path, Path]) -> None:
        for dest, file in arriving.items():
            with io.BufferedReader(file, EXTRACT_BUFFER) as stream:
                safe_extract(dest, into[dest], stream=stream)


def _raise_first(futures: Iterable[Future[None]]) -> None:
    for future in futures:
        if future.exception() is not None:
            future.result()

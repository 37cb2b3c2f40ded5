"""A tarball is extracted while its parts download: the reader between them hands out only bytes that have landed."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path

import boto3
import pytest

from cloudtrain.errors import CloudtrainError, UserError
from cloudtrain.transfer.download import PART_SIZE, ArrivingFile, Downloader, head_object
from cloudtrain.transfer.s3 import Progress, S3Location
from cloudtrain.transfer.tarballs import bytes_tarball, safe_extract
from tests.faultproxy import FaultProxy

SMALL_PART = 4


def reader_thread(file: ArrivingFile, n: int) -> tuple[threading.Thread, list[bytes | Exception]]:
    got: list[bytes | Exception] = []

    def read() -> None:
        try:
            got.append(file.read(n))
        except CloudtrainError as e:
            got.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, got


def test_a_read_waits_for_the_part_in_front_then_returns_what_has_landed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"aaaabbbbcc")
    with ArrivingFile(path, 10, SMALL_PART) as file:
        file.landed(4)  # the second part first: nothing is readable yet
        thread, got = reader_thread(file, 100)
        thread.join(0.2)
        assert thread.is_alive() and got == []
        file.landed(0)
        thread.join(5)
        assert got == [b"aaaabbbb"], "both parts, now that the front one is there"
        file.landed(8)
        assert file.read(100) == b"cc"
        assert file.read(100) == b"", "the end"


def test_a_reader_waiting_for_a_part_that_will_not_come_is_woken_with_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\0" * 8)
    with ArrivingFile(path, 8, SMALL_PART) as file:
        thread, got = reader_thread(file, 8)
        file.abandon()
        thread.join(5)
        assert len(got) == 1 and isinstance(got[0], CloudtrainError)


def test_an_empty_file_reads_as_empty_at_once(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with ArrivingFile(tmp_path / "f", 0, SMALL_PART) as file:
        assert file.read(10) == b""


def test_a_tarball_extracts_as_its_parts_land_in_any_order(tmp_path: Path) -> None:
    data = bytes_tarball({"model.keras": bytes(range(256)) * 400, "1/saved_model.pb": b"graph"})
    path = tmp_path / "model.tar.gz"
    path.write_bytes(data)
    with ArrivingFile(path, len(data), 1024) as file:
        starts = list(range(0, len(data), 1024))
        done = threading.Event()

        def extract() -> None:
            safe_extract(path, tmp_path / "model", stream=io.BufferedReader(file, 4096))
            done.set()

        thread = threading.Thread(target=extract, daemon=True)
        thread.start()
        for start in reversed(starts[1:]):
            file.landed(start)
        assert not done.wait(0.2), "nothing is read before the first part"
        file.landed(0)
        thread.join(10)
    assert (tmp_path / "model" / "model.keras").read_bytes() == bytes(range(256)) * 400
    assert (tmp_path / "model" / "1" / "saved_model.pb").read_bytes() == b"graph"


def test_a_streamed_tarball_with_an_unsafe_member_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    data = bytes_tarball({"../escape": b"x"})
    path = tmp_path / "model.tar.gz"
    path.write_bytes(data)
    with ArrivingFile(path, len(data), SMALL_PART) as file:
        for start in range(0, len(data), SMALL_PART):
            file.landed(start)
        with pytest.raises(UserError, match="unsafe path"):
            safe_extract(path, tmp_path / "model", stream=io.BufferedReader(file))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar.gz"]


def test_a_refused_member_stops_the_download_of_the_rest(aws_endpoint: str, tmp_path: Path) -> None:
    """The extraction refuses the archive's first member while its first part is in: the other parts are not fetched."""
    weights = random.Random(1).randbytes(5 * PART_SIZE)
    archive = bytes_tarball({"../escape": b"x", "weights": weights})
    boto3.client("s3").create_bucket(Bucket="ct-downloads")
    boto3.client("s3").put_object(Bucket="ct-downloads", Key="model.tar.gz", Body=archive)
    with FaultProxy(aws_endpoint) as proxy:
        s3 = boto3.client("s3", endpoint_url=proxy.url)
        obj = head_object(s3, S3Location("ct-downloads", "model.tar.gz"), tmp_path / "model.tar.gz")
        assert obj is not None and obj.size > 5 * PART_SIZE
        with pytest.raises(UserError, match="unsafe path"):
            Downloader(s3, 1, Progress(obj.size, None)).fetch([obj], {obj.dest: tmp_path / "model"})
        fetched = len(proxy.seen("GetObject"))
    assert fetched <= 2, f"{fetched} of 6 parts fetched after the first was refused"
    assert list(tmp_path.iterdir()) == [], "nothing left: no tarball, no half-extracted model"

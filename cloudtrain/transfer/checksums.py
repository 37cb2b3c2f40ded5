"""The whole-object checksums S3 reports, computed over a downloaded file to prove it arrived intact.

S3 keeps one of SHA256, SHA1, CRC64NVME, CRC32C or CRC32 per object; since December 2024 an object
uploaded without one gets CRC64NVME, so that is what most models written by SageMaker carry. hashlib
and zlib compute three of them. CRC64NVME and CRC32C have no standard-library implementation: they come
from awscrt (as in botocore) when it is installed, `pip install 'cloudtrain[crt]'`. Without it such an
object is checked by size and ETag pinning only, and fetch-model says so. awscrt is not a default
dependency because botocore loads it, about 40 ms, in every process that makes a client.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALGORITHMS = ("SHA256", "SHA1", "CRC64NVME", "CRC32C", "CRC32")  # S3's, strongest first
NEEDS_CRT = frozenset({"CRC64NVME", "CRC32C"})
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Reported:
    """The full-object checksums a HeadObject answer carries: algorithm -> base64 value."""

    values: Mapping[str, str]

    @classmethod
    def of_head(cls, head: Mapping[str, Any]) -> Reported:
        """Only checksums of the whole object: said so, or implied by a single-part upload (no "-N" ETag).

        A multipart upload's COMPOSITE checksum is a checksum of the parts' checksums, not of the bytes.
        """
        whole = head.get("ChecksumType") == "FULL_OBJECT" or (
            "ChecksumType" not in head and "-" not in head.get("ETag", "")
        )
        values = {a: head[f"Checksum{a}"] for a in ALGORITHMS if whole and head.get(f"Checksum{a}")}
        return cls({a: v for a, v in values.items() if "-" not in v})

    def usable(self) -> tuple[str, str] | None:
        """The strongest (algorithm, value) this install can compute, if any."""
        for algorithm in ALGORITHMS:
            if algorithm in self.values and (algorithm not in NEEDS_CRT or has_crt()):
                return algorithm, self.values[algorithm]
        return None

    def unverifiable(self) -> list[str]:
        """Reported algorithms this install cannot compute (awscrt missing)."""
        return [a for a in ALGORITHMS if a in self.values and a in NEEDS_CRT and not has_crt()]


@functools.cache
def has_crt() -> bool:
    try:
        import awscrt.checksums  # noqa: F401
    except ImportError:
        return False
    return True


def of_file(path: Path, algorithm: str) -> str:
    """The base64 checksum of the file, as S3 writes it (x-amz-checksum-*)."""
    return base64.b64encode(digest_of_file(path, algorithm)).decode()


def digest_of_file(path: Path, algorithm: str) -> bytes:
    """The raw digest of one of S3's algorithms, or MD5 (what a single-part upload's ETag is, in hex)."""
    update, result = _accumulator(algorithm)
    with open(path, "rb") as f:
        while block := f.read(READ_CHUNK):
            update(block)
    return result()


def _accumulator(algorithm: str) -> tuple[Callable[[bytes], None], Callable[[], bytes]]:
    if algorithm in ("SHA256", "SHA1", "MD5"):
        digest = hashlib.new(algorithm.lower(), usedforsecurity=algorithm != "MD5")
        return digest.update, digest.digest
    step = _crc_step(algorithm)
    width = 8 if algorithm == "CRC64NVME" else 4
    crc = 0

    def update(block: bytes) -> None:
        nonlocal crc
        crc = step(block, crc)

    return update, lambda: crc.to_bytes(width, "big")


def _crc_step(algorithm: str) -> Callable[[bytes, int], int]:
    if algorithm == "CRC32":
        return zlib.crc32
    from awscrt import checksums

    if algorithm == "CRC32C":
        return checksums.crc32c
    if algorithm == "CRC64NVME":
        return checksums.crc64nvme
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")

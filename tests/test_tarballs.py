"""cloudtrain.transfer.tarballs: the tarball helpers (hostile archives: tests/test_archive_safety.py)."""

from __future__ import annotations

import io
import tarfile

from cloudtrain.transfer.tarballs import bytes_tarball


def test_tar_helper_sanity() -> None:
    """bytes_tarball makes what SageMaker makes: a gzip'd tar this test suite can read back."""
    with tarfile.open(fileobj=io.BytesIO(bytes_tarball({"a": b"1"})), mode="r:gz") as tar:
        assert tar.getnames() == ["a"]

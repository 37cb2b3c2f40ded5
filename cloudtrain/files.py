"""Writing files so that nothing is ever half-written: atomic replacement and staging folders, and disk
errors under a destination the user chose as one line."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cloudtrain.errors import UserError


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary path beside dest that replaces dest only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def writing_to(dest: Path) -> Iterator[None]:
    """OS errors while writing under dest (disk full, no permission, a file in the way) as one UserError.

    Exit code 2: the destination the user chose cannot take the files; the same command will not work
    until they free space or choose another folder.
    """
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot write to {dest}: {e.strerror or type(e).__name__}") from None


def swap_in(new: Path, dest: Path) -> None:
    """Put `new` (a file or a folder) at `dest`, replacing what is there; on failure dest is as it was."""
    if not (new.is_dir() and dest.exists() and not dest.is_symlink()):
        os.replace(new, dest)
        return
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dest, old)
    try:
        os.replace(new, dest)
    except OSError:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staging_folder(dest: Path) -> Iterator[Path]:
    """A scratch folder inside dest (same filesystem, so `swap_in` is a rename), removed afterwards."""
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch.", suffix=".part", dir=dest))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""Writing files so that nothing is ever half-written: atomic replacement and staging folders, and disk
errors under a destination the user chose as one line.

The one path for every file cloudtrain writes: it never replaces what is not a regular file (a link, a
folder, a FIFO, a device), and its own temporary and backup names are unique, so it never removes a file
of the user's that happens to bear one; a staging folder a killed command left behind is recognised by its
mark and removed by the next command that stages there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cloudtrain.errors import UserError

STAGING_MARK = ".cloudtrain-staging"  # in a staging folder: the pid of the command that made it

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_replaceable(dest: Path) -> None:
    """Refuse (UserError) to write at dest unless nothing is there or a regular file is."""
    try:
        mode = dest.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"cannot write to {dest}: {e.strerror or type(e).__name__}") from None
    kind = next((name for test, name in _KINDS if test(mode)), None)
    if kind is not None:
        raise UserError(f"{dest} is {kind}: cloudtrain replaces only regular files; give another path")


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary path beside dest that replaces dest only if the block succeeds; never a link, folder, FIFO or
    device at dest (`check_replaceable`), checked before and again just before the rename."""
    check_replaceable(dest)
    with writing_to(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        check_replaceable(dest)
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
    """Put `new` (a file or a folder) at `dest`, replacing what is there; on failure dest is as it was.

    What dest held goes first to a folder of a unique name beside `new` (in a staging folder, when new is in
    one), never to a fixed name a file of the user's might have.
    """
    if not (new.is_dir() and dest.exists() and not dest.is_symlink()):
        os.replace(new, dest)
        return
    aside = Path(tempfile.mkdtemp(prefix=".cloudtrain.", suffix=".old", dir=new.parent))
    try:
        old = aside / dest.name
        os.replace(dest, old)
        try:
            os.replace(new, dest)
        except OSError:
            os.replace(old, dest)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


_STAGING_NAME = re.compile(r"\.fetch\.(\d+)\.[^.]+\.part")


@contextlib.contextmanager
def staging_folder(dest: Path) -> Iterator[Path]:
    """A scratch folder inside dest (same filesystem, so `swap_in` is a rename), removed afterwards.

    It holds a mark with this process's id: one left by a command that was killed (SIGKILL, a power cut) is
    removed by the next one, and only folders with such a mark are ever removed. The id is in its name too, for
    the moment between making the folder and writing the mark: a kill then leaves it empty, and an empty folder
    named for a process that is gone is removed as well.
    """
    dest.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(dest)
    staging = Path(tempfile.mkdtemp(prefix=f".fetch.{os.getpid()}.", suffix=".part", dir=dest))
    try:
        (staging / STAGING_MARK).write_text(str(os.getpid()))
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_abandoned_staging(dest: Path) -> None:
    """Remove the staging folders in dest whose command is gone (a mark naming a process that is not alive)."""
    for folder in dest.glob(".fetch.*.part"):
        try:
            pid = int((folder / STAGING_MARK).read_text())
        except (OSError, ValueError):
            named = _STAGING_NAME.fullmatch(folder.name)
            if named and not _alive(int(named[1])):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only where empty: made, then killed before its mark was written
            continue  # otherwise no mark: not known to be ours
        if not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

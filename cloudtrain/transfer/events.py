"""A job's TensorBoard event files, mirrored into a local folder by appending what is new.

Event files only grow (TensorBoard's writers append records), and TensorBoard keeps each one open and reads on
from where it stopped: so a file is brought up to date in place, by appending the bytes past its local size,
never replaced (a reader holding the old file would not see the new records). A file that shrank (rewritten
from scratch) is fetched again whole. Each backend lists its files and reads byte ranges; this does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cloudtrain.errors import UserError, quoted
from cloudtrain.transfer.tarballs import iter_tree


@dataclass(frozen=True)
class EventFile:
    """One file of a job's TensorBoard folder: its path below the folder and its size there now."""

    name: str
    size: int


ReadRange = Callable[[EventFile, int], bytes]  # (file, start) -> its bytes from start to its listed size


def mirror(files: Iterable[EventFile], dest: Path, read: ReadRange) -> int:
    """Bring every file under `dest` up to its listed size; returns the bytes fetched."""
    fetched = 0
    for file in files:
        path = dest / _safe_name(file.name)
        have = path.stat().st_size if path.is_file() else 0
        if have == file.size:
            continue
        start = have if have < file.size else 0
        data = read(file, start)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "r+b" if path.is_file() else "wb") as out:
            out.seek(start)
            out.write(data)
            out.truncate()
        fetched += len(data)
    return fetched


def mirror_folder(source: Path, dest: Path) -> int:
    """`mirror` from a folder on this machine (the local backend's chief); nothing when it does not exist yet."""
    files = [EventFile(name, path.stat().st_size) for name, path in iter_tree(source)] if source.is_dir() else []

    def read(file: EventFile, start: int) -> bytes:
        with open(source / file.name, "rb") as f:
            f.seek(start)
            return f.read(file.size - start)

    return mirror(files, dest, read)


def _safe_name(name: str) -> str:
    """A relative path that stays below the folder (a listing comes from outside)."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name:
        raise UserError(f"refusing TensorBoard file with unsafe name {quoted(name)}")
    return name

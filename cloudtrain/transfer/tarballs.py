"""Tarballs made reproducibly and extracted safely, and the folder walk that says what a tarball holds.

Reproducible: the same tree gives the same bytes (sorted entries, fixed mtime, owner and mode,
gzip without a timestamp), so code is content-addressed and uploaded once. Safe: extraction
refuses absolute paths, `..`, links that point outside, and device files, and goes to a
temporary folder renamed into place, so a failed extraction leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from cloudtrain.errors import UserError, quoted
from cloudtrain.files import atomic_path, swap_in, writing_to
from cloudtrain.transfer import checksums

EXCLUDED_NAMES = frozenset({"__pycache__", ".git", ".ipynb_checkpoints", ".DS_Store", ".pytest_cache"})
_FIXED_MTIME = 0
GZIP_MAGIC = b"\x1f\x8b"
INFLATE_CHUNK = 64 << 10  # compressed bytes a read inflates at once
INFLATED_MAX = 1 << 20  # and the most it makes of them (zeros inflate a thousandfold)
SPARSE_BLOCK = 64 << 10  # a block of zeros this long in an extracted file is a hole, not written


def iter_tree(root: Path, *, links: bool = False) -> Iterator[tuple[str, Path]]:
    """(archive name, path) of every file under root in a stable order, skipping caches and VCS.

    With `links`, symlinks to folders are listed too (as entries; never walked into).
    """
    for dirpath, dirnames, filenames in os.walk(root):
        linked = [d for d in dirnames if links and os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_NAMES and d not in linked)
        for name in sorted([*filenames, *linked]):
            if name in EXCLUDED_NAMES or name.endswith(".pyc"):
                continue
            path = Path(dirpath) / name
            yield path.relative_to(root).as_posix(), path


PACK_RULE = "links are packed only where they point to a file inside the folder, and special files never"


def tree_entries(root: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """The files under root to pack (code and data folders alike) and each entry left out, with why.

    One rule for both: regular files are packed; a symlink only where it leads to a regular file inside
    root (so `~/.aws/credentials` is never uploaded through a link); FIFOs, sockets and devices never (a
    FIFO would block the read forever).
    """
    top = root.resolve()
    files: list[tuple[str, Path]] = []
    left_out: list[str] = []
    for name, path in iter_tree(root, links=True):
        try:
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                files.append((name, path))
                continue
            if not stat.S_ISLNK(mode):
                left_out.append(f"{name} (not a regular file)")
                continue
            target = path.resolve()
            if not target.exists():
                left_out.append(f"{name} -> {os.readlink(path)} (a dangling link)")
            elif not target.is_relative_to(top):
                left_out.append(f"{name} -> {os.readlink(path)} (outside the folder)")
            elif not stat.S_ISREG(target.stat().st_mode):
                left_out.append(f"{name} -> {os.readlink(path)} (not a regular file)")
            else:
                files.append((name, target))
        except FileNotFoundError:
            continue  # gone since the folder was listed (a running job's checkpoint rotation): not there to pack
        except OSError as e:
            left_out.append(f"{name} ({e.strerror or e})")
    return files, left_out


def left_out_note(what: str, left_out: list[str]) -> str | None:
    """One line saying what a folder's packing left out, or None."""
    if not left_out:
        return None
    shown = ", ".join(left_out[:3]) + (f" and {len(left_out) - 3} more" if len(left_out) > 3 else "")
    return f"{what}: left out {shown} ({PACK_RULE})"


def tarinfo(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = _FIXED_MTIME
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def make_tarball(dest: Path, files: Iterable[tuple[str, Path]], *, mtimes: bool = False) -> str:
    """Write a reproducible .tar.gz of (archive name, path) pairs to dest; return its sha256.

    With `mtimes`, each file keeps its modification time (a model or checkpoints, where the time says
    something; code is addressed by content, so its tarball has none).
    """
    entries = sorted(files)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(dest) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in entries:
            if path.is_symlink() or not path.is_file():
                continue
            info = tarinfo(name, path.stat().st_size, os.access(path, os.X_OK))
            if mtimes:
                info.mtime = int(path.stat().st_mtime)
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return sha256_file(dest)


def tar_directory(src: Path, dest: Path) -> str:
    """.tar.gz of a whole folder, with its files' times (as SageMaker packs model/ and output/data/)."""
    return make_tarball(dest, iter_tree(src), mtimes=True)


def sha256_file(path: Path) -> str:
    """The file's SHA-256 in hex: how code and data are addressed in S3."""
    return checksums.digest_of_file(path, "SHA256").hex()


def _check_member(member: tarfile.TarInfo, archive: str, links: set[PurePosixPath]) -> None:
    """Refuse what could write outside the extraction folder; `links` are the archive's symlinks seen so far."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or member.name.startswith(("/", "\\")):
        raise UserError(f"{archive}: refusing unsafe path {quoted(member.name)}")
    if member.isdev() or member.isfifo():
        raise UserError(f"{archive}: refusing device or fifo entry {quoted(member.name)}")
    if any(parent in links for parent in name.parents):
        # A path through a symlink goes wherever the link points: lexical checks cannot follow it.
        raise UserError(f"{archive}: refusing {quoted(member.name)}, which goes through a link in the archive")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        start = PurePosixPath() if member.islnk() else name.parent
        if target.is_absolute() or not _stays_inside(start, target, links):
            raise UserError(
                f"{archive}: refusing link {quoted(member.name)} -> {quoted(member.linkname)} outside the archive"
            )
        if member.issym():
            links.add(name)


def _checked_members(tar: tarfile.TarFile, archive: str) -> Iterator[tarfile.TarInfo]:
    """The archive's members as they come, each refused before it is extracted if unsafe (see `_check_member`)."""
    links: set[PurePosixPath] = set()
    for member in tar:
        _check_member(member, archive, links)
        yield member


def _stays_inside(start: PurePosixPath, target: PurePosixPath, links: set[PurePosixPath]) -> bool:
    """Whether `target`, followed from folder `start`, stays inside the archive without passing through a symlink.

    A link to a link is fine (each was checked on its own); a path that goes on from a link is not.
    """
    parts = [p for p in start.parts if p != "."]
    for i, part in enumerate(target.parts):
        if part == "..":
            if not parts:
                return False
            parts.pop()
        elif part != ".":
            parts.append(part)
            if i < len(target.parts) - 1 and PurePosixPath(*parts) in links:
                return False
    return True


class _SparseTarFile(tarfile.TarFile):
    """Extracts every file sparsely: a run of zeros is skipped over, not written, so a sparse file (a
    preallocated dataset, a disk image) takes no more disk extracted than it took packed, on every host."""

    def makefile(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        if tarinfo.sparse is not None:  # a GNU sparse member says where its holes are: tarfile knows how
            super().makefile(tarinfo, targetpath)  # type: ignore[misc]
            return
        source = self.fileobj
        assert source is not None
        source.seek(tarinfo.offset_data)
        with open(targetpath, "wb") as target:
            left = tarinfo.size
            while left:
                block = source.read(min(left, SPARSE_BLOCK))
                if not block:
                    raise tarfile.ReadError("unexpected end of data")
                if block.count(0) == len(block):
                    target.seek(len(block), os.SEEK_CUR)
                else:
                    target.write(block)
                left -= len(block)
            target.truncate()  # the file's size, where it ends in zeros that were skipped


class _BadGzip(Exception):
    """Raised through tarfile (which would turn a zlib.error into a vaguer ReadError): the message says what."""


class _Gunzip:
    """A gzip stream inflated as it is read, each member's CRC-32 and length checked at its end.

    tarfile's own streaming reader checks neither: a flipped byte in a stored (incompressible) block,
    which is most of a model's weights, would be extracted without a word.
    """

    def __init__(self, source: io.BufferedIOBase) -> None:
        self._source, self._inflate = source, zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._out, self._pos = b"", 0

    def read(self, size: int) -> bytes:
        while self._pos >= len(self._out):
            if self._inflate.eof:  # a member ended, its check passed; another may follow
                rest = self._inflate.unused_data or self._source.read(2)
                if not rest or not rest.startswith(GZIP_MAGIC[: len(rest)]):
                    return b""  # what follows is not gzip: ignored, as gzip -d does
                self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                self._out, self._pos = self._inflated(rest), 0
                continue
            chunk = self._inflate.unconsumed_tail or self._source.read(INFLATE_CHUNK)
            if not chunk:
                raise EOFError("the archive ends before its gzip stream does")
            self._out, self._pos = self._inflated(chunk), 0
        data = self._out[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def _inflated(self, data: bytes) -> bytes:
        try:
            return self._inflate.decompress(data, INFLATED_MAX)
        except zlib.error as e:
            for check, what in (("incorrect data check", "CRC-32"), ("incorrect length check", "length")):
                if check in str(e):
                    raise _BadGzip(f"corrupt (its gzip {what} does not match its contents)") from None
            raise _BadGzip(f"not a readable tar.gz archive ({e})") from None

    def drain(self) -> None:
        """Read to the end, so that the last member's check runs (tarfile stops at the archive's end marker)."""
        while self.read(INFLATE_CHUNK):
            pass


def safe_extract(archive: Path, dest: Path, *, stream: io.BufferedReader | None = None) -> Path:
    """Extract a .tar.gz into dest (replacing it) via a temporary folder; refuse unsafe entries.

    The archive is read from `stream` when given (`archive` then only names it in errors). A gzip
    archive's CRC-32 is checked. dest is left as it was on any failure: a refused entry, a broken or
    corrupt archive, a full disk.
    """
    with writing_to(dest), contextlib.ExitStack() as stack:
        source = stream if stream is not None else stack.enter_context(open(archive, "rb"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
        try:
            try:
                # One pass, as a stream: a .tar.gz opened for random access is inflated twice or more
                # (listing the members, then seeking back to extract them), three times as slow.
                gunzip = _Gunzip(source) if source.peek(2)[:2] == GZIP_MAGIC else None
                with _SparseTarFile.open(archive, "r|" if gunzip else "r|*", fileobj=gunzip or source) as tar:
                    # tarfile's own "data" filter backs ours up where Python has it (3.10.12+, 3.11.4+).
                    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    tar.extractall(tmp, members=_checked_members(tar, archive.name), **extra)
                tmp.chmod(_folder_mode())  # mkdtemp's 700 would become dest's: a folder as mkdir makes it
                if gunzip:
                    gunzip.drain()
            except _BadGzip as e:
                raise UserError(f"{archive.name}: {e}") from None
            except tarfile.FilterError as e:  # tarfile's own check, behind ours
                raise UserError(f"{archive.name}: refusing unsafe entry ({e})") from None
            except (tarfile.TarError, EOFError) as e:
                raise UserError(f"{archive.name}: not a readable tar.gz archive ({e})") from None
            swap_in(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _folder_mode() -> int:
    """0o777 less the umask (read without changing it: os.umask alone can only set it)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o777 & ~int(line.split()[1], 8)
    return 0o755


def bytes_tarball(files: dict[str, bytes]) -> bytes:
    """A small reproducible .tar.gz in memory (tests and generated build contexts)."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(files):
            data = files[name]
            tar.addfile(tarinfo(name, len(data), False), io.BytesIO(data))
    return buf.getvalue()


def json_member(fileobj: Any, name: str, max_bytes: int) -> Any:
    """The JSON file `name` inside a .tar.gz (a job's output.tar.gz holds eval_report.json), or None; refuses a
    member bigger than `max_bytes`."""
    import json

    with tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
        for member in tar:
            if member.name.lstrip("./") == name and member.isfile():
                if member.size > max_bytes:
                    raise ValueError(f"{name} is {member.size} bytes")
                data = tar.extractfile(member)
                return json.loads(data.read()) if data is not None else None
    return None

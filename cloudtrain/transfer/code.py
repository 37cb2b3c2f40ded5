"""The code tarball (`sourcedir.tar.gz`): what it holds, its digest, and building it.

The digest is over what the tarball holds (names, modes, contents), not its gzip bytes, so one tree has one
digest on both backends and an unchanged tree is never packed again: docs/architecture.md, "The code tarball".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

import cloudtrain
from cloudtrain.errors import UserError, quoted
from cloudtrain.files import atomic_path
from cloudtrain.transfer.tarballs import iter_tree, left_out_note, tarinfo, tree_entries

if TYPE_CHECKING:
    from cloudtrain.spec.models import CodeSpec

CODE_TARBALL = "sourcedir.tar.gz"
RUNTIME_PACKAGE = "cloudtrain"
RUNTIME_STUB = (
    '"""cloudtrain\'s in-container runtime, shipped in sourcedir.tar.gz (only cloudtrain.runtime is included)."""\n'
    f'\n__version__ = "{cloudtrain.__version__}"\n'
)
# Part of every code digest: bump it when the tarball's layout or encoding changes, so no tarball of the
# old format is taken for the new one.
PACKAGE_FORMAT = "cloudtrain sourcedir.tar.gz format 1"
# gzip level 1: ~5x faster than 9 for a few % more bytes; building costs more than sending the difference
# on any uplink faster than about 1 MiB/s.
GZIP_LEVEL = 1


Source = Path | bytes  # a file to pack, or the contents of a generated one (the runtime's stub)


@dataclass(frozen=True)
class CodeTree:
    """What sourcedir.tar.gz holds, and its digest (which names it in S3), before any tarball is built."""

    entries: tuple[tuple[str, Source], ...]  # (archive name, source) in name order
    sha256: str
    size: int  # bytes of the files, uncompressed
    runtime_included: bool
    note: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.entries)


@dataclass(frozen=True)
class CodePackage:
    """A built sourcedir.tar.gz and the digest of what it holds (`CodeTree.sha256`, not the gzip bytes' hash)."""

    path: Path
    sha256: str
    size: int  # of the tarball
    names: tuple[str, ...]
    runtime_included: bool
    note: str | None = None


def runtime_files(package_dir: Path | None = None) -> list[tuple[str, Path]]:
    """(archive name, path) of every `cloudtrain/runtime/**/*.py` of the installed package."""
    root = (package_dir or Path(cloudtrain.__file__).parent) / "runtime"
    if not root.is_dir():
        return []
    return [(f"{RUNTIME_PACKAGE}/runtime/{name}", path) for name, path in iter_tree(root) if name.endswith(".py")]


def _user_ships_cloudtrain(names: Iterable[str]) -> bool:
    return any(n == f"{RUNTIME_PACKAGE}.py" or n.startswith(f"{RUNTIME_PACKAGE}/") for n in names)


def code_files(
    code: CodeSpec, *, package_dir: Path | None = None, extra: Sequence[tuple[str, Path]] = ()
) -> tuple[dict[str, Source], bool, str | None]:
    """The archive's (name → file or contents) map, whether cloudtrain's runtime is in it, and a note for the user.

    `extra` entries (tf-keras packed for AWS's image, `cloudtrain.transfer.vendor`) are added whatever source_dir holds.
    """
    source = Path(code.source_dir)
    if not source.is_dir():
        raise UserError(f"code.source_dir {quoted(str(source), 200)} is not a folder")
    entries, left_out = tree_entries(source)
    files: dict[str, Source] = dict(entries)
    note = left_out_note("code.source_dir", left_out)
    if code.requirements and PurePosixPath(code.requirements).as_posix() != "requirements.txt":
        if "requirements.txt" in files:
            packed = f"packed {code.requirements} as requirements.txt in place of source_dir's own requirements.txt"
            note = f"{note}; {packed}" if note else packed
        files["requirements.txt"] = source / code.requirements
    files.update(extra)
    if _user_ships_cloudtrain(files):
        extra = "source_dir has its own cloudtrain package: it is shipped instead of cloudtrain's runtime"
        return files, False, f"{note}; {extra}" if note else extra
    files[f"{RUNTIME_PACKAGE}/__init__.py"] = RUNTIME_STUB.encode()
    files.update(runtime_files(package_dir))
    return files, True, note


def _packable(source: Source) -> bool:
    """Regular files and generated contents; symlinks and special files are left out (as make_tarball does)."""
    return isinstance(source, bytes) or (not source.is_symlink() and source.is_file())


def _mode(source: Source) -> int:
    """The entry's mode in the tarball: 0o755 for an executable file, else 0o644."""
    return 0o755 if isinstance(source, Path) and os.access(source, os.X_OK) else 0o644


class _Digest:
    """The code digest, fed one entry at a time in name order."""

    def __init__(self) -> None:
        self._outer = hashlib.sha256(f"{PACKAGE_FORMAT}\n".encode())
        self.size = 0

    def add(self, name: str, mode: int, size: int, sha256: str) -> None:
        self._outer.update(json.dumps([name, f"{mode:o}", size, sha256]).encode() + b"\n")
        self.size += size

    def hexdigest(self) -> str:
        return self._outer.hexdigest()


class _HashingReader:
    """A file object that hashes what tarfile reads from it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.sha256.update(block)
        self.size += len(block)
        return block


def code_tree(code: CodeSpec, *, package_dir: Path | None = None, extra: Sequence[tuple[str, Path]] = ()) -> CodeTree:
    """The tarball's entries and digest, by streaming every file through sha256; no tarball is written."""
    files, runtime_included, note = code_files(code, package_dir=package_dir, extra=extra)
    entries = tuple((name, files[name]) for name in sorted(files) if _packable(files[name]))
    digest = _Digest()
    for name, source in entries:
        if isinstance(source, bytes):
            digest.add(name, _mode(source), len(source), hashlib.sha256(source).hexdigest())
        else:
            with open(source, "rb") as f:
                reader = _HashingReader(f)
                while reader.read(1 << 20):
                    pass
            digest.add(name, _mode(source), reader.size, reader.sha256.hexdigest())
    return CodeTree(entries, digest.hexdigest(), digest.size, runtime_included, note)


def write_code_tarball(dest: Path, entries: Sequence[tuple[str, Source]]) -> str:
    """Write a reproducible .tar.gz of the entries (same contents, same bytes) and return the digest of what was
    packed, hashed from the bytes as they went in."""
    digest = _Digest()
    with (
        atomic_path(dest) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, source in sorted(entries, key=lambda e: e[0]):
            mode = _mode(source)
            with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as f:
                size = os.fstat(f.fileno()).st_size if isinstance(source, Path) else len(source)
                reader = _HashingReader(f)
                tar.addfile(tarinfo(name, size, mode == 0o755), reader)  # type: ignore[arg-type]
            digest.add(name, mode, reader.size, reader.sha256.hexdigest())
    return digest.hexdigest()


def tarball_digest(path: Path) -> str:
    """The code digest of a built sourcedir.tar.gz (what `code_tree` gives for the tree it was packed from)."""
    digest = _Digest()
    with tarfile.open(path, "r:gz") as tar:
        members = sorted((m for m in tar if m.isfile()), key=lambda m: m.name)
        for member in members:
            data = tar.extractfile(member)
            assert data is not None
            reader = _HashingReader(data)
            while reader.read(1 << 20):
                pass
            digest.add(member.name, member.mode & 0o777, reader.size, reader.sha256.hexdigest())
    return digest.hexdigest()


def build_code_package(
    code: CodeSpec,
    workdir: Path,
    *,
    package_dir: Path | None = None,
    tree: CodeTree | None = None,
    extra: Sequence[tuple[str, Path]] = (),
) -> CodePackage:
    """Write a reproducible sourcedir.tar.gz into workdir (same tree, same bytes, same digest).

    With `tree` (the digest a submit already looked up in S3), a file that changed since is a UserError.
    """
    tree = tree or code_tree(code, package_dir=package_dir, extra=extra)
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / CODE_TARBALL
    try:
        packed = write_code_tarball(dest, tree.entries)
    except OSError as e:  # a file deleted, shrunk or made unreadable since it was hashed
        what = e.filename or "a file"
        raise UserError(
            f"code.source_dir {quoted(str(code.source_dir), 200)}: cannot pack {what}: {e.strerror or e}"
        ) from None
    if packed != tree.sha256:
        dest.unlink(missing_ok=True)
        raise UserError(
            f"code.source_dir {quoted(str(code.source_dir), 200)}: files changed while being packed: try again"
        )
    return CodePackage(dest, packed, dest.stat().st_size, tree.names, tree.runtime_included, tree.note)

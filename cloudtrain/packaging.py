"""The code tarball (`sourcedir.tar.gz`) and the content-addressed uploads of code and local data.

The tarball holds `code.source_dir`'s files at its root, as the SageMaker SDK packs it, plus
cloudtrain's in-container runtime (`cloudtrain/__init__.py` as a small stub and every
`cloudtrain/runtime/**/*.py`), so AWS's stock TensorFlow image runs a cloudtrain job with nothing
installed. If source_dir has its own `cloudtrain/` package (or a `cloudtrain.py`), theirs wins whole
and none of ours is added: the user ships exactly what they tested, and a merge of two versions of
one package could mix incompatible files. When `code.requirements` is not the root
`requirements.txt`, it is packed as the root `requirements.txt`, the only one script mode installs.

Everything is content-addressed, so an unchanged tree is uploaded once: code under
`<prefix>/code/<code digest>/sourcedir.tar.gz` (skipped when HeadObject finds it), a local data channel
under `<prefix>/data/<tree hash>/` with a manifest at `<prefix>/data/<tree hash>.json` written last
(outside the channel's prefix, so SageMaker does not download it), skipped when the manifest exists.
Uploads go through s3transfer (multipart above 16 MiB, 8 in flight).

The code digest is a sha256 over what the tarball holds, not over its gzip bytes: the packaging format
version, then per entry in name order its name, mode, size and the sha256 of its contents (cloudtrain's
runtime files and version stub are entries too). It is computed by streaming the files through sha256,
about 1 GB/s, so an unchanged tree costs one HeadObject and no tarball; the tarball (gzip is the slow
part: ~1 s for 50 MB at level 1, ~6 s at level 9) is built only when S3 lacks it, and the digest is
computed again from the very bytes packed, so a file changed meanwhile is an error, never a tarball
stored under another tree's name. `tarball_digest` gives the same digest from a built tarball (the
local backend's job folder keeps one), so `compare` reads one hash for both backends.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import cloudtrain
from cloudtrain.archive import _tarinfo, atomic_path, iter_tree, left_out_note, sha256_file, tree_entries
from cloudtrain.errors import UserError, quoted
from cloudtrain.patterns import S3_URI

if TYPE_CHECKING:
    from cloudtrain.spec import CodeSpec

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
MIB = 1 << 20
MULTIPART_THRESHOLD = 16 * MIB
MULTIPART_CHUNKSIZE = 16 * MIB
MAX_CONCURRENCY = 8

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


@dataclass(frozen=True)
class TreeFile:
    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class TreeDigest:
    """A local data channel's files and the hash of their names and contents."""

    sha256: str
    files: tuple[TreeFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Upload:
    """One content-addressed upload; `uploaded_bytes` is 0 when the content was already there.

    `exists` is whether S3 had it before (None when unknown: a plan made without reaching AWS).
    """

    kind: str
    name: str
    local: str
    s3_uri: str
    sha256: str
    size: int
    exists: bool | None
    uploaded_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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

    `extra` entries (tf-keras packed for AWS's image, `cloudtrain.vendor`) are added whatever source_dir holds.
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
                tar.addfile(_tarinfo(name, size, mode == 0o755), reader)  # type: ignore[arg-type]
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


def tree_digest(location: Path) -> TreeDigest:
    """Hash of a file or folder by names and contents: the same data always gets the same S3 prefix."""
    if location.is_file():
        entries = [(location.name, location)]
    elif location.is_dir():
        entries = tree_entries(location)[0]
    else:
        raise UserError(f"data {quoted(str(location), 200)} does not exist")
    files = tuple(TreeFile(name, path, path.stat().st_size, sha256_file(path)) for name, path in sorted(entries))
    outer = hashlib.sha256()
    for f in files:
        outer.update(f"{f.name}\0{f.size}\0{f.sha256}\n".encode())
    return TreeDigest(outer.hexdigest(), files)


def code_location(prefix: S3Location, code: CodeTree | CodePackage) -> S3Location:
    return prefix.join("code", code.sha256, CODE_TARBALL)


def data_location(prefix: S3Location, digest: TreeDigest) -> tuple[S3Location, S3Location]:
    """The channel's prefix and its manifest (a sibling, outside the prefix SageMaker downloads)."""
    return prefix.join("data", digest.sha256), prefix.join("data", f"{digest.sha256}.json")


def channel_uri(location: S3Location) -> str:
    """S3Prefix URI of a data prefix; the trailing slash keeps `<hash>.json` out of the channel."""
    return location.uri + "/"


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


def _subscriber(progress: Progress) -> Any:
    from s3transfer.subscribers import BaseSubscriber

    class ProgressSubscriber(BaseSubscriber):  # type: ignore[misc]
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress.add(bytes_transferred)

    return ProgressSubscriber()


class S3Uploader:
    """Content-addressed uploads through one S3 client; `dry_run` only checks what exists."""

    def __init__(
        self,
        s3: Any,
        *,
        kms_key_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        dry_run: bool = False,
    ) -> None:
        self.s3, self.kms_key_id, self.on_progress, self.dry_run = s3, kms_key_id, on_progress, dry_run

    @property
    def extra_args(self) -> dict[str, str]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {}

    def exists(self, location: S3Location) -> bool:
        """HeadObject: found, or not (403 counts as not found, as S3 answers it without ListBucket)."""
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=location.bucket, Key=location.key)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (403, 404) or e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _transfer(self, items: list[tuple[Path, S3Location]]) -> int:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        total = sum(path.stat().st_size for path, _ in items)
        progress = Progress(total, self.on_progress)
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNKSIZE,
            max_concurrency=MAX_CONCURRENCY,
        )
        with create_transfer_manager(self.s3, config) as manager:
            futures = [
                manager.upload(
                    str(path), dest.bucket, dest.key, extra_args=self.extra_args, subscribers=[_subscriber(progress)]
                )
                for path, dest in items
            ]
            for future in futures:
                future.result()
        return total

    def upload_code(self, code: CodeSpec, tree: CodeTree, prefix: S3Location, *, exists: bool | None = None) -> Upload:
        """The code tarball under its digest: built (in a temporary folder) and sent only when S3 lacks it.

        `exists` is a HeadObject answer the caller has already; `size` is the files' bytes, `uploaded_bytes` the
        tarball's when it was sent.
        """
        dest = code_location(prefix, tree)
        exists = self.exists(dest) if exists is None else exists
        sent = 0
        if not exists and not self.dry_run:
            with tempfile.TemporaryDirectory(prefix="cloudtrain-code-") as tmp:
                package = build_code_package(code, Path(tmp), tree=tree)
                sent = self._transfer([(package.path, dest)])
        return Upload("code", CODE_TARBALL, str(code.source_dir), dest.uri, tree.sha256, tree.size, exists, sent)

    def upload_channel(
        self,
        channel: str,
        location: Path,
        prefix: S3Location,
        digest: TreeDigest | None = None,
        *,
        exists: bool | None = None,
    ) -> Upload:
        digest = digest or tree_digest(location)
        folder, manifest = data_location(prefix, digest)
        exists = self.exists(manifest) if exists is None else exists
        sent = 0
        if not exists and not self.dry_run:
            sent = self._transfer([(f.path, folder.join(f.name)) for f in digest.files])
            body = {
                "sha256": digest.sha256,
                "source": str(location),
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in digest.files],
                "created_by": f"cloudtrain {cloudtrain.__version__}",
            }
            self.s3.put_object(
                Bucket=manifest.bucket,
                Key=manifest.key,
                Body=json.dumps(body, indent=1, sort_keys=True).encode(),
                ContentType="application/json",
                **self.extra_args,
            )
        return Upload("data", channel, str(location), channel_uri(folder), digest.sha256, digest.size, exists, sent)

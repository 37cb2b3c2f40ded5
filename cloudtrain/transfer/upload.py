"""Content-addressed uploads of the code tarball and local data folders: an unchanged tree is sent once.

Code goes under `<prefix>/code/<code digest>/sourcedir.tar.gz` (skipped when HeadObject finds it); a local
data channel under `<prefix>/data/<tree hash>/` with a manifest at `<prefix>/data/<tree hash>.json` written
last (outside the channel's prefix, so SageMaker does not download it), skipped when the manifest exists.

An interrupted channel upload resumes: the prefix is the tree's hash, so an object already there with the file's
name and size is that file (PutObject and CompleteMultipartUpload are atomic) and is not sent again, and a large
file's multipart upload left open is continued from the parts S3 lists. A tree's digest is kept per file by
path, size and mtime (`DigestCache`), so an unchanged tree is listed, not read.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudtrain
from cloudtrain.errors import UserError, quoted
from cloudtrain.files import atomic_path
from cloudtrain.transfer.code import CODE_TARBALL, CodePackage, CodeTree, build_code_package
from cloudtrain.transfer.s3 import Progress, ProgressCallback, S3Location, subscriber
from cloudtrain.transfer.tarballs import sha256_file, tree_entries

if TYPE_CHECKING:
    from cloudtrain.spec.models import CodeSpec

MIB = 1 << 20
MULTIPART_THRESHOLD = 16 * MIB
MULTIPART_CHUNKSIZE = 16 * MIB
MAX_CONCURRENCY = 8


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


class DigestCache:
    """Each file's SHA-256 by absolute path, size and mtime, one JSON file per tree under `root`.

    A file whose mtime is within `RACY_S` of the hashing is not kept: it could change again within the
    timestamp's resolution without its size or mtime telling (git's "racily clean" entries).
    """

    RACY_S = 2.0

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _file(self, tree: Path) -> Path:
        return self.root / f"{hashlib.sha256(str(tree).encode()).hexdigest()}.json"

    def load(self, tree: Path) -> dict[str, list[Any]]:
        try:
            data = json.loads(self._file(tree).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, tree: Path, entries: dict[str, list[Any]]) -> None:
        try:
            with atomic_path(self._file(tree)) as tmp:
                tmp.write_text(json.dumps(entries, separators=(",", ":")))
        except OSError:
            pass  # a cache that cannot be written only costs the next submit a re-hash


def tree_digest(location: Path, cache: DigestCache | None = None) -> TreeDigest:
    """Hash of a file or folder by names and contents: the same data always gets the same S3 prefix.

    With a `cache`, a file whose size and mtime are unchanged since it was last hashed is not read again.
    """
    if location.is_file():
        entries = [(location.name, location)]
    elif location.is_dir():
        entries = tree_entries(location)[0]
    else:
        raise UserError(f"data {quoted(str(location), 200)} does not exist")
    key = location.resolve()
    known = cache.load(key) if cache is not None else {}
    kept: dict[str, list[Any]] = {}
    now = time.time()
    files = []
    for name, path in sorted(entries):
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        cached = known.get(str(path))
        sha = cached[2] if cached is not None and cached[:2] == stamp else sha256_file(path)
        if now - st.st_mtime > DigestCache.RACY_S:
            kept[str(path)] = [*stamp, sha]
        files.append(TreeFile(name, path, st.st_size, sha))
    if cache is not None and kept != known:
        cache.save(key, kept)
    outer = hashlib.sha256()
    for f in files:
        outer.update(f"{f.name}\0{f.size}\0{f.sha256}\n".encode())
    return TreeDigest(outer.hexdigest(), tuple(files))


def code_location(prefix: S3Location, code: CodeTree | CodePackage) -> S3Location:
    return prefix.join("code", code.sha256, CODE_TARBALL)


def data_location(prefix: S3Location, digest: TreeDigest) -> tuple[S3Location, S3Location]:
    """The channel's prefix and its manifest (a sibling, outside the prefix SageMaker downloads)."""
    return prefix.join("data", digest.sha256), prefix.join("data", f"{digest.sha256}.json")


def channel_uri(location: S3Location) -> str:
    """S3Prefix URI of a data prefix; the trailing slash keeps `<hash>.json` out of the channel."""
    return location.uri + "/"


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
                    str(path), dest.bucket, dest.key, extra_args=self.extra_args, subscribers=[subscriber(progress)]
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
        """The channel's files under its tree hash, then the manifest; only what S3 lacks is sent (a resume)."""
        digest = digest or tree_digest(location)
        folder, manifest = data_location(prefix, digest)
        exists = self.exists(manifest) if exists is None else exists
        sent = 0
        if not exists and not self.dry_run:
            there = self._listed(folder)
            missing = [f for f in digest.files if there.get(f.name) != f.size]
            sent = self._send(missing, folder)
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

    def _listed(self, folder: S3Location) -> dict[str, int]:
        """Objects already under the channel's prefix (an earlier, interrupted upload's), name -> size."""
        found: dict[str, int] = {}
        start = folder.key + "/"
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=folder.bucket, Prefix=start):
            found.update({item["Key"][len(start) :]: int(item["Size"]) for item in page.get("Contents", [])})
        return found

    def _send(self, files: list[TreeFile], folder: S3Location) -> int:
        """Small files through s3transfer; large ones as multipart uploads that a later call can continue."""
        small = [(f.path, folder.join(f.name)) for f in files if f.size < MULTIPART_THRESHOLD]
        sent = self._transfer(small) if small else 0
        large = [f for f in files if f.size >= MULTIPART_THRESHOLD]
        if large:
            progress = Progress(sum(f.size for f in large), self.on_progress)
            for f in large:
                sent += self._multipart(f.path, folder.join(f.name), f.size, progress)
        return sent

    def _multipart(self, path: Path, dest: S3Location, size: int, progress: Progress) -> int:
        """One file as a multipart upload, continuing one left open for the same key: only missing parts go.

        A failed or interrupted upload is not aborted: its parts are what the next submit resumes from (a
        bucket lifecycle rule for incomplete multipart uploads cleans up after one that never comes back).
        """
        upload_id, done = self._open_upload(dest)
        parts = [(n, start, min(MULTIPART_CHUNKSIZE, size - start)) for n, start in _part_starts(size)]
        for number, _, length in parts:
            if done.get(number, (None, -1))[1] == length:
                progress.add(length)  # already there: counted as done, not as sent
        todo = [p for p in parts if done.get(p[0], (None, -1))[1] != p[2]]

        def put(part: tuple[int, int, int]) -> tuple[int, str]:
            number, start, length = part
            with open(path, "rb") as f:
                f.seek(start)
                body = f.read(length)
            answer = self.s3.upload_part(
                Bucket=dest.bucket, Key=dest.key, UploadId=upload_id, PartNumber=number, Body=body
            )
            progress.add(length)
            return number, answer["ETag"]

        pool = ThreadPoolExecutor(MAX_CONCURRENCY, thread_name_prefix="cloudtrain-part")
        try:
            for number, etag in pool.map(put, todo):
                done[number] = (etag, -1)
        finally:  # on a failure the parts not started are not sent: the next submit resumes from those that were
            pool.shutdown(wait=True, cancel_futures=True)
        self.s3.complete_multipart_upload(
            Bucket=dest.bucket,
            Key=dest.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": done[n][0]} for n, _, _ in parts]},
        )
        return sum(length for _, _, length in todo)

    def _open_upload(self, dest: S3Location) -> tuple[str, dict[int, tuple[str, int]]]:
        """The newest multipart upload left open for `dest` and its parts (number -> ETag, size), or a new one."""
        listed = self.s3.list_multipart_uploads(Bucket=dest.bucket, Prefix=dest.key).get("Uploads", [])
        mine = sorted((u for u in listed if u["Key"] == dest.key), key=lambda u: u["Initiated"])
        if mine:
            upload_id = mine[-1]["UploadId"]
            done: dict[int, tuple[str, int]] = {}
            for page in self.s3.get_paginator("list_parts").paginate(
                Bucket=dest.bucket, Key=dest.key, UploadId=upload_id
            ):
                done.update({p["PartNumber"]: (p["ETag"], int(p["Size"])) for p in page.get("Parts", [])})
            return upload_id, done
        created = self.s3.create_multipart_upload(Bucket=dest.bucket, Key=dest.key, **self.extra_args)
        return created["UploadId"], {}


def _part_starts(size: int) -> list[tuple[int, int]]:
    """(part number, offset) of each part of a file, MULTIPART_CHUNKSIZE each but the last."""
    return [(i + 1, start) for i, start in enumerate(range(0, size, MULTIPART_CHUNKSIZE))]

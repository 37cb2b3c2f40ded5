"""Content-addressed uploads of the code tarball and local data folders: an unchanged tree is sent once.

Code goes under `<prefix>/code/<code digest>/sourcedir.tar.gz` (skipped when HeadObject finds it); a local
data channel under `<prefix>/data/<tree hash>/` with a manifest at `<prefix>/data/<tree hash>.json` written
last (outside the channel's prefix, so SageMaker does not download it), skipped when the manifest exists.
Uploads go through s3transfer (multipart above 16 MiB, 8 in flight).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudtrain
from cloudtrain.errors import UserError, quoted
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

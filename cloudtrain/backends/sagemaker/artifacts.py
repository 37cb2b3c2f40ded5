"""What a SageMaker job leaves in S3 (model.tar.gz, output.tar.gz, checkpoints, TensorBoard files): where each
is, from the job's description, and how `fetch-model`, `compare` and `tensorboard` read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudtrain.aws import error_code
from cloudtrain.backends.contract import TARBALL_KINDS
from cloudtrain.files import staging_folder, swap_in
from cloudtrain.jobs import Artifacts
from cloudtrain.transfer.download import Downloader, S3Object, head_object, list_objects
from cloudtrain.transfer.events import EventFile, mirror
from cloudtrain.transfer.s3 import Progress, ProgressCallback, S3Location

TENSORBOARD_S3_FOLDER = "tensorboard-output"  # AWS uploads to <S3OutputPath>/<job>/tensorboard-output/
OUTPUT_READ_MAX_BYTES = 64 << 20  # output.tar.gz read into memory for its report; bigger: fetch-model it first


def artifact_uris(raw: Mapping[str, Any]) -> dict[str, str]:
    """Where a job's model.tar.gz, output.tar.gz (beside it), checkpoints and TensorBoard files are, from its
    description. The last are under `<S3OutputPath>/<job>/tensorboard-output`, where AWS uploads them (the
    sagemaker SDK's `latest_job_tensorboard_artifacts_path`)."""
    job = raw["TrainingJobName"]
    model = raw.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model:
        output_path = raw.get("OutputDataConfig", {}).get("S3OutputPath")
        model = S3Location.parse(output_path).join(job, "output", "model.tar.gz").uri if output_path else None
    uris: dict[str, str] = {}
    if model:
        uris["model"] = model
        uris["output"] = model.rsplit("/", 1)[0] + "/output.tar.gz"
    checkpoints = raw.get("CheckpointConfig", {}).get("S3Uri")
    if checkpoints:
        uris["checkpoints"] = checkpoints
    tensorboard = raw.get("TensorBoardOutputConfig", {}).get("S3OutputPath")
    if tensorboard:
        uris["tensorboard"] = S3Location.parse(tensorboard).join(job, TENSORBOARD_S3_FOLDER).uri
    return uris


def fetch(
    s3: Any, uris: Mapping[str, str], dest: Path, *, workers: int, on_progress: ProgressCallback | None
) -> Artifacts:
    """model.tar.gz and output.tar.gz downloaded beside and extracted into dest/model, dest/output;
    the checkpoints and TensorBoard prefixes mirrored into dest/checkpoints, dest/tensorboard. A missing one
    gives None.

    Everything is downloaded and extracted in a staging folder in dest first, then swapped in: a fetch
    that fails (a dropped connection, a full disk, a refused archive) leaves dest as it was.
    on_progress(done_bytes, total_bytes) is called from the download threads.
    """
    with staging_folder(dest) as staging:
        tarballs: dict[str, S3Object] = {}
        for kind in TARBALL_KINDS:
            if kind in uris:
                obj = head_object(s3, S3Location.parse(uris[kind]), staging / f"{kind}.tar.gz")
                if obj is not None:
                    tarballs[kind] = obj
        checkpoints: list[S3Object] = []
        if "checkpoints" in uris:
            checkpoints = list_objects(s3, S3Location.parse(uris["checkpoints"]), staging / "checkpoints")
        events: list[S3Object] = []
        if "tensorboard" in uris:
            events = list_objects(s3, S3Location.parse(uris["tensorboard"]), staging / "tensorboard")
        objects = [*tarballs.values(), *checkpoints, *events]
        progress = Progress(sum(o.size for o in objects), on_progress)
        extract = {obj.dest: staging / kind for kind, obj in tarballs.items()}
        checked = Downloader(s3, workers, progress).fetch(objects, extract) if objects else {}
        folders = [name for name, found in (("checkpoints", checkpoints), ("tensorboard", events)) if found]
        names = [*tarballs, *(f"{kind}.tar.gz" for kind in tarballs), *folders]
        for name in names:
            swap_in(staging / name, dest / name)
    return Artifacts(
        model=dest / "model" if "model" in tarballs else None,
        output=dest / "output" if "output" in tarballs else None,
        checkpoints=dest / "checkpoints" if checkpoints else None,
        tensorboard=dest / "tensorboard" if events else None,
        checked={obj.dest.name: checked[obj.dest] for obj in tarballs.values()},
    )


def read_output(s3: Any, uri: str) -> bytes | None:
    """An ended job's output.tar.gz, read into memory (bounded: a bigger one is fetch-model's); None if missing."""
    from botocore.exceptions import ClientError

    location = S3Location.parse(uri)
    try:
        head = s3.head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as e:
        if error_code(e) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    if head["ContentLength"] > OUTPUT_READ_MAX_BYTES:
        raise ValueError(f"{uri} is {head['ContentLength'] >> 20} MiB; fetch-model it first")
    return bytes(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())


def sync_tensorboard(s3: Any, uri: str, dest: Path) -> int:
    """The job's TensorBoard event files under uri mirrored into dest: one listing, then a ranged GET of what each
    file gained since the last call (see `cloudtrain.transfer.events`); returns the bytes fetched."""
    objects = {o.dest.relative_to(dest).as_posix(): o for o in list_objects(s3, S3Location.parse(uri), dest)}

    def read(file: EventFile, start: int) -> bytes:
        where = objects[file.name].location
        answer = s3.get_object(Bucket=where.bucket, Key=where.key, Range=f"bytes={start}-{file.size - 1}")
        return bytes(answer["Body"].read())

    return mirror((EventFile(name, o.size) for name, o in objects.items()), dest, read)

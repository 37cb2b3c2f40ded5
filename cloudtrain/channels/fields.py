"""A channel's options as SageMaker's API and its containers spell them: the CreateTrainingJob Channel and the
container's inputdataconfig.json entry. Written once, for the request builder and the local backend alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtrain.spec.models import ChannelSpec

INPUT_MODES = {"file": "File", "fastfile": "FastFile", "pipe": "Pipe"}
DISTRIBUTIONS = {"replicated": "FullyReplicated", "sharded": "ShardedByS3Key"}
COMPRESSIONS = {"none": "None", "gzip": "Gzip"}
FILE_SYSTEMS = {"fsx_lustre": "FSxLustre", "efs": "EFS"}


def sagemaker_channel(name: str, channel: ChannelSpec, s3_uri: str | None = None) -> dict[str, Any]:
    """The Channel of a CreateTrainingJob request, as the sagemaker SDK v2 sends it for the same options.

    `s3_uri` is where a local folder was uploaded. `InputMode` is set only where it differs from the job's
    `TrainingInputMode` (File), as `TrainingInput(input_mode=...)` does; a file system channel has no
    distribution (`FileSystemInput`).
    """
    if channel.file_system is not None:
        fs = channel.file_system
        source: dict[str, Any] = {
            "FileSystemDataSource": {
                "FileSystemId": fs.id,
                "FileSystemType": FILE_SYSTEMS[fs.type],
                "DirectoryPath": fs.path,
                "FileSystemAccessMode": fs.access,
            }
        }
    else:
        source = {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": s3_uri or channel.uri,
                "S3DataDistributionType": DISTRIBUTIONS[channel.distribution],
            }
        }
    out: dict[str, Any] = {
        "ChannelName": name,
        "DataSource": source,
        "CompressionType": COMPRESSIONS[channel.compression],
        "RecordWrapperType": "None",
    }
    if channel.content_type:
        out["ContentType"] = channel.content_type
    if channel.mode != "file":
        out["InputMode"] = INPUT_MODES[channel.mode]
    return out


def container_channel(channel: ChannelSpec) -> dict[str, str]:
    """The channel's entry in /opt/ml/input/config/inputdataconfig.json, as SageMaker writes it on an instance
    (and AWS's toolkit hands on to the script in SM_INPUT_DATA_CONFIG)."""
    out = {"ContentType": channel.content_type} if channel.content_type else {}
    out.update(
        TrainingInputMode=INPUT_MODES[channel.mode],
        S3DistributionType=DISTRIBUTIONS[channel.distribution],
        RecordWrapperType="None",
    )
    if channel.compression != "none":
        out["CompressionType"] = COMPRESSIONS[channel.compression]
    return out


def from_sagemaker_channel(channel: dict[str, Any]) -> ChannelSpec:
    """The channel options a CreateTrainingJob Channel asks for (what an instance is given), S3Prefix or a file
    system; the inverse of `sagemaker_channel`."""
    from cloudtrain.spec.models import ChannelSpec, FileSystemSpec

    mode = {v: k for k, v in INPUT_MODES.items()}[channel.get("InputMode", "File")]
    compression = {v: k for k, v in COMPRESSIONS.items()}[channel.get("CompressionType", "None")]
    source = channel["DataSource"]
    if "FileSystemDataSource" in source:
        fs = source["FileSystemDataSource"]
        kind = {v: k for k, v in FILE_SYSTEMS.items()}[fs["FileSystemType"]]
        file_system = FileSystemSpec(
            type=kind, id=fs["FileSystemId"], path=fs["DirectoryPath"], access=fs["FileSystemAccessMode"]
        )
        return ChannelSpec(file_system=file_system, mode=mode, content_type=channel.get("ContentType"))
    s3 = source["S3DataSource"]
    distribution = {v: k for k, v in DISTRIBUTIONS.items()}[s3.get("S3DataDistributionType", "FullyReplicated")]
    return ChannelSpec(
        uri=s3["S3Uri"],
        mode=mode,
        distribution=distribution,
        compression=compression,
        content_type=channel.get("ContentType"),
    )

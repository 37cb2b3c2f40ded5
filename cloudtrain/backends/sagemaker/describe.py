"""What SageMaker says of a training job (DescribeTrainingJob, Search, or the request just accepted), as the
`JobInfo` every caller reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cloudtrain.backends.sagemaker.artifacts import artifact_uris
from cloudtrain.jobs import JobInfo, Transition

NAME = "sagemaker"  # as jobs are recorded


def _failure_reason(reason: str | None) -> str | None:
    """AWS's FailureReason, or the one line that names a known failure's cause and fix (AWS's toolkit writes the
    script's error output there, a tensor dump for Keras 3 under MultiWorkerMirroredStrategy)."""
    from cloudtrain.runtime.failures import explain

    return (explain(reason) or reason) if reason else reason


def epoch_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def job_info(raw: Mapping[str, Any], tags: list[dict[str, str]] | None = None) -> JobInfo:
    """A DescribeTrainingJob (or Search) record as a JobInfo."""
    transitions = tuple(
        Transition(
            t["Status"],
            epoch_seconds(t.get("StartTime")) or 0.0,
            epoch_seconds(t.get("EndTime")),
            t.get("StatusMessage", ""),
        )
        for t in raw.get("SecondaryStatusTransitions", [])
    )
    billable = raw.get("BillableTimeInSeconds")
    training = raw.get("TrainingTimeInSeconds")
    savings = None
    if raw.get("EnableManagedSpotTraining") and billable is not None and training:
        savings = round((1 - billable / training) * 100, 1)
    resources = raw.get("ResourceConfig", {})
    return JobInfo(
        name=raw["TrainingJobName"],
        backend=NAME,
        status=raw["TrainingJobStatus"],
        secondary_status=raw.get("SecondaryStatus", ""),
        failure_reason=_failure_reason(raw.get("FailureReason")),
        created=epoch_seconds(raw.get("CreationTime")),
        ended=epoch_seconds(raw.get("TrainingEndTime")),
        instance_type=resources.get("InstanceType", ""),
        instance_count=int(resources.get("InstanceCount", 1)),
        transitions=transitions,
        metrics={m["MetricName"]: float(m["Value"]) for m in raw.get("FinalMetricDataList", [])},
        artifacts=artifact_uris(raw),
        billable_seconds=billable,
        spot_savings_percent=savings,
        tags={t["Key"]: t["Value"] for t in (tags if tags is not None else raw.get("Tags", []))},
    )


def created_job_info(request: Mapping[str, Any], created: float) -> JobInfo:
    """What DescribeTrainingJob would say of a job CreateTrainingJob has just accepted (InProgress, Starting),
    from the request itself: a submit needs no DescribeTrainingJob and no ListTags after it."""
    raw = {
        "TrainingJobName": request["TrainingJobName"],
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Starting",
        "CreationTime": created,
        "ResourceConfig": request["ResourceConfig"],
        "OutputDataConfig": request["OutputDataConfig"],
        "CheckpointConfig": request.get("CheckpointConfig", {}),
        "TensorBoardOutputConfig": request.get("TensorBoardOutputConfig", {}),
        "EnableManagedSpotTraining": request.get("EnableManagedSpotTraining", False),
    }
    return job_info(raw, request.get("Tags", []))

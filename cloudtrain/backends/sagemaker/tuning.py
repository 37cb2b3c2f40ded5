"""A sweep on SageMaker: CreateHyperParameterTuningJob made from the job's own CreateTrainingJob request, and a
tuning job's description read back as a `SweepInfo`.

The training job definition is the CreateTrainingJob request a plain submit of the spec would send (same
image, code tarball by content hash, channels, spot, checkpoints, KMS, VPC, metric definitions, environment),
moved into the fields a tuning job takes: the tuned hyperparameters leave the static ones, ResourceConfig
becomes HyperParameterTuningResourceConfig (as the sagemaker SDK v2 sends it), and what a definition has no
field for (the TensorBoard output, warm pools, SageMaker's metrics time series) is left out. docs/sweeps.md
lists where the request differs from the SDK's tuner, and why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cloudtrain.jobs import JobInfo
from cloudtrain.sweep.space import STRATEGY, from_sagemaker_ranges, static_hyperparameters, tuning_config
from cloudtrain.sweep.trials import EARLY_STOPPING, SweepInfo, Trial

if TYPE_CHECKING:
    from cloudtrain.spec.ceiling import SweepCost
    from cloudtrain.spec.models import JobSpec

DEFINITION_FIELDS = (  # CreateTrainingJob fields a HyperParameterTrainingJobDefinition takes as they are
    "RoleArn",
    "InputDataConfig",
    "VpcConfig",
    "OutputDataConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)
ALGORITHM_FIELDS = ("TrainingImage", "TrainingInputMode", "MetricDefinitions")
RESOURCE_FIELDS = ("InstanceType", "InstanceCount", "VolumeSizeInGB", "VolumeKmsKeyId")
WARM_START = {"identical_data_and_algorithm": "IdenticalDataAndAlgorithm", "transfer_learning": "TransferLearning"}


def tuning_request(
    training: Mapping[str, Any], spec: JobSpec, name: str, cost: SweepCost, parents: Iterable[str] = ()
) -> dict[str, Any]:
    """CreateHyperParameterTuningJob's arguments from the job's CreateTrainingJob request (`build_request`)."""
    sweep = spec.sweep
    assert sweep is not None
    definition: dict[str, Any] = {
        "StaticHyperParameters": static_hyperparameters(training["HyperParameters"], sweep),
        "AlgorithmSpecification": {
            k: training["AlgorithmSpecification"][k]
            for k in ALGORITHM_FIELDS
            if k in training["AlgorithmSpecification"]
        },
        "HyperParameterTuningResourceConfig": {
            k: training["ResourceConfig"][k] for k in RESOURCE_FIELDS if k in training["ResourceConfig"]
        },
    }
    definition.update({k: training[k] for k in DEFINITION_FIELDS if k in training})
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": tuning_config(sweep, max_runtime_s=cost.runtime_limit_s),
        "TrainingJobDefinition": definition,
    }
    parents = list(parents)
    if parents:
        assert sweep.warm_start is not None
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": p} for p in parents],
            "WarmStartType": WARM_START[sweep.warm_start.type],
        }
    if training.get("Tags"):
        request["Tags"] = training["Tags"]
    return request


def sweep_row(summary: Mapping[str, Any]) -> JobInfo:
    """A HyperParameterTuningJobSummary as the job list's row of a sweep."""
    from cloudtrain.backends.sagemaker.describe import epoch_seconds

    counters = summary.get("TrainingJobStatusCounters", {})
    done = sum(counters.get(k, 0) for k in ("Completed", "Stopped", "NonRetryableError"))
    total = summary.get("ResourceLimits", {}).get("MaxNumberOfTrainingJobs", 0)
    return JobInfo(
        name=summary["HyperParameterTuningJobName"],
        backend="sagemaker",
        status=summary["HyperParameterTuningJobStatus"],
        secondary_status=f"{done}/{total} trials",
        created=epoch_seconds(summary.get("CreationTime")),
        ended=epoch_seconds(summary.get("HyperParameterTuningEndTime")),
        kind="sweep",
    )


def _value(text: Any) -> Any:
    """A tuned value as SageMaker reports it (text; categoricals JSON-encoded) back to a number where it is one."""
    value = text
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def sweep_info(
    raw: Mapping[str, Any],
    summaries: Iterable[Mapping[str, Any]],
    *,
    spec: Mapping[str, Any],
    epoch_seconds: Any,
    billed: Any,
) -> SweepInfo:
    """A DescribeHyperParameterTuningJob and its ListTrainingJobsForHyperParameterTuningJob as a SweepInfo.

    `spec` is the spec cloudtrain recorded at submit (its `sweep.parameters` for the report; {} if unknown);
    billable time is read as the trial's training time (the listing has no BillableTimeInSeconds: spot trials
    are billed less), priced by `billed(instance_seconds, instance_type)`.
    """
    config = raw["HyperParameterTuningJobConfig"]
    definition = raw.get("TrainingJobDefinition", {})
    resources = definition.get("HyperParameterTuningResourceConfig") or definition.get("ResourceConfig") or {}
    count = int(resources.get("InstanceCount", 1))
    instance_type = resources.get("InstanceType", "")
    stopped_by_user = raw["HyperParameterTuningJobStatus"] in ("Stopping", "Stopped")
    trials = []
    for s in sorted(summaries, key=lambda s: epoch_seconds(s.get("CreationTime")) or 0.0):
        start, end = epoch_seconds(s.get("TrainingStartTime")), epoch_seconds(s.get("TrainingEndTime"))
        seconds = int(end - start) if start is not None and end is not None else None
        objective = s.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
        reason = s.get("FailureReason")
        if s.get("TrainingJobStatus") == "Stopped" and not stopped_by_user and reason is None:
            reason = EARLY_STOPPING  # the tuning job stopped it: its own status says nobody else did
        trials.append(
            Trial(
                name=s["TrainingJobName"],
                status=s["TrainingJobStatus"],
                hyperparameters={k: _value(v) for k, v in s.get("TunedHyperParameters", {}).items()},
                objective=None if objective is None else float(objective),
                failure_reason=reason,
                created=epoch_seconds(s.get("CreationTime")),
                ended=end,
                billable_seconds=seconds,
                instance_count=count,
                cost_usd=billed(None if seconds is None else seconds * count, instance_type),
            )
        )
    objective = config["HyperParameterTuningJobObjective"]
    sweep = spec.get("sweep") or {}
    static = definition.get("StaticHyperParameters", {})
    ranges = config.get("ParameterRanges", {})
    tuned = {r["Name"] for kind in ranges.values() for r in kind}
    names = {k for k in static if not k.startswith("sagemaker_") and k != "model_dir"} | tuned
    best = raw.get("BestTrainingJob", {}).get("TrainingJobName")
    return SweepInfo(
        name=raw["HyperParameterTuningJobName"],
        backend="sagemaker",
        status=raw["HyperParameterTuningJobStatus"],
        metric=objective["MetricName"],
        goal=objective["Type"].lower(),
        strategy=next((k for k, v in STRATEGY.items() if v == config.get("Strategy")), "bayesian"),
        max_trials=int(config["ResourceLimits"]["MaxNumberOfTrainingJobs"]),
        max_parallel=int(config["ResourceLimits"]["MaxParallelTrainingJobs"]),
        trials=tuple(trials),
        created=epoch_seconds(raw.get("CreationTime")),
        ended=epoch_seconds(raw.get("HyperParameterTuningEndTime")),
        failure_reason=raw.get("FailureReason"),
        instance_type=instance_type,
        max_cost=sweep.get("max_cost"),
        best_name=best,
        parameters=sweep.get("parameters") or from_sagemaker_ranges(ranges),
        hyperparameter_names=tuple(sorted(names)),
        instance_count=count,
    )

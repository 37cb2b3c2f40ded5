"""The search space: the spec's ranges as SageMaker's ParameterRanges and as Optuna's distributions.

Both sides see the same values: a categorical's values are JSON-encoded as the sagemaker SDK sends them
(`"\"32\""`, which SageMaker hands the script as `"32"`, and script mode's argv as `32`); an integer range
with `scale: auto` stays Auto (SageMaker picks), locally linear.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtrain.spec.sweep import ParameterRange, SweepSpec

SCALING = {"auto": "Auto", "linear": "Linear", "log": "Logarithmic", "reverse_log": "ReverseLogarithmic"}
STRATEGY = {"bayesian": "Bayesian", "random": "Random", "grid": "Grid", "hyperband": "Hyperband"}
GOAL = {"maximize": "Maximize", "minimize": "Minimize"}


def _bound(value: float | None, integer: bool) -> str:
    assert value is not None
    return str(int(value)) if integer else f"{value:g}" if math.isfinite(value) else str(value)


def sagemaker_ranges(parameters: Mapping[str, ParameterRange]) -> dict[str, list[dict[str, Any]]]:
    """ParameterRanges of CreateHyperParameterTuningJob, in the SDK's order (continuous, categorical, integer)."""
    out: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
        "IntegerParameterRanges": [],
    }
    for name, rng in parameters.items():
        if rng.kind == "categorical":
            assert rng.values is not None
            out["CategoricalParameterRanges"].append({"Name": name, "Values": [categorical(v) for v in rng.values]})
            continue
        integer = rng.kind == "integer"
        key = "IntegerParameterRanges" if integer else "ContinuousParameterRanges"
        out[key].append(
            {
                "Name": name,
                "MinValue": _bound(rng.min, integer),
                "MaxValue": _bound(rng.max, integer),
                "ScalingType": SCALING[rng.scale],
            }
        )
    return {key: ranges for key, ranges in out.items() if ranges}


def categorical(value: Any) -> str:
    """A categorical value as the SDK sends it: the JSON of its text (`32` -> `"32"`)."""
    return json.dumps(str(value).lower() if isinstance(value, bool) else str(value))


def tuning_config(sweep: SweepSpec, *, max_runtime_s: int | None = None) -> dict[str, Any]:
    """HyperParameterTuningJobConfig for the sweep; `max_runtime_s` is the dollar ceiling's limit, if any."""
    limits: dict[str, Any] = {
        "MaxNumberOfTrainingJobs": sweep.max_trials,
        "MaxParallelTrainingJobs": sweep.max_parallel,
    }
    if max_runtime_s is not None:
        limits["MaxRuntimeInSeconds"] = max_runtime_s
    config: dict[str, Any] = {
        "Strategy": STRATEGY[sweep.strategy],
        "ResourceLimits": limits,
        "TrainingJobEarlyStoppingType": "Auto" if sweep.early_stopping == "auto" else "Off",
    }
    if sweep.seed is not None:
        config["RandomSeed"] = sweep.seed
    config["HyperParameterTuningJobObjective"] = {
        "Type": GOAL[sweep.objective.goal],
        "MetricName": sweep.objective.metric,
    }
    config["ParameterRanges"] = sagemaker_ranges(sweep.parameters)
    return config


def static_hyperparameters(hyperparameters: Mapping[str, str], sweep: SweepSpec) -> dict[str, str]:
    """The job's own hyperparameters (as CreateTrainingJob sends them) minus the tuned ones."""
    return {k: v for k, v in hyperparameters.items() if k not in sweep.parameters}


def require_optuna() -> None:
    """A one-line error, before anything starts, where `cloudtrain[sweep]` is not installed."""
    import importlib.util

    from cloudtrain.errors import UserError

    missing = [m for m in ("optuna", "plotly") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"sweeps need {' and '.join(missing)} (local trials, the sweep report): pip install 'cloudtrain[sweep]'"
        )


def optuna_distributions(parameters: Mapping[str, ParameterRange]) -> dict[str, Any]:
    """Optuna's distribution per range. Reverse-log samples 1 - x on a log scale, as SageMaker's does."""
    import optuna

    out: dict[str, Any] = {}
    for name, rng in parameters.items():
        if rng.kind == "categorical":
            assert rng.values is not None
            out[name] = optuna.distributions.CategoricalDistribution(list(rng.values))
        elif rng.kind == "integer":
            assert rng.min is not None and rng.max is not None
            out[name] = optuna.distributions.IntDistribution(int(rng.min), int(rng.max), log=rng.scale == "log")
        elif rng.scale == "reverse_log":
            assert rng.min is not None and rng.max is not None
            # sampled as 1 - value on a log scale: dense near max, as SageMaker's ReverseLogarithmic
            out[name] = optuna.distributions.FloatDistribution(1 - rng.max, 1 - rng.min, log=True)
        else:
            assert rng.min is not None and rng.max is not None
            out[name] = optuna.distributions.FloatDistribution(rng.min, rng.max, log=rng.scale == "log")
    return out


def from_optuna(parameters: Mapping[str, ParameterRange], sampled: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters from Optuna's sampled values (reverse-log turned back)."""
    return {
        name: 1 - sampled[name] if rng.scale == "reverse_log" and rng.kind == "continuous" else sampled[name]
        for name, rng in parameters.items()
    }


def to_optuna(parameters: Mapping[str, ParameterRange], values: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters as Optuna samples them (reverse-log as 1 - x): `from_optuna`'s inverse."""
    out = dict(values)
    for name, rng in parameters.items():
        if rng.scale == "reverse_log" and rng.kind == "continuous" and name in out:
            with contextlib.suppress(TypeError, ValueError):
                out[name] = 1 - float(out[name])
    return out


def grid(parameters: Mapping[str, ParameterRange]) -> dict[str, list[Any]]:
    """GridSampler's search space: every categorical's values."""
    return {name: list(rng.values or []) for name, rng in parameters.items()}


def from_sagemaker_ranges(ranges: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """ParameterRanges back to the spec's `parameters:` (JSON), for a tuning job cloudtrain has no spec of."""
    scales = {v: k for k, v in SCALING.items()}
    out: dict[str, dict[str, Any]] = {}
    for r in ranges.get("CategoricalParameterRanges", []):
        values = []
        for v in r["Values"]:
            try:
                values.append(json.loads(v))
            except ValueError:
                values.append(v)
        out[r["Name"]] = {"values": values}
    for key, kind in (("ContinuousParameterRanges", "continuous"), ("IntegerParameterRanges", "integer")):
        for r in ranges.get(key, []):
            out[r["Name"]] = {
                "min": float(r["MinValue"]),
                "max": float(r["MaxValue"]),
                "type": kind,
                "scale": scales.get(r.get("ScalingType", "Auto"), "auto"),
            }
    return out


def fits(values: Mapping[str, Any], distributions: Mapping[str, Any]) -> dict[str, Any] | None:
    """An earlier trial's values in these distributions' types, or None if any is missing or out of range
    (warm start: a parent's trial that this sweep's space cannot hold is left out)."""
    import optuna

    out: dict[str, Any] = {}
    for name, dist in distributions.items():
        if name not in values:
            return None
        value = values[name]
        try:
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                value = next(c for c in dist.choices if str(c) == str(value).strip('"'))
            else:
                value = int(float(value)) if isinstance(dist, optuna.distributions.IntDistribution) else float(value)
                if not dist.low <= value <= dist.high:
                    return None
        except (StopIteration, TypeError, ValueError):
            return None
        out[name] = value
    return out

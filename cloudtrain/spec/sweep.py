"""The `sweep:` section of a job spec: a hyperparameter search, as SageMaker's tuning API bounds one.

Every limit here is AWS's (botocore's service model and the tuning developer guide) or a rule a tuning job
would only break after instances were paid for; `JobSpec` checks what needs the rest of the spec (the
objective among `metrics`, Hyperband's `epochs`). Pydantic only: `cloudtrain.sweep` maps these to SageMaker's
ParameterRanges and to Optuna's distributions.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from cloudtrain.spec.base import FieldError, Strict
from cloudtrain.spec.patterns import METRIC_NAME_PATTERN

MAX_RANGES = 30  # ParameterRanges: at most 30 in all
MAX_VALUES = 30  # a categorical range's Values
MAX_VALUE_CHARS = 2500  # a hyperparameter value, as SageMaker stores it (categoricals JSON-encoded)
MAX_TUNING_METRICS = 20  # the tuning developer guide's limit on a tuning job's metric definitions
MAX_PARENTS = 5  # WarmStartConfig.ParentHyperParameterTuningJobs
MAX_TRIALS = 750  # training jobs per tuning job
EPOCHS_KEYS = ("epochs", "num_epochs", "n_epochs", "epoch")  # where Hyperband reads its MaxResource


def _number(x: float) -> str:
    return f"{x:g}"


def _on_off(value: Any) -> Any:
    """YAML reads a bare `off` (and `on`) as a boolean: `early_stopping: off` means "off"."""
    return ("auto" if value else "off") if isinstance(value, bool) else value


class Objective(Strict):
    """What the sweep optimises: one of the spec's `metrics`, as the chief prints it."""

    metric: str = Field(pattern=METRIC_NAME_PATTERN, description="The name of one of the spec's metrics.")
    goal: Literal["maximize", "minimize"] = Field("maximize", description="Whether higher or lower is better.")


class ParameterRange(Strict):
    """A range to search: `{min, max}` (continuous, or `type: integer`) or `{values: [...]}` (categorical)."""

    min: float | None = Field(None, description="The lowest value (with max; whole for type: integer).")
    max: float | None = Field(None, description="The highest value, above min.")
    type: Literal["continuous", "integer"] | None = Field(None, description="Default continuous; with min/max.")
    scale: Literal["auto", "linear", "log", "reverse_log"] = Field(
        "auto", description="How values are sampled; SageMaker's ScalingType."
    )
    values: list[str | int | float | bool] | None = Field(
        None,
        min_length=1,
        max_length=MAX_VALUES,
        description="A categorical range's values (at most 30), instead of min/max.",
    )

    @property
    def kind(self) -> Literal["continuous", "integer", "categorical"]:
        return "categorical" if self.values is not None else (self.type or "continuous")

    @model_validator(mode="after")
    def _bounds(self) -> ParameterRange:
        if self.values is not None:
            for name in ("min", "max", "type"):
                if getattr(self, name) is not None:
                    raise FieldError(name, "give either values (categorical) or min and max, not both")
            if self.scale != "auto":
                raise FieldError("scale", "applies to min/max ranges, not to values")
            if len(set(map(json.dumps, self.values))) != len(self.values):
                raise FieldError("values", "has the same value twice")
            for value in self.values:
                if len(json.dumps(str(value))) > MAX_VALUE_CHARS:
                    raise FieldError("values", f"a value is longer than SageMaker's {MAX_VALUE_CHARS:,} characters")
            return self
        if self.min is None or self.max is None:
            missing = "min" if self.min is None else "max"
            raise FieldError(missing, "is required: give min and max, or values for a categorical range")
        for name in ("min", "max"):
            if not math.isfinite(getattr(self, name)):
                raise FieldError(name, "must be a finite number")
        if self.min >= self.max:
            raise FieldError("max", f"must be greater than min ({_number(self.max)} <= {_number(self.min)})")
        if self.kind == "integer":
            for name in ("min", "max"):
                if not float(getattr(self, name)).is_integer():
                    raise FieldError(name, f"an integer range needs whole bounds (got {_number(getattr(self, name))})")
        if self.scale == "log" and self.min <= 0:
            raise FieldError("min", f"log scale needs min > 0 (got {_number(self.min)})")
        if self.scale == "reverse_log":
            if self.kind == "integer":
                raise FieldError("scale", "reverse_log applies to continuous ranges only (as SageMaker's)")
            if self.min < 0 or self.max >= 1:
                raise FieldError("scale", "reverse_log needs 0 <= min < max < 1")
        return self


class WarmStart(Strict):
    """Earlier sweeps whose trials seed this one (SageMaker's WarmStartConfig; locally, added to the study)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: list[str] = Field(alias="from", min_length=1, max_length=MAX_PARENTS, description="Parent sweeps' names.")
    type: Literal["identical_data_and_algorithm", "transfer_learning"] = Field(
        "identical_data_and_algorithm",
        description="SageMaker's WarmStartType: the same data and code, or changed ones (ranges may differ).",
    )


class SweepSpec(Strict):
    """A hyperparameter sweep over this job: a SageMaker tuning job, or local trials chosen by Optuna."""

    objective: Objective = Field(description="The metric the sweep optimises, and which way.")
    strategy: Literal["bayesian", "random", "grid", "hyperband"] = Field(
        "bayesian",
        description="How values are chosen: bayesian (locally Optuna's TPE), random, grid (categorical ranges "
        "only), hyperband (needs a fixed epochs hyperparameter).",
    )
    parameters: dict[str, ParameterRange] = Field(
        min_length=1,
        max_length=MAX_RANGES,
        description="The hyperparameters to tune (at most 30), each a range; the rest of hyperparameters stay fixed.",
    )
    max_trials: int = Field(ge=1, le=MAX_TRIALS, description="Trials in all (at most 750).")
    max_parallel: int = Field(1, ge=1, le=100, description="Trials at once, each with instance_count instances.")
    early_stopping: Annotated[Literal["off", "auto"], BeforeValidator(_on_off)] = Field(
        "off", description="auto: the median rule, as SageMaker's Auto."
    )
    max_cost: float | None = Field(None, gt=0, description="USD ceiling for the whole sweep (on-demand prices).")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Makes the choice of values repeatable.")
    warm_start: WarmStart | None = Field(None, description="Earlier sweeps whose trials inform this one.")

    @model_validator(mode="after")
    def _coherent(self) -> SweepSpec:
        if self.max_parallel > self.max_trials:
            raise FieldError("max_parallel", f"cannot exceed max_trials ({self.max_parallel} > {self.max_trials})")
        if self.strategy == "grid":
            for name, rng in self.parameters.items():
                if rng.kind != "categorical":
                    raise FieldError(("parameters", name), "grid search takes categorical ranges only (values: [...])")
        if self.strategy == "hyperband" and self.early_stopping != "off":
            raise FieldError("early_stopping", "hyperband stops trials itself: early_stopping must be off")
        return self

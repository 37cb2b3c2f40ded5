"""A sweep's dollar ceiling: the worst case, and `max_cost` turned into a limit AWS enforces.

A tuning job has no dollar limit, only ResourceLimits.MaxRuntimeInSeconds (the whole tuning job's wall clock).
At most max_parallel trials of instance_count instances run at once, so a runtime limit of
max_cost / (max_parallel x instance_count x hourly price) hours bounds the bill whatever the trials do: AWS
stops the tuning job (and its trials) when it is reached, with nobody watching.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cloudtrain.spec.base import FieldError

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

MIN_TUNING_RUNTIME_S = 120  # ResourceLimits.MaxRuntimeInSeconds, botocore's bounds
MAX_TUNING_RUNTIME_S = 15_768_000


@dataclass(frozen=True)
class SweepCost:
    """The sweep's cost bounds at approximate on-demand prices (`cloudtrain.pricing`)."""

    instance_type: str
    instance_count: int
    price_per_hour: float | None
    max_trials: int
    max_parallel: int
    trial_max_runtime_s: int
    max_cost: float | None = None
    runtime_limit_s: int | None = None  # ResourceLimits.MaxRuntimeInSeconds set from max_cost
    trials_covered: int | None = None  # trials max_cost pays for if every one runs its full max_runtime

    @property
    def trial_usd(self) -> float | None:
        if self.price_per_hour is None:
            return None
        return self.instance_count * self.price_per_hour * self.trial_max_runtime_s / 3600

    @property
    def worst_case_usd(self) -> float | None:
        """max_trials x instance_count x price x max_runtime: every trial running to its limit."""
        return None if self.trial_usd is None else round(self.max_trials * self.trial_usd, 2)

    def summary(self) -> str:
        if self.price_per_hour is None:
            return f"no price listed for {self.instance_type} (cost estimate unavailable)"
        line = (
            f"worst case ${self.worst_case_usd:,.2f}: {self.max_trials} trials x {self.instance_count} x "
            f"{self.instance_type} x {self.trial_max_runtime_s / 3600:g} h at ${self.price_per_hour:g}/h "
            "(approximate, us-east-1, on-demand)"
        )
        if self.max_cost is None:
            return line
        return (
            f"{line}; max_cost ${self.max_cost:,.2f} sets the tuning job's MaxRuntimeInSeconds to "
            f"{self.runtime_limit_s}s ({self.max_parallel} at a time), which pays for {self.trials_covered} of "
            f"{self.max_trials} trials in the worst case"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "worst_case_usd": self.worst_case_usd, "summary": self.summary()}


def sweep_cost(spec: JobSpec) -> SweepCost:
    """The sweep's bounds; a max_cost that cannot be enforced or pays for no whole trial is a FieldError
    (the spec's validation calls this, so a loaded spec's ceiling always fits)."""
    from cloudtrain.pricing import price_per_hour

    sweep = spec.sweep
    assert sweep is not None
    res = spec.resources
    price = price_per_hour(res.instance_type)
    cost = SweepCost(
        instance_type=res.instance_type,
        instance_count=res.instance_count,
        price_per_hour=price,
        max_trials=sweep.max_trials,
        max_parallel=sweep.max_parallel,
        trial_max_runtime_s=res.max_runtime,
        max_cost=sweep.max_cost,
    )
    if sweep.max_cost is None:
        return cost
    if price is None or cost.trial_usd is None:
        raise FieldError("sweep.max_cost", f"no price is listed for {res.instance_type}: it cannot be enforced")
    trials = math.floor(sweep.max_cost / cost.trial_usd + 1e-9)
    if trials < 1:
        raise FieldError(
            "sweep.max_cost",
            f"${sweep.max_cost:,.2f} does not pay for one trial in the worst case (${cost.trial_usd:,.2f}: "
            f"{res.instance_count} x {res.instance_type} for max_runtime)",
        )
    limit = math.floor(sweep.max_cost / (sweep.max_parallel * res.instance_count * price) * 3600)
    if limit < MIN_TUNING_RUNTIME_S:
        raise FieldError(
            "sweep.max_cost",
            f"${sweep.max_cost:,.2f} allows {limit}s with {sweep.max_parallel} trials at a time: "
            f"a tuning job runs at least {MIN_TUNING_RUNTIME_S}s (lower max_parallel or raise max_cost)",
        )
    limit = min(limit, MAX_TUNING_RUNTIME_S)
    return SweepCost(**{**asdict(cost), "runtime_limit_s": limit, "trials_covered": min(trials, sweep.max_trials)})


def billed_usd(billable_instance_seconds: int | None, instance_type: str) -> float | None:
    """What a trial's billed instance-seconds cost at the listed on-demand price (None when unknown)."""
    from cloudtrain.pricing import price_per_hour

    price = price_per_hour(instance_type)
    if price is None or billable_instance_seconds is None:
        return None
    return round(billable_instance_seconds * price / 3600, 4)

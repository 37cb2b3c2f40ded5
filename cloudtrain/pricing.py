"""A rough cost ceiling for a job, from approximate us-east-1 on-demand prices (`data/prices.json`).

The estimate is instance count x (max_runtime + warm-pool keep-alive) hours x hourly price: an upper
bound, since SageMaker bills the seconds a job actually runs and max_runtime only caps them, and
instances kept warm (`keep_alive`) are billed until another job takes them or the period ends.
Prices differ by region and change; the text always says "approximate, us-east-1" so nobody budgets on it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

SPOT_NOTE = "managed spot usually costs 60-90% less, billed only for the seconds run (the wait for capacity is free)"


@cache
def _prices() -> dict[str, Any]:
    return json.loads(resources.files("cloudtrain").joinpath("data/prices.json").read_text())  # type: ignore[no-any-return]


def price_per_hour(instance_type: str) -> float | None:
    """Approximate on-demand USD per instance-hour in us-east-1, or None for an unlisted type."""
    price = _prices()["prices"].get(instance_type)
    return float(price) if price is not None else None


@dataclass(frozen=True)
class CostEstimate:
    instance_type: str
    instance_count: int
    hours: float
    price_per_hour: float | None
    spot: bool
    region: str = "us-east-1"
    warm_pool_hours: float = 0.0  # keep_alive: billed after the job unless another job reuses the instances

    @property
    def total_usd(self) -> float | None:
        if self.price_per_hour is None:
            return None
        return round(self.instance_count * (self.hours + self.warm_pool_hours) * self.price_per_hour, 2)

    def summary(self) -> str:
        """One line for `--dry-run` and `submit`."""
        if self.total_usd is None:
            return f"no price listed for {self.instance_type} (cost estimate unavailable)"
        line = (
            f"at most ${self.total_usd:,.2f}: {self.instance_count} x {self.instance_type} x {self._hours()} "
            f"at ${self.price_per_hour:g}/h (approximate, {self.region}, on-demand)"
        )
        return f"{line}; {SPOT_NOTE}" if self.spot else line

    def note(self) -> str:
        """What the total is: shown after the number (`estimated cost: up to $X <note>`)."""
        if self.total_usd is None:
            return f"(no price listed for {self.instance_type})"
        basis = (
            f"({self.instance_count} x {self.instance_type} x {self._hours('max_runtime')}, approximate, {self.region}"
        )
        return f"{basis}, on-demand; {SPOT_NOTE})" if self.spot else f"{basis}, on-demand)"

    def _hours(self, runtime: str = "") -> str:
        text = f"{self.hours:g} h{' ' + runtime if runtime else ''}"
        return f"({text} + {self.warm_pool_hours:g} h warm pool)" if self.warm_pool_hours else text

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_usd": self.total_usd, "summary": self.summary()}


class Resources(Protocol):
    """What an estimate reads of a spec's `resources:` (a Protocol: pricing imports nothing of cloudtrain, so the
    spec's own validation can price a sweep's ceiling)."""

    @property
    def instance_type(self) -> str: ...
    @property
    def instance_count(self) -> int: ...
    @property
    def max_runtime(self) -> int: ...
    @property
    def keep_alive(self) -> int: ...
    @property
    def spot(self) -> Any: ...


def estimate(resources_spec: Resources) -> CostEstimate:
    return CostEstimate(
        instance_type=resources_spec.instance_type,
        instance_count=resources_spec.instance_count,
        hours=round(resources_spec.max_runtime / 3600, 4),
        price_per_hour=price_per_hour(resources_spec.instance_type),
        spot=resources_spec.spot.enabled,
        warm_pool_hours=round(resources_spec.keep_alive / 3600, 4),
    )

"""A sweep and its trials as every command shows them, whichever backend ran them.

Statuses are SageMaker's: a sweep's are a tuning job's (`InProgress`, `Completed`, `Failed`, `Stopping`,
`Stopped`), a trial's a training job's; a trial stopped by early stopping is `Stopped` with the reason
"early stopping", as DescribeTrainingJob reports one a tuning job stopped.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cloudtrain.jobs import TERMINAL, JobInfo

EARLY_STOPPING = "early stopping"


@dataclass(frozen=True)
class Trial:
    """One training job of a sweep, with the values it was given and the objective it reached."""

    name: str
    status: str
    hyperparameters: dict[str, Any]
    objective: float | None = None  # the final value of the objective metric (the chief's last line)
    failure_reason: str | None = None  # why it failed, or "early stopping"
    created: float | None = None
    ended: float | None = None
    billable_seconds: int | None = None  # per instance, as SageMaker reports it
    instance_count: int = 1
    cost_usd: float | None = None  # billed instance-seconds at the listed price; 0 locally
    history: tuple[float, ...] = ()  # the objective each epoch, as reported to the pruner (local sweeps)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def pruned(self) -> bool:
        return self.status == "Stopped" and self.failure_reason == EARLY_STOPPING

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "history": list(self.history), "pruned": self.pruned}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trial:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "history": tuple(known.get("history", ()))})


@dataclass(frozen=True)
class SweepInfo:
    """What `status SWEEP` shows; `to_json` is the `--json` shape (schema: sweep)."""

    name: str
    backend: str
    status: str
    metric: str
    goal: str  # maximize | minimize
    strategy: str
    max_trials: int
    max_parallel: int
    trials: tuple[Trial, ...] = ()
    created: float | None = None
    ended: float | None = None
    failure_reason: str | None = None
    instance_type: str = ""
    max_cost: float | None = None
    notes: tuple[str, ...] = ()
    best_name: str | None = None  # the backend's own verdict (SageMaker's BestTrainingJob), when it gives one
    parameters: dict[str, Any] = field(default_factory=dict)  # the spec's sweep.parameters (JSON), for the report
    hyperparameter_names: tuple[str, ...] = ()  # static and tuned, the user's own: what warm start compares
    instance_count: int = 1

    @property
    def job(self) -> JobInfo:
        """The sweep as one row of the job list."""
        return JobInfo(
            name=self.name,
            backend=self.backend,
            status=self.status,
            secondary_status=f"{sum(t.done for t in self.trials)}/{self.max_trials} trials",
            failure_reason=self.failure_reason,
            created=self.created,
            ended=self.ended,
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            kind="sweep",
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def counters(self) -> dict[str, int]:
        """Trials by state, as TrainingJobStatusCounters (early-stopped trials counted apart)."""
        counts = Counter("EarlyStopped" if t.pruned else t.status for t in self.trials)
        keys = ("Completed", "InProgress", "Stopping", "EarlyStopped", "Stopped", "Failed")
        return {k: counts.get(k, 0) for k in keys}

    @property
    def best(self) -> Trial | None:
        """The backend's best trial, else the one with the best objective (ties: the earliest)."""
        if self.best_name is not None:
            return next((t for t in self.trials if t.name == self.best_name), None)
        ranked = self.ranked()
        return ranked[0] if ranked and ranked[0].objective is not None and ranked[0].status == "Completed" else None

    def ranked(self) -> list[Trial]:
        """Trials sorted by the objective, best first; those without one last, in order of creation."""
        sign = -1 if self.goal == "maximize" else 1

        def key(t: Trial) -> tuple[int, float]:
            usable = t.objective is not None and math.isfinite(t.objective)
            return (0, sign * t.objective) if usable else (1, 0.0)  # type: ignore[operator]

        return sorted(self.trials, key=key)

    @property
    def spent_usd(self) -> float | None:
        costs = [t.cost_usd for t in self.trials if t.cost_usd is not None]
        return round(sum(costs), 4) if costs else None

    def trial(self, name: str) -> Trial | None:
        """A trial by its job name, or by its number in the sweep (1-based, as `--trial 2`)."""
        if name.isdigit() and 1 <= int(name) <= len(self.trials):
            return self.trials[int(name) - 1]
        return next((t for t in self.trials if t.name == name), None)

    def with_trials(self, trials: list[Trial]) -> SweepInfo:
        return replace(self, trials=tuple(trials))

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "name": self.name,
            "kind": "sweep",
            "backend": self.backend,
            "status": self.status,
            "objective": {"metric": self.metric, "goal": self.goal},
            "strategy": self.strategy,
            "max_trials": self.max_trials,
            "max_parallel": self.max_parallel,
            "counters": self.counters,
            "best_trial": best.name if best is not None else None,
            "best_objective": best.objective if best is not None else None,
            "trials": [t.to_json() for t in self.ranked()],
            "created": self.created,
            "ended": self.ended,
            "failure_reason": self.failure_reason,
            "max_cost": self.max_cost,
            "spent_usd": self.spent_usd,
            "notes": list(self.notes),
        }


def trials_csv(sweep: SweepInfo) -> str:
    """One row per trial, best first: name, state, objective, each tuned value, billable time and cost."""
    names = sorted({k for t in sweep.trials for k in t.hyperparameters})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "status", "reason", sweep.metric, *names, "billable_seconds", "cost_usd"])
    for t in sweep.ranked():
        values = [t.hyperparameters.get(k, "") for k in names]
        writer.writerow(
            [
                t.name,
                t.status,
                t.failure_reason or "",
                _blank(t.objective),
                *values,
                _blank(t.billable_seconds),
                _blank(t.cost_usd),
            ]
        )
    return out.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value

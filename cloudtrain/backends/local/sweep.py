"""Local sweeps: a sweep folder, its record in the job store and the detached driver that runs its trials.

    <home>/sweeps/<sweep>/sweep.json   the spec (its environment left out: the driver gets that in its own
                                       environment, never on disk), the parents' trials for warm start
                          runner.log   the driver's own output

Each trial is a local job (`<home>/jobs/<sweep>-NNN-xxxxxxxx`) whose record names the sweep as its parent,
so the job list shows the sweep as one row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.local.layout import BACKEND as LOCAL
from cloudtrain.backends.local.layout import private_file
from cloudtrain.backends.local.scope import runner_alive
from cloudtrain.errors import JobExists
from cloudtrain.files import atomic_path
from cloudtrain.store import JobRecord, JobStore
from cloudtrain.sweep.trials import SweepInfo, Trial

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

PLAN_FILE = "sweep.json"
RUNNER_MODULE = "cloudtrain.backends.local.sweep_runner"  # `python -m` of a sweep's driver
ENVIRONMENT_VARIABLE = "CLOUDTRAIN_SWEEP_ENVIRONMENT"  # the spec's environment, handed to the driver
RUNNER_DIED = "local sweep runner process died"
DRIVER_START_S = 60.0


@dataclass(frozen=True)
class SweepPlan:
    name: str
    spec: dict[str, Any]  # the validated spec as JSON, its environment's values left out
    container: bool = False
    parents: list[dict[str, Any]] = field(default_factory=list)  # the warm start's parent trials (Trial JSON)

    def save(self, folder: Path) -> None:
        with atomic_path(folder / PLAN_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self)))
            tmp.chmod(0o600)

    @classmethod
    def load(cls, folder: Path) -> SweepPlan:
        return cls(**json.loads((folder / PLAN_FILE).read_text()))


def plan(spec: JobSpec, name: str) -> dict[str, Any]:
    """A local sweep's dry run: its name, the trials it would run and the spec; nothing is billed here."""
    from cloudtrain.spec.ceiling import sweep_cost

    assert spec.sweep is not None
    cost = sweep_cost(spec)
    return {
        "sweep_name": name,
        "request": {
            "sweep": spec.sweep.model_dump(mode="json", by_alias=True),
            "trials": f"{spec.sweep.max_trials} local jobs of {spec.resources.instance_count} workers, "
            f"{spec.sweep.max_parallel} at a time, named {name}-NNN-xxxxxxxx",
        },
        "sweep_cost": cost.to_json(),
        "notes": ["local trials cost nothing; the cost is what the same sweep would cost on SageMaker"],
        "spec": spec.model_dump(mode="json", by_alias=True),
    }


def save_state(store: JobStore, name: str, state: Mapping[str, Any]) -> None:
    store.set_sweep(LOCAL, name, state)


def sweep_folder(home: Path, name: str) -> Path:
    return home / "sweeps" / name


def create(
    home: Path, store: JobStore, spec: JobSpec, name: str, *, container: bool, parents: Sequence[SweepInfo]
) -> JobRecord:
    """The sweep's folder, plan and record; JobExists if the name is taken."""
    folder = sweep_folder(home, name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)  # atomic: of two submits of one name, exactly one gets here
    except FileExistsError:
        raise JobExists(name) from None
    dumped = spec.model_dump(mode="json", by_alias=True)
    SweepPlan(
        name=name,
        spec={**dumped, "environment": {}},
        container=container,
        parents=[t.to_json() for p in parents for t in p.trials],
    ).save(folder)
    record = JobRecord.for_spec(name, LOCAL, spec, instance_type="local", kind="sweep", message="Starting the sweep")
    return store.create(replace(record, sweep={"trials": {}, "notes": []}))


def start(home: Path, store: JobStore, name: str, environment: Mapping[str, str]) -> None:
    """Start the driver in its own session, the spec's environment in its own (never on disk)."""
    folder = sweep_folder(home, name)
    with open(private_file(folder / "runner.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", RUNNER_MODULE, str(folder)],
            cwd=folder,
            env={**os.environ, ENVIRONMENT_VARIABLE: json.dumps(dict(environment))},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    threading.Thread(target=proc.wait, name=f"reap-sweep-{name}", daemon=True).start()
    store.set_pid(LOCAL, name, proc.pid)


def info(record: JobRecord, trials: Sequence[JobRecord]) -> SweepInfo:
    """The sweep as every command shows it: its record's state, each trial's status from its own record."""
    spec = record.spec
    sweep = spec.get("sweep") or {}
    state = record.sweep
    by_name = {t.name: t for t in trials}
    shown = []
    for job, data in sorted(state.get("trials", {}).items(), key=lambda kv: kv[1].get("number", 0)):
        job_record = by_name.get(job)
        job_info = job_record.info if job_record is not None else None
        status = job_info.status if job_info is not None else data.get("status", "Failed")
        seconds = None
        if job_info is not None and job_info.created is not None:
            seconds = int((job_info.ended or time.time()) - job_info.created)
        reason = data.get("failure_reason") or (job_info.failure_reason if job_info is not None else None)
        shown.append(
            Trial(
                name=job,
                status=status,
                hyperparameters=data.get("hyperparameters", {}),
                objective=data.get("objective"),
                failure_reason=reason,
                created=job_info.created if job_info else None,
                ended=job_info.ended if job_info else None,
                billable_seconds=seconds,
                instance_count=record.info.instance_count,
                cost_usd=0.0,  # this machine's time is not billed
                history=tuple(data.get("history", ())),
            )
        )
    objective = sweep.get("objective", {})
    return SweepInfo(
        name=record.name,
        backend=LOCAL,
        status=record.info.status,
        metric=objective.get("metric", ""),
        goal=objective.get("goal", "maximize"),
        strategy=sweep.get("strategy", "bayesian"),
        max_trials=sweep.get("max_trials", 0),
        max_parallel=sweep.get("max_parallel", 1),
        trials=tuple(shown),
        created=record.info.created,
        ended=record.info.ended,
        failure_reason=record.info.failure_reason,
        instance_type="local",
        max_cost=sweep.get("max_cost"),
        notes=tuple(state.get("notes", ())),
        parameters=sweep.get("parameters", {}),
        hyperparameter_names=tuple(sorted(set(spec.get("hyperparameters", {})) | set(sweep.get("parameters", {})))),
        instance_count=record.info.instance_count,
    )


def signal_runner(pid: int | None) -> None:
    if pid is not None:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def refresh(store: JobStore, record: JobRecord) -> JobRecord:
    """A running sweep whose driver is gone ends now: Stopped if a stop was asked, else Failed."""
    if record.done:
        return record
    if record.pid is None:
        alive = time.time() - (record.info.created or 0.0) < DRIVER_START_S  # submit is still starting it
    else:
        alive = runner_alive(record.pid, record.name, modules=(RUNNER_MODULE,))
    if alive:
        return record
    if record.info.status == "Stopping":
        return store.transition(LOCAL, record.name, "Stopped", status="Stopped", message="Sweep stopped")
    return store.transition(LOCAL, record.name, "Failed", status="Failed", failure_reason=RUNNER_DIED)

"""The detached driver of one local sweep: `python -m cloudtrain.backends.local.sweep_runner <sweep folder>`.

It plays SageMaker's tuning service on this machine: Optuna chooses each trial's values (TPE for bayesian,
random, GridSampler for grid; seeded), each trial is a real local job of the spec's N workers, at most
max_parallel at a time, and the objective is read from the chief's log lines by the spec's own regex, each
match an epoch reported to Optuna's pruner (the median rule for `early_stopping: auto`, Hyperband for
`hyperband`). A pruned trial is stopped as SageMaker stops one: Stopped, reason "early stopping", its
checkpoints and model so far kept. The sweep's state is in its record in the job store (`sweep` column).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.local.layout import BACKEND, CHIEF
from cloudtrain.backends.local.runner import stop_event
from cloudtrain.backends.local.sweep import ENVIRONMENT_VARIABLE, RUNNER_MODULE, SweepPlan, save_state
from cloudtrain.errors import CloudtrainError
from cloudtrain.sweep.trials import EARLY_STOPPING

if TYPE_CHECKING:
    from cloudtrain.backends.local.backend import LocalBackend
    from cloudtrain.spec.models import JobSpec

POLL_S = 0.5
MEDIAN_STARTUP_TRIALS = 2  # completed trials before the median rule stops any (SageMaker's Auto waits too)
MATCH_S = 0.1  # time the objective's regex may take on one line
LINE_MAX = 4096


@dataclass
class _Running:
    """A trial being run: its Optuna trial and how far its chief's log has been read."""

    trial: Any
    job: str
    offset: int = 0
    step: int = 0
    pruning: bool = False
    others: dict[str, _Running] = field(default_factory=dict)  # how far each other host's log has been read


class SweepRunner:
    def __init__(self, sweep_dir: Path, stop: threading.Event) -> None:
        import optuna

        from cloudtrain.backends.local.backend import LocalBackend
        from cloudtrain.spec.models import JobSpec
        from cloudtrain.sweep.space import optuna_distributions

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dir = sweep_dir
        self.plan = SweepPlan.load(sweep_dir)
        environment = json.loads(os.environ.pop(ENVIRONMENT_VARIABLE, "{}"))
        self.spec: JobSpec = JobSpec.model_validate({**self.plan.spec, "environment": environment})
        assert self.spec.sweep is not None
        self.sweep = self.spec.sweep
        self.backend: LocalBackend = LocalBackend(sweep_dir.parents[1], container=self.plan.container)
        self.stop = stop
        self.distributions = optuna_distributions(self.sweep.parameters)
        self.study = optuna.create_study(
            direction=self.sweep.objective.goal, sampler=self._sampler(), pruner=self._pruner()
        )
        metric = next(m for m in self.spec.metrics if m.name == self.sweep.objective.metric)
        import regex

        self.pattern = regex.compile(metric.regex)
        self.running: dict[str, _Running] = {}
        self.state: dict[str, Any] = {"trials": {}, "notes": []}

    # -- Optuna -----------------------------------------------------------------------------------------

    def _sampler(self) -> Any:
        import optuna

        from cloudtrain.sweep.space import grid

        seed = self.sweep.seed
        if self.sweep.strategy == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.sweep.strategy == "grid":
            return optuna.samplers.GridSampler(grid(self.sweep.parameters), seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def _pruner(self) -> Any:
        import optuna

        from cloudtrain.spec.sweep import EPOCHS_KEYS

        if self.sweep.strategy == "hyperband":
            epochs = next(int(self.spec.hyperparameters[k]) for k in EPOCHS_KEYS if k in self.spec.hyperparameters)
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
        if self.sweep.early_stopping == "auto":
            return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=1)
        return optuna.pruners.NopPruner()

    @property
    def max_trials(self) -> int:
        """max_trials, or fewer when a grid has fewer points (SageMaker's Grid runs each once)."""
        if self.sweep.strategy != "grid":
            return self.sweep.max_trials
        points = 1
        for rng in self.sweep.parameters.values():
            points *= len(rng.values or [])
        return min(points, self.sweep.max_trials)

    def _warm_start(self) -> None:
        """The parents' ended trials added to the study, as evidence for the sampler (values outside this
        sweep's ranges are left out, as SageMaker's transfer learning does with values it cannot map)."""
        import optuna

        from cloudtrain.sweep.space import fits, to_optuna

        added = 0
        for data in self.plan.parents:
            if data.get("status") != "Completed" or data.get("objective") is None:
                continue
            params = fits(to_optuna(self.sweep.parameters, data.get("hyperparameters", {})), self.distributions)
            if params is None:
                continue
            self.study.add_trial(
                optuna.trial.create_trial(
                    value=float(data["objective"]), params=params, distributions=self.distributions
                )
            )
            added += 1
        if self.plan.parents:
            self._note(f"warm start: {added} of the parents' {len(self.plan.parents)} trials added to the study")

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self) -> int:
        status, reason = "Completed", None
        try:
            self._warm_start()
            self._step("InProgress", "Running trials")
            started = 0
            while not self.stop.is_set():
                while len(self.running) < self.sweep.max_parallel and started < self.max_trials:
                    started += 1
                    self._start(started)
                self._poll()
                if not self.running and started >= self.max_trials:
                    break
                time.sleep(POLL_S)
            if self.stop.is_set():
                status = "Stopped"
                self._step("Stopping", "Stopping the sweep's trials", status="Stopping")
                for job in list(self.running):
                    self.backend.stop(job)
                while self.running:
                    self._poll()
                    time.sleep(POLL_S)
            elif not any(t.get("objective") is not None for t in self.state["trials"].values()):
                status, reason = "Failed", "no trial reported its objective: see cloudtrain logs SWEEP --trial 1"
        except Exception as e:
            traceback.print_exc()
            status, reason = "Failed", f"InternalServerError: local sweep runner: {e}"
            for job in list(self.running):
                with _quiet():
                    self.backend.stop(job)
        self._save()
        self.backend.store.transition(
            BACKEND, self.plan.name, status, status=status, message=f"Sweep {status.lower()}", failure_reason=reason
        )
        return 0 if status == "Completed" else 1

    def _start(self, number: int) -> None:
        from cloudtrain.sweep.space import from_optuna

        trial = self.study.ask(self.distributions)
        values = from_optuna(self.sweep.parameters, trial.params)
        digest = hashlib.sha256(f"{self.plan.name}/{number}".encode()).hexdigest()[:8]
        job = f"{self.plan.name}-{number:03d}-{digest}"  # SageMaker's names for a tuning job's trials
        spec = self.spec.model_copy(update={"hyperparameters": {**self.spec.hyperparameters, **values}, "sweep": None})
        self.state["trials"][job] = {"number": number, "hyperparameters": values, "history": [], "objective": None}
        try:
            self.backend.submit(spec, job, parent=self.plan.name)
        except CloudtrainError as e:
            self._tell(trial, state=_state("FAIL"))
            self.state["trials"][job].update(status="Failed", failure_reason=str(e))
            self._save()
            return
        self.running[job] = _Running(trial, job)
        self._save()

    def _poll(self) -> None:
        for job, run in list(self.running.items()):
            info = self.backend.describe(job)  # before reading: the last read after the end gets every line
            self._read(run)
            self._check_other_hosts(run)
            if info.done:
                self._finish(run, info.status)
        self._save()

    def _read(self, run: _Running) -> None:
        """New objective values in the chief's log, each reported to the pruner as one more epoch."""
        path = self.backend.job_dir(run.job) / "logs" / f"{CHIEF}.jsonl"
        record = self.state["trials"][run.job]
        for line in _new_lines(path, run):
            value = self._objective(line)
            if value is None:
                continue
            run.step += 1
            record["history"].append(value)
            record["objective"] = value
            if run.pruning:
                continue
            run.trial.report(value, run.step)
            if run.trial.should_prune():
                run.pruning = True
                self.backend.stop(run.job, reason=EARLY_STOPPING)

    def _objective(self, line: str) -> float | None:
        try:
            match = self.pattern.search(line[:LINE_MAX], timeout=MATCH_S, concurrent=True)
        except TimeoutError:
            return None
        if not match:
            return None
        try:
            return float(match.group(1))
        except (TypeError, ValueError):
            return None

    def _check_other_hosts(self, run: _Running) -> None:
        """Point out, once, hosts other than the chief printing the objective: only the chief's lines count
        (AWS warns that the median rule and Hyperband misjudge jobs whose nodes all print it)."""
        if self.state.get("several_hosts"):
            return
        for log in sorted((self.backend.job_dir(run.job) / "logs").glob("algo-*.jsonl")):
            if log.stem == CHIEF:
                continue
            read = run.others.setdefault(log.stem, _Running(None, run.job))
            if any(self._objective(line) is not None for line in _new_lines(log, read)):
                self.state["several_hosts"] = True
                self._note(
                    f"{log.stem} of {run.job} prints {self.sweep.objective.metric} too: only the chief's "
                    "(algo-1) lines count towards the objective"
                )
                return

    def _finish(self, run: _Running, status: str) -> None:
        record = self.state["trials"][run.job]
        del self.running[run.job]
        if run.pruning:
            self._tell(run.trial, state=_state("PRUNED"))
            record["failure_reason"] = EARLY_STOPPING
        elif status == "Completed" and record["objective"] is not None:
            self._tell(run.trial, record["objective"])
        else:
            self._tell(run.trial, state=_state("FAIL"))

    def _tell(self, trial: Any, value: float | None = None, *, state: Any = None) -> None:
        """Optuna's tell. GridSampler calls `study.stop()` once every point is told, which raises outside
        `optimize`; the trial is recorded before that, and this loop ends by itself then anyway."""
        try:
            self.study.tell(trial, value, state=state)
        except RuntimeError as e:
            if "Study.stop" not in str(e):
                raise

    # -- records ------------------------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        if text not in self.state["notes"]:
            self.state["notes"].append(text)

    def _save(self) -> None:
        with _quiet():
            save_state(self.backend.store, self.plan.name, self.state)

    def _step(self, secondary: str, message: str, status: str | None = None) -> None:
        with _quiet():
            self.backend.store.transition(BACKEND, self.plan.name, secondary, status=status, message=message)


def _state(name: str) -> Any:
    import optuna

    return getattr(optuna.trial.TrialState, name)


def _new_lines(path: Path, run: _Running) -> list[str]:
    """Whole lines appended to a log stream since the last read (its JSON lines' messages)."""
    try:
        with open(path, "rb") as f:
            f.seek(run.offset)
            chunk = f.read()
    except OSError:
        return []
    end = chunk.rfind(b"\n") + 1
    run.offset += end
    lines = []
    for raw in chunk[:end].splitlines():
        try:
            lines.append(str(json.loads(raw)["m"]))
        except (ValueError, KeyError, TypeError):
            continue
    return lines


class _quiet:
    """A store that cannot be written now (a full disk) is noted, not fatal: the next save tries again."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, CloudtrainError):
            print(f"not recorded yet: {exc}", file=sys.stderr, flush=True)
            return True
        return False


def main(argv: list[str] | None = None) -> int:
    stop = stop_event()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {RUNNER_MODULE} SWEEP_DIR", file=sys.stderr)
        return 2
    return SweepRunner(Path(args[0]).resolve(), stop).run()


if __name__ == "__main__":
    sys.exit(main())

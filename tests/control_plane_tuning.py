"""SageMaker's tuning service for the test control plane (tests/sagemaker_control_plane.py), as AWS documents it.

moto's tuning job is a fake (always Completed, a best job named `FakeTrainingJobName`, nothing checked; Stop
and ListTrainingJobsForHyperParameterTuningJob unimplemented). This one runs a tuning job as AWS does:

- CreateHyperParameterTuningJob is checked first against botocore's service model (the control plane's own
  validator), then against AWS's documented limits the model does not carry (`rules`): 20 metrics on a tuning
  job, 30 ranges in all, Grid with categorical ranges only, Hyperband with early stopping Off and a MaxResource
  (a static `epochs`), MaxParallelTrainingJobs ≤ MaxNumberOfTrainingJobs, an objective among the metrics.
- Each trial is a real training job, created through the control plane's own CreateTrainingJob (so it is checked
  and run like any job): named `<tuning>-NNN-xxxxxxxx`, the static hyperparameters plus the tuned values (as
  text; categoricals as given), checkpoints under `<S3Uri>/<trial>`.
- Values are drawn at random (seeded by RandomSeed) for every strategy: this stand-in does not model Bayesian
  search, which no test can observe anyway; Grid goes through every point once.
- At most MaxParallelTrainingJobs trials run at once; MaxRuntimeInSeconds stops the tuning job and its trials.
- `Auto` early stopping is the median rule AWS documents: a trial whose running average of the objective, epoch
  by epoch (each new value the chief prints), is worse than the median of the completed trials' running
  averages at the same epoch is stopped (it ends Stopped).
- Describe reports TrainingJobStatusCounters, ObjectiveStatusCounters and BestTrainingJob; Stop stops every
  running trial.
"""

from __future__ import annotations

import contextlib
import math
import random
import secrets
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.sagemaker_control_plane import ControlPlane

POLL_S = 0.2
MAX_TUNING_METRICS = 20  # the tuning developer guide's limit (the model allows 40)
MAX_RANGES = 30
MEDIAN_AFTER = 2  # completed trials before the median rule stops any
EPOCH_KEYS = ("epochs", "num_epochs", "n_epochs", "epoch")
TERMINAL = ("Completed", "Failed", "Stopped")


@dataclass
class _Trial:
    name: str
    values: dict[str, str]  # the tuned hyperparameters, as SageMaker hands them to the job
    history: list[float] = field(default_factory=list)
    early_stopped: bool = False


@dataclass
class _Tuning:
    name: str
    arn: str
    request: dict[str, Any]
    created: float
    status: str = "InProgress"
    ended: float | None = None
    failure_reason: str | None = None
    trials: list[_Trial] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def rules(p: dict[str, Any]) -> list[str]:
    """What AWS documents about tuning jobs beyond the service model (each rule says where)."""
    errors = []
    config = p["HyperParameterTuningJobConfig"]
    definition = p.get("TrainingJobDefinition")
    if definition is None:
        return ["this control plane runs tuning jobs with one TrainingJobDefinition"]
    metrics = definition["AlgorithmSpecification"].get("MetricDefinitions", [])
    if len(metrics) > MAX_TUNING_METRICS:  # "Define metrics": up to 20 metrics for a tuning job
        errors.append(f"A tuning job takes at most {MAX_TUNING_METRICS} metric definitions (got {len(metrics)})")
    objective = config["HyperParameterTuningJobObjective"]["MetricName"]
    if objective not in {m["Name"] for m in metrics}:  # custom algorithms: the objective must be a defined metric
        errors.append(f"The objective metric {objective} is not one of the MetricDefinitions")
    ranges = config.get("ParameterRanges", {})
    count = sum(len(v) for v in ranges.values())
    if count > MAX_RANGES:  # ParameterRanges: "the maximum number of hyperparameters ... is 30"
        errors.append(f"At most {MAX_RANGES} hyperparameter ranges in all (got {count})")
    strategy = config["Strategy"]
    if strategy == "Grid" and (ranges.get("IntegerParameterRanges") or ranges.get("ContinuousParameterRanges")):
        errors.append("Grid search takes categorical parameter ranges only")  # "Grid search" in the guide
    if strategy == "Hyperband":
        if config.get("TrainingJobEarlyStoppingType", "Off") != "Off":  # Hyperband: "early stopping must be Off"
            errors.append("Hyperband needs TrainingJobEarlyStoppingType Off")
        static = definition.get("StaticHyperParameters", {})
        if not any(k in static for k in EPOCH_KEYS) and "StrategyConfig" not in config:
            errors.append("Hyperband needs MaxResource: a static epochs hyperparameter or HyperbandStrategyConfig")
    limits = config["ResourceLimits"]
    if limits["MaxParallelTrainingJobs"] > limits["MaxNumberOfTrainingJobs"]:
        errors.append("MaxParallelTrainingJobs cannot exceed MaxNumberOfTrainingJobs")
    for r in ranges.get("IntegerParameterRanges", []) + ranges.get("ContinuousParameterRanges", []):
        low, high = float(r["MinValue"]), float(r["MaxValue"])
        scale = r.get("ScalingType", "Auto")
        if low >= high:
            errors.append(f"{r['Name']}: MinValue must be less than MaxValue")
        if scale == "Logarithmic" and low <= 0:
            errors.append(f"{r['Name']}: logarithmic scaling needs MinValue > 0")
        if scale == "ReverseLogarithmic" and not 0 <= low < high < 1:
            errors.append(f"{r['Name']}: reverse logarithmic scaling needs 0 <= MinValue < MaxValue < 1")
    for r in ranges.get("IntegerParameterRanges", []):
        if not (float(r["MinValue"]).is_integer() and float(r["MaxValue"]).is_integer()):
            errors.append(f"{r['Name']}: integer ranges need whole bounds")
    return errors


def draw(ranges: dict[str, list[dict[str, Any]]], rng: random.Random) -> dict[str, str]:
    """One random point of the ranges, as SageMaker hands tuned values to a job (text)."""
    out: dict[str, str] = {}
    for r in ranges.get("CategoricalParameterRanges", []):
        out[r["Name"]] = rng.choice(r["Values"])
    for kind in ("ContinuousParameterRanges", "IntegerParameterRanges"):
        for r in ranges.get(kind, []):
            low, high = float(r["MinValue"]), float(r["MaxValue"])
            scale = r.get("ScalingType", "Auto")
            if scale == "Logarithmic":
                x = math.exp(rng.uniform(math.log(low), math.log(high)))
            elif scale == "ReverseLogarithmic":
                x = 1 - math.exp(rng.uniform(math.log(1 - high), math.log(1 - low)))
            else:
                x = rng.uniform(low, high)
            out[r["Name"]] = str(round(x)) if kind == "IntegerParameterRanges" else repr(x)
    return out


def grid_points(ranges: dict[str, list[dict[str, Any]]]) -> list[dict[str, str]]:
    points: list[dict[str, str]] = [{}]
    for r in ranges.get("CategoricalParameterRanges", []):
        points = [{**p, r["Name"]: v} for p in points for v in r["Values"]]
    return points


class Tuner:
    """The tuning jobs of one control plane; its `ops` join the plane's SageMaker operations."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.jobs: dict[str, _Tuning] = {}
        self.lock = threading.Lock()

    def ops(self) -> dict[str, Any]:
        return {
            "CreateHyperParameterTuningJob": self.create,
            "DescribeHyperParameterTuningJob": lambda p: self.describe(self._get(p["HyperParameterTuningJobName"])),
            "ListTrainingJobsForHyperParameterTuningJob": self.list_trials,
            "StopHyperParameterTuningJob": self.stop,
            "ListHyperParameterTuningJobs": self.list_tunings,
        }

    def _get(self, name: str) -> _Tuning:
        from tests.sagemaker_control_plane import ApiError

        tuning = self.jobs.get(name)
        if tuning is None:
            raise ApiError("ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}")
        return tuning

    def create(self, p: dict[str, Any]) -> dict[str, Any]:
        from tests.sagemaker_control_plane import ACCOUNT, ApiError

        errors = rules(p)
        if errors:
            raise ApiError("ValidationException", "; ".join(errors))
        name = p["HyperParameterTuningJobName"]
        arn = f"arn:aws:sagemaker:{self.plane.region}:{ACCOUNT}:hyper-parameter-tuning-job/{name.lower()}"
        tuning = _Tuning(name, arn, p, time.time())
        with self.lock:
            if name in self.jobs:
                raise ApiError("ResourceInUse", f"Hyperparameter tuning job {name} already exists")
            self.jobs[name] = tuning
        tuning.thread = threading.Thread(target=self._run, args=(tuning,), name=f"tuning-{name}", daemon=True)
        tuning.thread.start()
        return {"HyperParameterTuningJobArn": arn}

    # --- running a tuning job ----------------------------------------------------------------------------

    def _run(self, t: _Tuning) -> None:
        config = t.request["HyperParameterTuningJobConfig"]
        limits = config["ResourceLimits"]
        ranges = config.get("ParameterRanges", {})
        rng = random.Random(config.get("RandomSeed"))
        points = grid_points(ranges) if config["Strategy"] == "Grid" else None
        total = (
            min(limits["MaxNumberOfTrainingJobs"], len(points))
            if points is not None
            else limits["MaxNumberOfTrainingJobs"]
        )
        deadline = t.created + limits.get("MaxRuntimeInSeconds", 15_768_000)
        try:
            while not self.plane._closing.is_set():
                running = [x for x in t.trials if not self._status(x).endswith(TERMINAL)]
                self._early_stop(t, running)
                if t.stop.is_set() or time.time() >= deadline:
                    self._stop_all(t, running)
                    t.status, t.ended = "Stopped", time.time()
                    return
                while len(running) < limits["MaxParallelTrainingJobs"] and len(t.trials) < total:
                    values = points[len(t.trials)] if points is not None else draw(ranges, rng)
                    running.append(self._start_trial(t, values))
                if not running and len(t.trials) >= total:
                    ok = any(self._status(x) == "Completed" and self._objective(t, x) is not None for x in t.trials)
                    t.status = "Completed" if ok else "Failed"
                    t.failure_reason = None if ok else "No training job reported the objective metric"
                    t.ended = time.time()
                    return
                time.sleep(POLL_S)
        except Exception as e:  # the stand-in's own bug: the tuning job fails with it, visibly
            t.status, t.failure_reason, t.ended = "Failed", f"InternalServerError: {type(e).__name__}: {e}", time.time()

    def _start_trial(self, t: _Tuning, values: dict[str, str]) -> _Trial:
        d = t.request["TrainingJobDefinition"]
        name = f"{t.name}-{len(t.trials) + 1:03d}-{secrets.token_hex(4)}"
        resources = dict(d["HyperParameterTuningResourceConfig"])
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": d["AlgorithmSpecification"],
            "HyperParameters": {**d.get("StaticHyperParameters", {}), **values},
            "RoleArn": d["RoleArn"],
            "OutputDataConfig": d["OutputDataConfig"],
            "ResourceConfig": {k: v for k, v in resources.items() if k != "AllocationStrategy"},
            "StoppingCondition": d["StoppingCondition"],
        }
        for key in ("InputDataConfig", "VpcConfig", "EnableManagedSpotTraining", "Environment", "RetryStrategy"):
            if key in d:
                request[key] = d[key]
        if "CheckpointConfig" in d:  # each trial under a prefix of its own
            checkpoint = dict(d["CheckpointConfig"])
            checkpoint["S3Uri"] = f"{checkpoint['S3Uri'].rstrip('/')}/{name}"
            request["CheckpointConfig"] = checkpoint
        if t.request.get("Tags"):
            request["Tags"] = t.request["Tags"]
        trial = _Trial(name, values)
        t.trials.append(trial)
        self.plane._validate("CreateTrainingJob", request)
        self.plane._create(request)
        job = self.plane._jobs[name]  # DescribeTrainingJob (and Search) show a trial's tuning job, as AWS's do
        job.request = {**job.request, "TuningJobArn": t.arn}
        return trial

    def _status(self, trial: _Trial) -> str:
        job = self.plane._jobs.get(trial.name)
        return job.info.status if job is not None else "Failed"

    def _objective(self, t: _Tuning, trial: _Trial) -> float | None:
        job = self.plane._jobs.get(trial.name)
        metric = t.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"]
        return None if job is None else job.info.metrics.get(metric)

    def _early_stop(self, t: _Tuning, running: list[_Trial]) -> None:
        """Each running trial's objective history (one value per new value printed), and the median rule."""
        config = t.request["HyperParameterTuningJobConfig"]
        maximize = config["HyperParameterTuningJobObjective"]["Type"] == "Maximize"
        for trial in t.trials:
            value = self._objective(t, trial)
            if value is not None and (not trial.history or trial.history[-1] != value):
                trial.history.append(value)
        if config.get("TrainingJobEarlyStoppingType", "Off") != "Auto":
            return
        done = [x for x in t.trials if self._status(x) == "Completed" and x.history]
        for trial in running:
            epoch = len(trial.history)
            earlier = [x for x in done if len(x.history) >= epoch]
            if trial.early_stopped or epoch == 0 or len(earlier) < MEDIAN_AFTER:
                continue
            median = statistics.median(statistics.fmean(x.history[:epoch]) for x in earlier)
            mine = statistics.fmean(trial.history)
            if (mine < median) if maximize else (mine > median):
                trial.early_stopped = True
                self._stop_trial(trial)

    def _stop_trial(self, trial: _Trial) -> None:
        from tests.sagemaker_control_plane import ApiError

        with contextlib.suppress(ApiError):  # it ended in between
            self.plane._stop({"TrainingJobName": trial.name})

    def _stop_all(self, t: _Tuning, running: list[_Trial]) -> None:
        t.status = "Stopping"
        for trial in running:
            self._stop_trial(trial)
        while any(not self._status(x).endswith(TERMINAL) for x in running) and not self.plane._closing.is_set():
            time.sleep(POLL_S)

    # --- reading -------------------------------------------------------------------------------------------

    def _summary(self, t: _Tuning, trial: _Trial) -> dict[str, Any]:
        job = self.plane._jobs[trial.name]
        described = self.plane._describe(job)
        out: dict[str, Any] = {
            "TrainingJobName": trial.name,
            "TrainingJobArn": job.arn,
            "TuningJobName": t.name,
            "CreationTime": described["CreationTime"],
            "TrainingJobStatus": job.info.status,
            "TunedHyperParameters": trial.values,
        }
        for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
            if key in described:
                out[key] = described[key]
        objective = self._objective(t, trial)
        metric = t.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
        if objective is not None:
            out["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": metric["Type"],
                "MetricName": metric["MetricName"],
                "Value": objective,
            }
        if job.info.status in TERMINAL:
            out["ObjectiveStatus"] = "Succeeded" if objective is not None else "Failed"
        else:
            out["ObjectiveStatus"] = "Pending"
        return out

    def describe(self, t: _Tuning) -> dict[str, Any]:
        summaries = [self._summary(t, x) for x in list(t.trials) if x.name in self.plane._jobs]
        statuses = [s["TrainingJobStatus"] for s in summaries]
        out: dict[str, Any] = {
            "HyperParameterTuningJobName": t.name,
            "HyperParameterTuningJobArn": t.arn,
            "HyperParameterTuningJobConfig": t.request["HyperParameterTuningJobConfig"],
            "TrainingJobDefinition": t.request["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": t.status,
            "CreationTime": t.created,
            "LastModifiedTime": time.time(),
            "TrainingJobStatusCounters": {
                "Completed": statuses.count("Completed"),
                "InProgress": statuses.count("InProgress") + statuses.count("Stopping"),
                "RetryableError": 0,
                "NonRetryableError": statuses.count("Failed"),
                "Stopped": statuses.count("Stopped"),
            },
            "ObjectiveStatusCounters": {
                k: sum(s["ObjectiveStatus"] == k for s in summaries) for k in ("Succeeded", "Pending", "Failed")
            },
        }
        if "WarmStartConfig" in t.request:
            out["WarmStartConfig"] = t.request["WarmStartConfig"]
        if t.ended is not None:
            out["HyperParameterTuningEndTime"] = t.ended
        if t.failure_reason:
            out["FailureReason"] = t.failure_reason
        scored = [
            s
            for s in summaries
            if s["TrainingJobStatus"] == "Completed" and "FinalHyperParameterTuningJobObjectiveMetric" in s
        ]
        if scored:
            maximize = (
                t.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["Type"] == "Maximize"
            )
            value = lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]  # noqa: E731
            out["BestTrainingJob"] = max(scored, key=value) if maximize else min(scored, key=value)
        return out

    def list_trials(self, p: dict[str, Any]) -> dict[str, Any]:
        from tests.sagemaker_control_plane import _page

        t = self._get(p["HyperParameterTuningJobName"])
        summaries = [self._summary(t, x) for x in list(t.trials) if x.name in self.plane._jobs]
        if p.get("StatusEquals"):
            summaries = [s for s in summaries if s["TrainingJobStatus"] == p["StatusEquals"]]
        summaries.sort(key=lambda s: s["CreationTime"], reverse=p.get("SortOrder", "Descending") == "Descending")
        page, token = _page(summaries, p, default=10)
        return {"TrainingJobSummaries": page} | ({"NextToken": token} if token else {})

    def list_tunings(self, p: dict[str, Any]) -> dict[str, Any]:
        from tests.sagemaker_control_plane import _page

        tunings = sorted(self.jobs.values(), key=lambda t: t.created, reverse=p.get("SortOrder") != "Ascending")
        page, token = _page(tunings, p, default=10)
        summaries = []
        for t in page:
            described = self.describe(t)
            summary = {
                k: described[k]
                for k in (
                    "HyperParameterTuningJobName",
                    "HyperParameterTuningJobArn",
                    "HyperParameterTuningJobStatus",
                    "CreationTime",
                    "HyperParameterTuningEndTime",
                    "LastModifiedTime",
                    "TrainingJobStatusCounters",
                    "ObjectiveStatusCounters",
                )
                if k in described
            }
            config = t.request["HyperParameterTuningJobConfig"]
            summary.update(Strategy=config["Strategy"], ResourceLimits=config["ResourceLimits"])
            summaries.append(summary)
        return {"HyperParameterTuningJobSummaries": summaries} | ({"NextToken": token} if token else {})

    def stop(self, p: dict[str, Any]) -> dict[str, Any]:
        from tests.sagemaker_control_plane import ApiError

        t = self._get(p["HyperParameterTuningJobName"])
        if t.status != "InProgress":
            raise ApiError(
                "ValidationException", f"The tuning job {t.name} is in status {t.status} and cannot be stopped"
            )
        t.status = "Stopping"
        t.stop.set()
        return {}

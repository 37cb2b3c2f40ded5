"""Sweeps on SageMaker: the CreateHyperParameterTuningJob cloudtrain sends is the sagemaker SDK's tuner's, field
by field (the SDK's own request captured before it leaves its process); the test SageMaker refuses what AWS
refuses and runs a tuning job as AWS does; and a sweep runs end to end through it from `cloudtrain submit`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.loopback_aws import ROLE_ARN
from tests.sagemaker_control_plane import ControlPlane
from tests.sdk import SDK_MISSING, SDK_PYTHON, run_sdk
from tests.test_sagemaker_e2e import DIGITS, ct, digits_overrides, write_job

SWEEP = [
    "sweep.objective.metric=val_accuracy",
    "sweep.objective.goal=maximize",
    "sweep.strategy=bayesian",
    "sweep.parameters.learning_rate.min=0.0005",
    "sweep.parameters.learning_rate.max=0.05",
    "sweep.parameters.learning_rate.scale=log",
    "sweep.parameters.units.min=32",
    "sweep.parameters.units.max=256",
    "sweep.parameters.units.type=integer",
    "sweep.parameters.batch_size.values=[32, 64, 128]",
    "sweep.max_trials=12",
    "sweep.max_parallel=3",
    "sweep.early_stopping=auto",
    "sweep.max_cost=40",
    "sweep.seed=7",
]

SDK_TUNER = '''\
"""Under .venv-sdk: the SDK's HyperparameterTuner(...).fit() request, captured before it is sent (no network)."""
import json, sys

import boto3
from sagemaker.session import Session
from sagemaker.tensorflow import TensorFlow
from sagemaker.tuner import CategoricalParameter, ContinuousParameter, HyperparameterTuner, IntegerParameter

cfg = json.loads(sys.argv[1])
session_boto = boto3.Session(region_name=cfg["region"], aws_access_key_id="x", aws_secret_access_key="x")
sm = session_boto.client("sagemaker")
captured = {}


def capture(model, params, **kwargs):
    if model.name == "CreateHyperParameterTuningJob":
        captured.update(params)
        raise KeyboardInterrupt  # sent nowhere
    raise RuntimeError(f"the SDK called {model.name}")


sm.meta.events.register("before-parameter-build.sagemaker.*", capture)  # its parameters, before serialising
session = Session(boto_session=session_boto, sagemaker_client=sm, default_bucket=cfg["bucket"])
session._default_bucket = cfg["bucket"]  # the SDK would look it up through STS
kinds = {"continuous": ContinuousParameter, "integer": IntegerParameter}
scaling = {"log": "Logarithmic", "linear": "Linear", "reverse_log": "ReverseLogarithmic", "auto": "Auto"}
ranges = {}
for name, r in cfg["parameters"].items():
    if "values" in r:
        ranges[name] = CategoricalParameter(r["values"])
    else:
        kind = r.get("type") or "continuous"
        ranges[name] = kinds[kind](r["min"] if kind != "integer" else int(r["min"]),
                                   r["max"] if kind != "integer" else int(r["max"]),
                                   scaling_type=scaling[r.get("scale", "auto")])
estimator = TensorFlow(
    sagemaker_session=session,
    entry_point=cfg["entry_point"],
    source_dir=cfg["code_uri"],  # the tarball cloudtrain uploaded: the same code, by content
    role=cfg["role"],
    framework_version=cfg["framework_version"],
    py_version=cfg["py_version"],
    instance_type=cfg["instance_type"],
    instance_count=cfg["instance_count"],
    volume_size=cfg["volume_size"],
    max_run=cfg["max_run"],
    hyperparameters=cfg["hyperparameters"],
    environment=cfg["environment"],
    checkpoint_s3_uri=cfg["checkpoint_s3_uri"],
    output_path=cfg["output_path"],
    distribution={"multi_worker_mirrored_strategy": {"enabled": True}},
)
tuner = HyperparameterTuner(
    estimator,
    cfg["objective"],
    ranges,
    metric_definitions=cfg["metric_definitions"],
    objective_type=cfg["goal"],
    max_jobs=cfg["max_trials"],
    max_parallel_jobs=cfg["max_parallel"],
    strategy=cfg["strategy"],
    early_stopping_type=cfg["early_stopping"],
    random_seed=cfg["seed"],
)
try:
    tuner.fit(cfg["inputs"], job_name=cfg["name"], include_cls_metadata=False, wait=False)
except KeyboardInterrupt:
    pass
print(json.dumps(captured))
'''


def with_channel_defaults(channels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"CompressionType": "None", "RecordWrapperType": "None", **c} for c in channels]


@pytest.mark.skipif(not SDK_PYTHON.exists(), reason=SDK_MISSING)
def test_dry_run_is_the_sdk_tuners_request(aws_endpoint: str, tmp_path: Path) -> None:
    """The issue's sweep on job_specs/digits.yaml: --dry-run's request against HyperparameterTuner.fit()'s."""
    from cloudtrain.spec.load import load_spec

    home = tmp_path / "home"
    for channel in ("train", "eval"):
        (tmp_path / channel).mkdir()
        (tmp_path / channel / "digits.npz").write_bytes(channel.encode())
    sets = [*digits_overrides(tmp_path)]
    for item in SWEEP:
        sets += ["--set", item]
    submit = ("submit", str(DIGITS), "--backend", "sagemaker", "--role-arn", ROLE_ARN, "--dry-run", "--json")
    planned = ct(*submit, *sets, home=home)
    assert planned.code == 0, planned.err
    plan = planned.json()["plan"]
    mine = plan["request"]
    assert "worst case $" in plan["sweep_cost"]["summary"] and plan["sweep_cost"]["trials_covered"] >= 1
    name = mine["HyperParameterTuningJobName"]
    assert len(name) <= 32 and name.startswith("digits-mwms-")

    spec = load_spec(DIGITS, [s for s in sets if s != "--set"])
    assert spec.sweep is not None
    definition = mine["TrainingJobDefinition"]
    hp = definition["StaticHyperParameters"]
    settings = {
        "region": "us-east-1",
        "bucket": definition["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://").split("/")[0],
        "name": name,
        "entry_point": spec.code.entry_point,
        "code_uri": json.loads(hp["sagemaker_submit_directory"]),
        "role": definition["RoleArn"],
        "framework_version": spec.image.framework_version,
        "py_version": "py312",
        "instance_type": spec.resources.instance_type,
        "instance_count": spec.resources.instance_count,
        "volume_size": spec.resources.volume_size_gb,
        "max_run": spec.resources.max_runtime,
        "hyperparameters": spec.hyperparameters,
        "environment": {k: v for k, v in definition["Environment"].items() if not k.startswith("CLOUDTRAIN_")},
        "checkpoint_s3_uri": definition["CheckpointConfig"]["S3Uri"],
        "output_path": definition["OutputDataConfig"]["S3OutputPath"],
        "inputs": {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"]},
        "metric_definitions": [{"Name": m.name, "Regex": m.regex} for m in spec.metrics],
        "objective": spec.sweep.objective.metric,
        "goal": spec.sweep.objective.goal.capitalize(),
        "parameters": {k: r.model_dump(exclude_none=True) for k, r in spec.sweep.parameters.items()},
        "max_trials": spec.sweep.max_trials,
        "max_parallel": spec.sweep.max_parallel,
        "strategy": "Bayesian",
        "early_stopping": "Auto",
        "seed": spec.sweep.seed,
    }
    theirs = run_sdk(SDK_TUNER, settings, tmp_path)

    assert theirs["HyperParameterTuningJobName"] == name
    # The tuning configuration: the same but for the runtime limit max_cost sets (docs/sweeps.md).
    ours_config = json.loads(json.dumps(mine["HyperParameterTuningJobConfig"]))
    assert ours_config["ResourceLimits"].pop("MaxRuntimeInSeconds") == plan["sweep_cost"]["runtime_limit_s"]
    assert ours_config == theirs["HyperParameterTuningJobConfig"]
    theirs_definition = theirs["TrainingJobDefinition"]
    # Static hyperparameters: the job's own minus the tuned ones, script mode's included (model_dir too); the
    # SDK adds its estimator's class, which only its own `attach` reads.
    theirs_hp = {k: v for k, v in theirs_definition["StaticHyperParameters"].items() if "estimator" not in k}
    assert hp == theirs_hp
    assert "learning_rate" not in hp and "epochs" in hp
    for field in ("HyperParameterTuningResourceConfig", "AlgorithmSpecification", "RoleArn", "OutputDataConfig"):
        assert definition[field] == theirs_definition[field], field
    for field in ("StoppingCondition", "CheckpointConfig"):
        assert {k: v for k, v in definition[field].items() if k != "LocalPath"} == theirs_definition[field], field
    ours_env = {k: v for k, v in definition["Environment"].items() if not k.startswith("CLOUDTRAIN_")}
    assert ours_env == theirs_definition["Environment"]  # cloudtrain.runtime's own settings apart
    assert with_channel_defaults(definition["InputDataConfig"]) == with_channel_defaults(
        theirs_definition["InputDataConfig"]
    )


# --- the test SageMaker's tuning service --------------------------------------------------------------------

SCORER = """\
    import os, sys, time
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    rate = float(args["--rate"])
    chief = os.environ["SM_CURRENT_HOST"] == "algo-1"
    for epoch in range(1, 4):
        time.sleep(0.3)
        if chief:  # metric lines on the chief only, as the objective wants
            print(f"epoch={epoch} score={rate * epoch:.4f}", flush=True)
    if chief:
        open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "w").write(str(rate))
    """

SWEEP_SPEC = """\
sweep:
  objective: {metric: score, goal: maximize}
  strategy: random
  parameters:
    rate: {min: 0.1, max: 0.9}
  max_trials: 4
  max_parallel: 2
  seed: 3
"""


def test_a_sweep_runs_end_to_end_through_the_test_sagemaker(sagemaker_endpoint: ControlPlane, tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = write_job(tmp_path, SCORER)
    spec.write_text(spec.read_text().replace("score=([0-9.]+)", r"epoch=\\d+ score=([0-9.]+)") + SWEEP_SPEC)
    done = ct("submit", str(spec), "--backend", "sagemaker", "--wait", "--json", home=home, timeout=600)
    assert done.code == 0, done.err
    sweep = done.json()["sweep"]
    assert sweep["status"] == "Completed" and sweep["counters"]["Completed"] == 4
    (created,) = [r.json() for r in sagemaker_endpoint.calls("CreateHyperParameterTuningJob")]
    trials = sagemaker_endpoint.calls("CreateTrainingJob")
    assert len(trials) == 0  # cloudtrain sent no training job itself: the tuning service made them
    name = created["HyperParameterTuningJobName"]
    sm = boto3.client("sagemaker")
    described = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert described["TrainingJobStatusCounters"]["Completed"] == 4
    best = described["BestTrainingJob"]
    listed = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    values = {
        s["TrainingJobName"]: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        for s in listed["TrainingJobSummaries"]
    }
    assert best["TrainingJobName"] == max(values, key=values.__getitem__) == sweep["best_trial"]
    # MaxParallelTrainingJobs held: never more than 2 trials at once
    spans = [(s["CreationTime"].timestamp(), s["TrainingEndTime"].timestamp()) for s in listed["TrainingJobSummaries"]]
    assert max(sum(a <= t < b for a, b in spans) for t, _ in spans) <= 2
    for s in listed["TrainingJobSummaries"]:  # AWS's names for a tuning job's trials; each value in its range
        assert s["TrainingJobName"].startswith(f"{name}-") and 0.1 <= float(s["TunedHyperParameters"]["rate"]) <= 0.9

    status = ct("status", name, "--json", home=home)
    assert status.code == 0 and status.json()["best_trial"] == best["TrainingJobName"]
    fetched = ct("fetch-model", name, "--to", str(tmp_path / "best"), "--json", home=home)
    assert fetched.code == 0, fetched.err
    assert (tmp_path / "best" / "sweep_report.html").is_file() and (tmp_path / "best" / "sweep_trials.csv").is_file()
    rate = float((tmp_path / "best" / "model" / "weights.bin").read_text())  # the best trial's model
    assert rate * 3 == pytest.approx(values[best["TrainingJobName"]], abs=1e-3)
    listing = ct("status", "--json", home=home).json()
    assert [row["name"] for row in listing if row.get("kind") == "sweep"] == [name]


def test_the_test_sagemaker_stops_a_tuning_job_and_its_trials(sagemaker_endpoint: ControlPlane, tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = write_job(tmp_path, "import time\nprint('score=0.5', flush=True)\ntime.sleep(300)\n")
    spec.write_text(spec.read_text() + SWEEP_SPEC)
    started = ct("submit", str(spec), "--backend", "sagemaker", "--json", home=home)
    assert started.code == 0, started.err
    name = started.json()["job"]["name"]
    sm = boto3.client("sagemaker")
    deadline = time.monotonic() + 120
    while (
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["TrainingJobStatusCounters"][
            "InProgress"
        ]
        < 2
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    stopped = ct("stop", name, "--wait", "--json", home=home, timeout=300)
    assert stopped.code == 0, stopped.err
    assert stopped.json()["status"] == "Stopped"
    counters = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["TrainingJobStatusCounters"]
    assert counters["Stopped"] == 2 and counters["InProgress"] == 0  # no third trial was started


def a_valid_request(plane: ControlPlane, tmp_path: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    spec = write_job(tmp_path, "print('score=0.5')\n")
    spec.write_text(spec.read_text() + SWEEP_SPEC + "hyperparameters: {epochs: 3}\n")
    planned = ct("submit", str(spec), "--backend", "sagemaker", "--dry-run", "--json", home=home)
    assert planned.code == 0, planned.err
    return planned.json()["plan"]["request"]


def _ranges(r: dict[str, Any]) -> dict[str, Any]:
    return r["HyperParameterTuningJobConfig"]["ParameterRanges"]


def _config(r: dict[str, Any]) -> dict[str, Any]:
    return r["HyperParameterTuningJobConfig"]


REFUSED = {  # the spec's refusals (tests/test_sweep_spec.py), as the requests AWS would get
    "31 ranges": lambda r: _ranges(r).update(
        ContinuousParameterRanges=[{"Name": f"p{i}", "MinValue": "0", "MaxValue": "1"} for i in range(31)]
    ),
    "31 values": lambda r: _ranges(r).update(
        CategoricalParameterRanges=[{"Name": "c", "Values": [str(i) for i in range(31)]}]
    ),
    "grid with a continuous range": lambda r: _config(r).update(Strategy="Grid"),
    "hyperband with early stopping": lambda r: _config(r).update(
        Strategy="Hyperband", TrainingJobEarlyStoppingType="Auto"
    ),
    "hyperband without epochs": lambda r: (
        _config(r).update(Strategy="Hyperband"),
        r["TrainingJobDefinition"]["StaticHyperParameters"].pop("epochs"),
    ),
    "objective not a metric": lambda r: _config(r)["HyperParameterTuningJobObjective"].update(MetricName="nope"),
    "21 metrics": lambda r: r["TrainingJobDefinition"]["AlgorithmSpecification"].update(
        MetricDefinitions=[{"Name": "score", "Regex": "s=(.*)"}]
        + [{"Name": f"m{i}", "Regex": f"m{i}=(.*)"} for i in range(20)]
    ),
    "log scale with min 0": lambda r: _ranges(r)["ContinuousParameterRanges"][0].update(
        MinValue="0", ScalingType="Logarithmic"
    ),
    "reverse log up to 1": lambda r: _ranges(r)["ContinuousParameterRanges"][0].update(
        MinValue="0.5", MaxValue="1", ScalingType="ReverseLogarithmic"
    ),
    "min >= max": lambda r: _ranges(r)["ContinuousParameterRanges"][0].update(MinValue="0.9", MaxValue="0.1"),
    "fractional integer bounds": lambda r: _ranges(r).update(
        IntegerParameterRanges=[{"Name": "u", "MinValue": "1.5", "MaxValue": "9", "ScalingType": "Auto"}]
    ),
    "max_parallel above max_trials": lambda r: _config(r)["ResourceLimits"].update(MaxParallelTrainingJobs=5),
    "max_parallel 0": lambda r: _config(r)["ResourceLimits"].update(MaxParallelTrainingJobs=0),
    "6 warm start parents": lambda r: r.update(
        WarmStartConfig={
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": f"p{i}"} for i in range(6)],
            "WarmStartType": "IdenticalDataAndAlgorithm",
        }
    ),
    "a 33-character name": lambda r: r.update(HyperParameterTuningJobName="x" * 33),
}


def test_the_test_sagemaker_refuses_what_aws_refuses(sagemaker_endpoint: ControlPlane, tmp_path: Path) -> None:
    valid = a_valid_request(sagemaker_endpoint, tmp_path)
    sm = boto3.client("sagemaker")
    from botocore.config import Config

    raw = boto3.client("sagemaker", config=Config(parameter_validation=False))  # as a client with a bug sends it
    for what, change in REFUSED.items():
        request = json.loads(json.dumps(valid))
        change(request)
        with pytest.raises(ClientError) as refused:
            raw.create_hyper_parameter_tuning_job(**request)
        assert refused.value.response["Error"]["Code"] == "ValidationException", what
    sm.create_hyper_parameter_tuning_job(**valid)  # and the request itself is fine
    assert sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=valid["HyperParameterTuningJobName"])

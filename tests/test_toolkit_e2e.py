"""AWS's own container code is the judge: jobs on the stock TF image run under the sagemaker-training toolkit.

The `toolkit_endpoint` fixture is the SageMaker control plane (tests/sagemaker_control_plane.py) running
each host of a stock-image job through AWS's `train` entry point (sagemaker-training 4.8.3, what AWS's TF
images run, and 5.1.4, the newest), each in namespaces of its own (tests/toolkit_runner.py). A user submits
with the real CLI and gets the model back with `fetch-model`; the contract test runs one script under the
toolkit and under `cloudtrain submit --backend local` and compares what each handed it, key by key.
Every test here starts TensorFlow (the TF toolkit imports it), so all are slow.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.clirun import cloudtrain, environment
from tests.netns import HostNetwork
from tests.sagemaker_control_plane import ControlPlane
from tests.test_sagemaker_e2e import (  # noqa: F401  (digits_data and home are fixtures)
    DIGITS,
    FAILER,
    cloudwatch,
    ct,
    digits_data,
    digits_overrides,
    home,
    log_events,
    wait_for,
)
from tests.test_sagemaker_e2e import write_job as write_sagemaker_job
from tests.toolkit_runner import Toolkit, stand_ins

pytestmark = pytest.mark.slow
# The control plane's own behaviour (stop, failure reason) under the version AWS's TF images run; jobs that
# train run under both versions.
AWS_IMAGES_TOOLKIT_ONLY = pytest.mark.parametrize("toolkit_endpoint", ["4.8.3"], indirect=True, ids=["toolkit-4.8.3"])

# --- users' jobs on two hosts under AWS's toolkit ------------------------------------------------------------

SCRIPTS = (
    Path(__file__).parent / "scripts"
)  # users' scripts that import nothing of cloudtrain (tests/test_plain_keras.py)
PLAIN_KERAS_SPEC = """\
name: plain-keras
code: {{source_dir: {scripts}, entry_point: {entry_point}}}
image: {{framework_version: "2.19"}}
resources: {{instance_type: ml.m5.xlarge, instance_count: 2}}
distribution: {{strategy: multi_worker_mirrored}}
data: {{train: {data}/train, eval: {data}/eval}}
hyperparameters: {{epochs: 5, batch_size: 64}}
metrics: [{{name: accuracy, regex: "{metric}=([0-9.]+)"}}]
"""
# (entry point, the line each worker ends with, where the chief's SavedModel lands in model/)
PLAIN_KERAS_SHAPES = {
    "sagemaker-docs": ("plain_keras_sm.py", "eval_accuracy", "000000001/saved_model.pb"),
    "tf-tutorial": ("tf_tutorial.py", "final accuracy", "keras-model/saved_model.pb"),
}
SLEEPER = """\
    import time
    print("sleeping", flush=True)
    time.sleep(300)
    """


def toolkit_downloads(plane: ControlPlane, job: str) -> tuple[int, int]:
    """How many times the code tarball was downloaded through the endpoint, and GetBucketLocation was asked.

    The CLI never downloads the code and the control plane reads S3 from moto directly, so these are the
    toolkit's own requests (sagemaker_submit_directory, and s3_utils.configure for --model_dir).
    """
    request = next(r.json() for r in plane.calls("CreateTrainingJob") if r.json()["TrainingJobName"] == job)
    code = json.loads(request["HyperParameters"]["sagemaker_submit_directory"]).removeprefix("s3://")
    gets = [r for r in plane.requests if r.method == "GET" and r.path.split("?")[0] == f"/{code}"]
    locations = [r for r in plane.requests if r.method == "GET" and r.path.endswith("?location")]
    return len(gets), len(locations)


def assert_torn_down(plane: ControlPlane, job: str) -> None:
    """The job's namespaces are gone (and with them every process and mount of its hosts)."""
    network = HostNetwork.load(plane.home / "jobs" / job)
    assert network is not None  # it ran under the toolkit
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"ct-{network.token}-" not in listed


def test_digits_trains_on_two_hosts_under_awss_toolkit(
    toolkit_endpoint: ControlPlane,
    digits_data: Path,  # noqa: F811
    tmp_path: Path,
    home: Path,  # noqa: F811
) -> None:
    """job_specs/digits.yaml on AWS's stock image: the toolkit fetches the code itself, both hosts train, the
    model comes back with fetch-model."""
    done = ct(
        "submit", str(DIGITS), "--backend", "sagemaker", *digits_overrides(digits_data), "--wait", "--json", home=home
    )
    assert done.code == 0, done.err[-3000:]
    name = done.json()["job"]["name"]
    assert toolkit_downloads(toolkit_endpoint, name) == (2, 2)  # one of each per host
    events = log_events(name, home)
    assert any("Invoking user script" in e["message"] for e in events if e["host"] == "algo-2")  # the toolkit's
    assert any(e["message"].startswith("epoch=12 ") for e in events if e["host"] == "algo-1")
    info = ct("status", name, "--json", home=home).json()
    assert info["status"] == "Completed" and info["metrics"]["val_accuracy"] >= 0.9
    out = tmp_path / "fetched"
    fetched = ct("fetch-model", name, "--to", str(out), home=home)
    assert fetched.code == 0, fetched.err
    assert json.loads((out / "output" / "eval_report.json").read_text())["accuracy"] >= 0.9
    assert any((out / "model").iterdir())
    assert_torn_down(toolkit_endpoint, name)


@pytest.mark.parametrize("shape", PLAIN_KERAS_SHAPES)
def test_plain_keras_script_trains_on_two_hosts_under_awss_toolkit(
    toolkit_endpoint: ControlPlane,
    digits_data: Path,  # noqa: F811
    tmp_path: Path,
    home: Path,  # noqa: F811
    shape: str,
) -> None:
    """Unchanged plain-Keras scripts (SageMaker's documentation shape: strict argparse that knows --model_dir; TF's
    multi-worker tutorial shape: TF_CONFIG, steps_per_epoch) train with model.fit under MultiWorkerMirroredStrategy
    on AWS's TF 2.19 image, tf-keras chosen by `distribution.keras: auto`, and the SavedModel comes back."""
    entry_point, metric, saved_model = PLAIN_KERAS_SHAPES[shape]
    spec = tmp_path / "job.yaml"
    spec.write_text(PLAIN_KERAS_SPEC.format(scripts=SCRIPTS, entry_point=entry_point, data=digits_data, metric=metric))
    done = ct("submit", str(spec), "--backend", "sagemaker", "--wait", "--json", home=home)
    assert done.code == 0, done.err[-3000:]
    name = done.json()["job"]["name"]
    info = ct("status", name, "--json", home=home).json()
    assert info["status"] == "Completed" and info["metrics"]["accuracy"] >= 0.8
    events = log_events(name, home)
    assert {e["host"] for e in events if f"{metric}=" in e["message"]} == {"algo-1"}  # the chief reports
    fitted = {e["host"] for e in events if re.search(r"accuracy: [0-9.]+", e["message"])}  # Keras's own lines
    assert fitted == {"algo-1", "algo-2"}, [e["message"] for e in events][-40:]  # both workers trained
    out = tmp_path / "fetched"
    assert ct("fetch-model", name, "--to", str(out), home=home).code == 0
    assert (out / "model" / saved_model).is_file()
    assert_torn_down(toolkit_endpoint, name)


@AWS_IMAGES_TOOLKIT_ONLY
def test_stop_ends_the_toolkits_hosts_and_their_namespaces(
    toolkit_endpoint: ControlPlane,
    tmp_path: Path,
    home: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """StopTrainingJob: SIGTERM to each host's PID 1 (the toolkit has no handler, as on AWS), SIGKILL after the
    grace; the job ends Stopped and its namespaces are gone."""
    monkeypatch.setenv("CLOUDTRAIN_STOP_GRACE", "2")  # the runner's; AWS waits 120 s
    spec = write_sagemaker_job(tmp_path, SLEEPER)
    submitted = ct("submit", str(spec), "--backend", "sagemaker", "--json", home=home)
    assert submitted.code == 0, submitted.err
    name = submitted.json()["job"]["name"]
    logs = boto3.client("logs")
    wait_for("both hosts to sleep", lambda: sum("sleeping" in ls for ls in cloudwatch(name, logs).values()) == 2)
    stopped = ct("stop", name, "--wait", "--json", home=home)
    assert stopped.code == 0, stopped.err
    assert stopped.json()["status"] == "Stopped"
    assert_torn_down(toolkit_endpoint, name)


@AWS_IMAGES_TOOLKIT_ONLY
def test_failure_reason_is_what_the_toolkit_wrote(
    toolkit_endpoint: ControlPlane,
    tmp_path: Path,
    home: Path,  # noqa: F811
) -> None:
    """A script that exits 1: the toolkit writes /opt/ml/output/failure and that is the job's FailureReason, as on
    AWS (where it names the exit code and the command, not the script's message)."""
    result = ct("submit", str(write_sagemaker_job(tmp_path, FAILER)), "--backend", "sagemaker", "--wait", home=home)
    assert result.code == 1
    (job,) = toolkit_endpoint.calls("CreateTrainingJob")
    name = job.json()["TrainingJobName"]
    reason = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)["FailureReason"]
    assert reason.startswith("ExecuteUserScriptError:\nExitCode 1\n")
    failure = toolkit_endpoint.home / "jobs" / name / "hosts" / "algo-1" / "output" / "failure"
    assert reason == failure.read_text()
    assert any(e["message"] == "CUDA out of memory" for e in log_events(name, home))
    assert_torn_down(toolkit_endpoint, name)


# --- the contract: one script, run under AWS's toolkit and under the local backend -------------------------

DUMPER = """\
    \"\"\"Writes what it was handed: argv, environment, working folder, and the files of /opt/ml and the code.\"\"\"
    import json, os, sys
    from pathlib import Path

    root = Path(os.environ["SM_MODEL_DIR"]).parent  # /opt/ml on an instance


    def listing(folder):
        found = []
        for top, dirs, files in os.walk(folder, followlinks=True):
            rel = Path(top).relative_to(folder)
            found += [(rel / d).as_posix() + "/" for d in dirs] + [(rel / f).as_posix() for f in files]
        return sorted(found)


    seen = {
        "argv": sys.argv[1:],
        "environment": dict(os.environ),
        "cwd": os.getcwd(),
        "opt_ml": listing(root),
        "code": listing(root / "code"),
    }
    out = Path(os.environ["SM_OUTPUT_DATA_DIR"]) / ("contract-" + os.environ["SM_CURRENT_HOST"] + ".json")
    out.write_text(json.dumps(seen, indent=1, sort_keys=True))
    """
CONTRACT_SPEC = """\
name: contract
code: {source_dir: code, entry_point: train.py}
image: {framework_version: "2.19"}
resources: {instance_type: ml.m5.xlarge, instance_count: 2}
distribution: {strategy: multi_worker_mirrored}
data: {train: data}
hyperparameters: {epochs: 3, learning_rate: 0.002, optimizer: adam}
environment: {MY_SETTING: "on"}
"""
HOSTS = ("algo-1", "algo-2")
OPT_ML = "/opt/ml"
JOB = "<job>"

# Every difference allowed between AWS's toolkit and the local backend, each one docs/container-contract.md
# names; `normalised` (BY_KEY, Normaliser, environment_added) takes out these and nothing else, so anything
# else that differs fails the test.
ALLOWED_DIFFERENCES = {
    "surroundings": "the environment each started in (the image's ENV and the test's stand-ins for the instance "
    "role and S3 endpoint; the submitting shell's locally) is taken out: only what the runtime added is compared",
    "instance type": "SM_CURRENT_INSTANCE_TYPE and resource_config: the request's on AWS, `local` locally",
    "network interface": "SM_NETWORK_INTERFACE_NAME and resource_config: eth0 on an instance, lo locally",
    "root folder": "paths under /opt/ml on an instance are under the host's folder locally",
    "job name": "each run is a job of its own name (TRAINING_JOB_NAME, job_name, model_dir, TRAINING_JOB_ARN)",
    "worker addresses": "TF_CONFIG's cluster: algo-N:8890 on instances; 127.0.0.1 and a free port each locally",
    "code location": "sagemaker_submit_directory / SM_MODULE_DIR: S3 on AWS, the job folder's tarball locally",
    "model_dir": "--model_dir / SM_HP_MODEL_DIR: an S3 URI on AWS, a local folder locally",
    "python": "the interpreter: the image's Python on AWS, the submitting Python locally (sys.path in PYTHONPATH)",
    "region": "SAGEMAKER_REGION and S3_REGION: the job's region on AWS, `local` locally",
    "platform": "AWS_REGION and TRAINING_JOB_ARN: SageMaker's platform sets them on an instance; the local backend "
    "does not (an AWS_REGION of its own would redirect the script's own boto3 calls)",
    "tensorflow import": "ENABLE_RUNTIME_UPTIME_TELEMETRY, TF2_BEHAVIOR, TPU_ML_PLATFORM(_VERSION): set by "
    "`import tensorflow` in the TF toolkit's own process, which the script inherits",
    "shell": "PWD: 4.8.3 runs the script through /bin/sh, which sets it",
    "toolkit version": "SM_TRAINING_ENV.topology: 5.1.4 adds it (empty); the launcher has 4.8.3's keys",
    "cloudtrain's own": "CLOUDTRAIN_* variables the local backend adds, outside the SM_ namespace (documented)",
    "scratch": "TMPDIR: the local backend gives each host one in the job folder, removed with the job (an "
    "instance's /tmp goes with the instance)",
}
ONE_SIDE_ONLY = frozenset(
    {"AWS_REGION", "TRAINING_JOB_ARN", "PWD", "TMPDIR"}  # platform, shell, scratch
    | {"ENABLE_RUNTIME_UPTIME_TELEMETRY", "TF2_BEHAVIOR", "TPU_ML_PLATFORM", "TPU_ML_PLATFORM_VERSION"}
)

BY_KEY = {  # values normalised by the key they are under (instance type, network interface, model_dir)
    "current_instance_type": "<instance type>",
    "instance_type": "<instance type>",
    "SM_CURRENT_INSTANCE_TYPE": "<instance type>",
    "network_interface_name": "<interface>",
    "SM_NETWORK_INTERFACE_NAME": "<interface>",
    "SM_HP_MODEL_DIR": "<model_dir>",
    "SAGEMAKER_REGION": "<region>",
    "S3_REGION": "<region>",
}


def environment_added(seen: dict[str, str], surroundings: dict[str, str]) -> dict[str, str]:
    """What the runtime handed the script beyond the environment it was started in (a removal shows as None)."""
    added: dict[str, Any] = {k: v for k, v in seen.items() if surroundings.get(k) != v}
    added.update({k: None for k in surroundings if k not in seen})
    return added


class Normaliser:
    """Rewrites one side's values so that the allowed differences, and only those, go away."""

    def __init__(self, root: str, job: str, code_location: str) -> None:
        self.replacements = [(code_location, "<code location>"), (root, OPT_ML), (job, JOB)]

    def text(self, value: str) -> str:
        for old, new in self.replacements:
            value = value.replace(old, new)
        return re.sub(r"(algo-\d|127\.0\.0\.1):\d+", "<worker>", value)

    def value(self, value: Any, key: str = "", parent: str = "") -> Any:
        if key == "model_dir" and parent in ("SM_HPS", "hyperparameters"):  # a hyperparameter, not SM_MODEL_DIR
            return "<model_dir>"
        if key in BY_KEY and isinstance(value, str):
            return BY_KEY[key]
        if key == "PYTHONPATH" and isinstance(value, str):  # the code folder first, then the interpreter's own
            return self.text(value.split(":")[0]) + ":<interpreter's paths>"
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            values = [self.value(v) for v in value]
            if "--model_dir" in value[:-1]:  # argv and SM_USER_ARGS
                values[value.index("--model_dir") + 1] = "<model_dir>"
            return values
        if isinstance(value, dict):
            return {k: self.value(v, k, key) for k, v in value.items()}
        return value


def normalised(seen: dict[str, Any], *, root: str, job: str, surroundings: dict[str, str]) -> dict[str, Any]:
    """One side's dump without the environment it was started in, and with the ALLOWED_DIFFERENCES normalised."""
    added = environment_added(seen["environment"], surroundings)
    environment = _decode_json_values(
        {k: v for k, v in added.items() if k not in ONE_SIDE_ONLY and not k.startswith("CLOUDTRAIN_")}
    )
    environment.get("SM_TRAINING_ENV", {}).pop("topology", None)
    normaliser = Normaliser(root, job, seen["environment"].get("SM_MODULE_DIR") or "<none>")
    out: dict[str, Any] = normaliser.value(seen | {"environment": environment})
    out["opt_ml"] = [p for p in out["opt_ml"] if not p.startswith("output/data/contract-")]
    return out


def differences(aws: dict[str, Any], local: dict[str, Any], where: str = "") -> list[str]:
    """Every key whose normalised value differs, as `path: aws=… local=…`."""
    if isinstance(aws, dict) and isinstance(local, dict):
        found = []
        for key in sorted(set(aws) | set(local)):
            found += differences(aws.get(key, "<absent>"), local.get(key, "<absent>"), f"{where}.{key}")
        return found
    if aws != local:
        return [f"{where.lstrip('.')}: aws={aws!r} local={local!r}"]
    return []


def _decode_json_values(env: dict[str, Any]) -> dict[str, Any]:
    """JSON-valued variables (SM_TRAINING_ENV, TF_CONFIG ...) decoded, so a difference names its inner key."""
    decoded = {}
    for k, v in env.items():
        try:
            decoded[k] = json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
        except ValueError:
            decoded[k] = v
    return decoded


def write_contract_job(folder: Path) -> Path:
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "train.py").write_text(textwrap.dedent(DUMPER))
    (folder / "data").mkdir()
    (folder / "data" / "numbers.txt").write_text("1 2 3\n")
    spec = folder / "job.yaml"
    spec.write_text(CONTRACT_SPEC)
    return spec


def test_contract_the_toolkit_and_the_local_backend_hand_a_script_the_same(
    toolkit_endpoint: ControlPlane,
    tmp_path: Path,
    home: Path,  # noqa: F811
) -> None:
    """One script, run by AWS's toolkit (control plane) and by the local backend: what each hands it is the same,
    key by key, once the ALLOWED_DIFFERENCES are normalised away."""
    spec = write_contract_job(tmp_path / "job")
    on_aws = ct("submit", str(spec), "--backend", "sagemaker", "--wait", "--json", home=home)
    assert on_aws.code == 0, on_aws.err[-3000:]
    aws_job = on_aws.json()["job"]["name"]
    fetched = ct("fetch-model", aws_job, "--to", str(tmp_path / "aws"), home=home)
    assert fetched.code == 0, fetched.err
    local_home = tmp_path / "local-home"
    cli_env = environment(local_home)
    on_local = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=local_home)
    assert on_local.code == 0, on_local.err[-3000:]
    local_job = on_local.json()["job"]["name"]

    aws_dumps = toolkit_endpoint.home / "jobs" / aws_job / "hosts"
    local_dumps = local_home / "jobs" / local_job / "hosts"
    assert json.loads((tmp_path / "aws" / "output" / "contract-algo-1.json").read_text()) == json.loads(
        (aws_dumps / "algo-1" / "output" / "data" / "contract-algo-1.json").read_text()
    )  # fetch-model brought the chief's output back
    toolkit = Toolkit(toolkit_endpoint.toolkit.version)  # type: ignore[union-attr]
    found: list[str] = []
    for host in HOSTS:
        aws = json.loads((aws_dumps / host / "output" / "data" / f"contract-{host}.json").read_text())
        local = json.loads((local_dumps / host / "output" / "data" / f"contract-{host}.json").read_text())
        image = toolkit.image_environment(host) | stand_ins()
        aws = normalised(aws, root=OPT_ML, job=aws_job, surroundings=image)
        local = normalised(local, root=str(local_dumps / host), job=local_job, surroundings=cli_env)
        found += [f"{host} {d}" for d in differences(aws, local)]
    assert found == [], "\n" + "\n".join(found)

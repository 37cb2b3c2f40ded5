"""The training image on a real Docker engine: `cloudtrain build`, local jobs inside it, and a push to a registry.

The session starts its own `dockerd` (tests/docker_engine.py: its own data root, pid file, socket and
bridge; stopped by PID and cleaned up after) and makes a small TensorFlow base image without any registry
(debootstrap, then this venv's tensorflow-cpu), cached between runs by its recipe's hash. docker/Dockerfile
is built on it by `cloudtrain build`, the digits job trains in two containers, and `build --push` pushes to
Debian's docker-registry on loopback behind moto's ECR (tests/ecr_front.py). Everything runs through the
real `cloudtrain` command. Skipped only where an engine cannot start here (the reason says what is missing).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml

from cloudtrain.backends.local.containers import ContainerPlan, _gpus
from cloudtrain.image.build import build_image
from cloudtrain.spec.load import load_spec
from cloudtrain.store import JobStore
from tests.clirun import REPO, Result, cloudtrain
from tests.docker_engine import Engine, Registry, base_image, install, why_no_engine
from tests.loopback_aws import ROLE_ARN as SAGEMAKER_ROLE
from tests.test_build import dry, small_project, tree

CLIS = {"Docker's CLI": Path("/usr/local/bin/docker"), "Debian's docker.io CLI": Path("/usr/bin/docker")}
JOB_LABEL = "cloudtrain.job"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    reason = why_no_engine()
    if reason:
        pytest.skip(reason)
    install()
    started = Engine.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def tf_base(engine: Engine) -> str:
    """`cloudtrain-test-tf:<key>`: Debian, Python and tensorflow-cpu; made once per machine, then loaded."""
    name, how = base_image(engine)
    print(f"base image {name}: {how}", file=sys.stderr)
    return name


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(out)], check=True)
    return out


def digits_spec(folder: Path, data: Path, base: str = "BASE") -> Path:
    """job_specs/digits.yaml with `image.build` (docker/Dockerfile on the test base image), paths made absolute."""
    spec = yaml.safe_load((REPO / "job_specs" / "digits.yaml").read_text())
    spec["code"]["source_dir"] = str(REPO / "job_specs" / "digits")
    spec["image"] = {
        "build": {"dockerfile": str(REPO / "docker" / "Dockerfile"), "context": str(REPO), "build_args": {}}
    }
    spec["image"]["build"]["build_args"]["BASE_IMAGE"] = base
    spec["data"] = {"train": str(data / "train"), "eval": str(data / "eval")}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "digits-image.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli_env(engine: Engine | None, cli: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    """PATH with `docker` being `cli` first, and the engine's DOCKER_HOST (none: a socket nobody listens on)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "docker"
    link.unlink(missing_ok=True)
    link.symlink_to(cli)
    env = engine.env() if engine is not None else {"DOCKER_HOST": f"unix://{bin_dir / 'nobody.sock'}"}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **extra}


def cli_param(label: str) -> object:
    cli = CLIS[label]
    why = f"{label} is not installed at {cli}" if not cli.exists() else None
    return pytest.param(cli, id=label, marks=pytest.mark.skipif(why is not None, reason=why or ""))


def leftovers(engine: Engine, job: str) -> tuple[str, str]:
    """(containers, networks) of the job still in the engine: both must be empty once it has ended."""
    label = f"label={JOB_LABEL}={job}"
    ps = engine.docker("ps", "-aq", "--filter", label).stdout.strip()
    nets = engine.docker("network", "ls", "-q", "--filter", label).stdout.strip()
    return ps, nets


# --- no engine: one line, exit 3, with both CLIs ---------------------------------------------------------


@pytest.mark.parametrize("cli", [cli_param(label) for label in CLIS])
def test_no_engine_is_one_line_for_build_and_container_submit(cli: Path, tmp_path: Path, data: Path) -> None:
    spec = str(digits_spec(tmp_path, data))
    env = cli_env(None, cli, tmp_path / "bin")
    for args in (["build", spec], ["submit", spec, "--backend", "local", "--container"]):
        done = cloudtrain(*args, home=tmp_path / "home", env=env)
        assert done.code == 3, done.err
        (line,) = done.err.strip().splitlines()
        assert line.startswith("error: no Docker engine reachable: ") or "no Docker engine reachable: " in line
    assert not (tmp_path / "home" / "jobs").exists() or not any((tmp_path / "home" / "jobs").iterdir())


def test_container_needs_the_local_backend_and_an_image_of_its_own(tmp_path: Path, data: Path) -> None:
    spec = str(digits_spec(tmp_path, data))
    remote = cloudtrain("submit", spec, "--backend", "sagemaker", "--container", home=tmp_path / "h")
    assert remote.code == 2 and "--container" in remote.err and "--backend local" in remote.err
    assert len(remote.err.strip().splitlines()) == 1
    stock = cloudtrain(
        "submit",
        str(REPO / "job_specs" / "digits.yaml"),
        "--backend",
        "local",
        "--container",
        *data_args(data),
        home=tmp_path / "h",
    )
    assert stock.code == 2 and "image.build" in stock.err and len(stock.err.strip().splitlines()) == 1


def data_args(data: Path) -> list[str]:
    return ["--set", f"data.train={data / 'train'}", "--set", f"data.eval={data / 'eval'}"]


# --- build on a real engine ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cli", [cli_param(label) for label in CLIS])
def test_build_on_a_real_engine_without_buildx(
    cli: Path, engine: Engine, tf_base: str, tmp_path: Path, data: Path
) -> None:
    spec = str(digits_spec(tmp_path, data, tf_base))
    # DOCKER_BUILDKIT=1, as many users have it: Docker's CLI without buildx would refuse to build with it.
    env = cli_env(engine, cli, tmp_path / "bin", DOCKER_BUILDKIT="1")
    assert subprocess.run([str(cli), "buildx", "version"], capture_output=True, env={**os.environ, **env}).returncode
    planned = cloudtrain(
        "build", spec, "--dry-run", "--context-out", str(tmp_path / "ctx"), "--json", home=tmp_path / "h", env=env
    ).json()
    engine.docker("rmi", "-f", f"cloudtrain-training:{planned['tag']}", check=False)  # a real build each time

    built = cloudtrain("build", spec, "--json", home=tmp_path / "h", env=env)
    assert built.code == 0, built.err
    result = built.json()
    assert result["built"] and result["builder"] == "docker build" and result["tag"] == planned["tag"]
    assert result["image"] == f"cloudtrain-training:{planned['tag']}"  # no AWS: a local name, same tag
    label = engine.docker(
        "image", "inspect", "--format", '{{index .Config.Labels "cloudtrain.content-hash"}}', result["image"]
    ).stdout.strip()
    assert label == planned["content_hash"]
    # The image keeps SageMaker's contract: `train` on PATH, the runtime importable.
    probe = engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        result["image"],
        "sh",
        "-c",
        "command -v train && python3 -c 'import cloudtrain.runtime.launcher, tensorflow'",
    )
    assert probe.stdout.strip() == "/usr/local/bin/train"


@pytest.mark.slow
def test_real_engine_builds_exactly_the_staged_context(
    engine: Engine, aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`FROM scratch` needs no registry; the image holds exactly the files the dry run lists."""
    for name, value in engine.env().items():
        monkeypatch.setenv(name, value)
    spec_path = small_project(tmp_path / "p", ignore="scratch\n")
    image_dir = spec_path.parent / "image"
    (image_dir / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    (image_dir / "src" / "empty").mkdir()
    (image_dir / "src" / "link").symlink_to("pkg/mod.py")
    (image_dir / "src" / "pkg" / "mod.py").chmod(0o700)  # staged as 0755: modes do not depend on umasks
    spec = load_spec(spec_path)
    planned = dry(spec, tmp_path / "out")
    result = build_image(spec)
    assert result.built and result.tag == planned.tag
    container = subprocess.run(
        ["docker", "create", result.image, "none"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        exported = subprocess.run(["docker", "export", container], capture_output=True, check=True).stdout
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", result.image], capture_output=True, check=False)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        members = {m.name.removeprefix("ctx/").rstrip("/"): m for m in tar.getmembers() if m.name.startswith("ctx/")}
    members.pop("", None)
    assert set(members) == set(tree(Path(planned.context_dir or "")))
    assert members["src/link"].issym() and members["src/link"].linkname == "pkg/mod.py"
    assert members["src/empty"].isdir()
    assert members["src/pkg/mod.py"].mode & 0o777 == 0o755 and members["Dockerfile"].mode & 0o777 == 0o644


# --- local jobs inside the image -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_spec(engine: Engine, tf_base: str, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_spec(tmp_path_factory.mktemp("spec"), data, tf_base)


def run(engine: Engine, *args: str, home: Path, **kw: object) -> Result:
    return cloudtrain(*args, home=home, env=engine.env(), **kw)  # type: ignore[arg-type]


@pytest.mark.slow
def test_digits_trains_in_two_containers_as_in_two_processes(engine: Engine, image_spec: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    submitted = run(engine, "submit", str(image_spec), "--backend", "local", "--container", "--json", home=home)
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]

    followed = run(engine, "logs", job, "--follow", home=home)
    assert followed.code == 0, followed.err
    lines = followed.out.splitlines()
    assert any(" algo-1 " in ln and '"worker": ["algo-1:8890", "algo-2:8890"]' in ln for ln in lines), (
        "SageMaker's names"
    )
    assert any(" algo-1 " in ln and "epoch=12 " in ln for ln in lines)
    assert any(" algo-2 " in ln for ln in lines)
    assert any("has GPUs but this Docker engine has no NVIDIA runtime" in ln for ln in lines), "said, not hidden"

    status = run(engine, "status", job, "--json", home=home).json()
    assert status["status"] == "Completed", status
    assert leftovers(engine, job) == ("", ""), "every container and the network go with the job"

    fetched = run(engine, "fetch-model", job, "--to", str(tmp_path / "model"), home=home)
    assert fetched.code == 0, fetched.err
    in_image = json.loads((tmp_path / "model" / "output" / "eval_report.json").read_text())
    assert (tmp_path / "model" / "model" / "1" / "saved_model.pb").is_file()

    processes = run(engine, "submit", str(image_spec), "--backend", "local", "--wait", "--json", home=home)
    assert processes.code == 0, processes.err
    run(engine, "fetch-model", processes.json()["job"]["name"], "--to", str(tmp_path / "p"), home=home)
    in_processes = json.loads((tmp_path / "p" / "output" / "eval_report.json").read_text())
    assert in_image["accuracy"] >= 0.90
    assert abs(in_image["accuracy"] - in_processes["accuracy"]) <= 0.02, (in_image, in_processes)


def test_gpu_hosts_get_all_gpus_only_where_the_engine_has_the_nvidia_runtime(tmp_path: Path) -> None:
    with_nvidia = '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}'
    without = '{"runc":{"path":"runc"}}'
    assert _gpus("ml.g5.xlarge", with_nvidia) == (True, [])
    assert _gpus("ml.m5.xlarge", with_nvidia) == (False, [])
    gpus, notes = _gpus("ml.p4d.24xlarge", without)
    assert not gpus and notes == [
        "ml.p4d.24xlarge has GPUs but this Docker engine has no NVIDIA runtime (NVIDIA Container Toolkit): "
        "the containers train on CPU"
    ]
    plan = ContainerPlan("docker", "img:1", "cloudtrain-j", True, None, (), ("SECRET_TOKEN",))
    argv = plan.run_argv("j", "algo-2", tmp_path, {"TRAINING_JOB_NAME": "j"})
    assert argv[-2:] == ["img:1", "train"] and " --gpus all " in f" {' '.join(argv)} "
    assert argv[argv.index("SECRET_TOKEN") - 1 : argv.index("SECRET_TOKEN") + 1] == ["-e", "SECRET_TOKEN"]
    assert f"{tmp_path}:/opt/ml" in argv and " --network-alias algo-2 --label cloudtrain.job=j " in " ".join(argv)


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["stop", "max_runtime", "runner killed"])
def test_stop_and_max_runtime_end_every_container(
    engine: Engine, image_spec: Path, tmp_path: Path, ending: str
) -> None:
    home = tmp_path / "home"
    long = ["--set", "hyperparameters.epochs=100000", "--set", "hyperparameters.batch_size=8"]
    if ending == "max_runtime":
        long += ["--set", "resources.max_runtime=40"]
    env = {**engine.env(), "CLOUDTRAIN_STOP_GRACE": "5"}
    submitted = cloudtrain(
        "submit", str(image_spec), "--backend", "local", "--container", *long, "--json", home=home, env=env
    )
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]
    if ending != "max_runtime":
        wait_for(lambda: "epoch=1 " in cloudtrain("logs", job, home=home, env=env).out, "the first epoch")
    if ending == "stop":
        assert cloudtrain("stop", job, home=home, env=env).code == 0
    if ending == "runner killed":  # kill -9 of the runner: the next command that looks ends the containers
        pid = JobStore(home).get("local", job).pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    ended = "Failed" if ending == "runner killed" else "Stopped"
    wait_for(
        lambda: cloudtrain("status", job, "--json", home=home, env=env).json()["status"] == ended,
        f"the job to be {ended}",
        timeout=240,
    )
    status = cloudtrain("status", job, "--json", home=home, env=env).json()
    expected = {"stop": "Stopped", "max_runtime": "MaxRuntimeExceeded", "runner killed": "Failed"}[ending]
    assert status["secondary_status"] == expected, status
    assert leftovers(engine, job) == ("", "")
    if ending != "runner killed":
        assert (home / "jobs" / job / "model.tar.gz").is_file(), "what was saved is kept, as on SageMaker"


def wait_for(check: object, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


# --- push: ECR's authorization flow in front of a real registry ------------------------------------------


@pytest.mark.slow
def test_push_goes_to_the_registry_a_second_push_sends_nothing_and_sagemaker_runs_it(
    engine: Engine, image_spec: Path, aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.ecr_front import EcrFront

    token = boto3.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = __import__("base64").b64decode(token).decode().partition(":")
    registry = Registry.start(tmp_path / "registry", user, password)
    try:
        with EcrFront(aws_endpoint, registry) as front:
            aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
            env = {**aws, **engine.env(), "AWS_ENDPOINT_URL": front.url}
            first = cloudtrain("build", str(image_spec), "--push", "--json", home=tmp_path / "h", env=env)
            assert first.code == 0, first.err
            pushed = first.json()
            assert pushed["pushed"] and pushed["image"] == f"{registry.host}/cloudtrain-training:{pushed['tag']}"
            assert registry.tags("cloudtrain-training") == [pushed["tag"]]
            assert password not in first.out + first.err and token not in first.out + first.err

            again = cloudtrain("build", str(image_spec), "--push", "--json", home=tmp_path / "h", env=env)
            assert again.code == 0, again.err
            second = again.json()
            assert not second["built"] and not second["pushed"] and second["tag"] == pushed["tag"]
            assert second["skipped_reason"] == "ECR holds the tag already"

            # SageMaker (the test control plane, in front of the same ECR) runs the pushed image in containers.
            from tests.control_plane_images import ImageJobs
            from tests.sagemaker_control_plane import ControlPlane

            for name, value in engine.env().items():
                monkeypatch.setenv(name, value)
            plane = ControlPlane(front.url, tmp_path / "plane").start()
            plane.images = ImageJobs(engine.env())
            try:
                env = {**env, "AWS_ENDPOINT_URL": plane.url, "CLOUDTRAIN_ROLE_ARN": SAGEMAKER_ROLE}
                job = cloudtrain(
                    "submit",
                    str(image_spec),
                    "--backend",
                    "sagemaker",
                    "--wait",
                    home=tmp_path / "h",
                    env=env,
                    timeout=600,
                )
                assert job.code == 0, job.err[-3000:]
                assert '"worker": ["algo-1:8890", "algo-2:8890"]' in job.err, "SageMaker's host names: containers"
                assert "epoch=12 " in job.err
                (create,) = [r.json() for r in plane.calls("CreateTrainingJob")]
                assert create["AlgorithmSpecification"]["TrainingImage"] == pushed["image"]
                assert engine.docker("ps", "-aq").stdout.strip() == "", "no container is left"
            finally:
                plane.close()
    finally:
        registry.stop()
    assert re.fullmatch(r"[0-9a-f]{16}", pushed["tag"])
    shutil.rmtree(tmp_path / "registry", ignore_errors=True)

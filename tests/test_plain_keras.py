"""Scripts TensorFlow users already have train unchanged on 2 local workers: plain Keras `model.fit` under
MultiWorkerMirroredStrategy, in the shape of SageMaker's script-mode documentation and of TensorFlow's
multi-worker tutorial (tests/scripts/, which import nothing of cloudtrain). `distribution.keras: auto` gives them
tf-keras; forced to Keras 3, the job fails with a one-line reason that names the cause and the fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtrain.runtime.failures import KERAS3_MWMS_REASON
from tests.clirun import REPO, cloudtrain, environment

pytestmark = pytest.mark.slow
SCRIPTS = REPO / "tests" / "scripts"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(out)], check=True)
    return out


def write_spec(folder: Path, entry_point: str, data: Path, hyperparameters: str = "") -> Path:
    spec = folder / "job.yaml"
    spec.write_text(
        f"name: plain-keras\n"
        f"code: {{source_dir: {SCRIPTS}, entry_point: {entry_point}}}\n"
        f"resources: {{instance_count: 2}}\n"
        f"distribution: {{strategy: multi_worker_mirrored}}\n"
        f"data: {{train: {data / 'train'}, eval: {data / 'eval'}}}\n"
        f"{hyperparameters}"
    )
    return spec


def submit_and_wait(spec: Path, home: Path, *extra: str) -> tuple[int, str, str]:
    """`cloudtrain submit SPEC --backend local --wait --json`: exit code, stderr (status and logs), job name."""
    done = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", *extra, home=home, timeout=600)
    return done.code, done.err, done.json()["job"]["name"]


def test_sagemaker_docs_script_trains_on_two_workers_and_the_model_comes_back(tmp_path: Path, data: Path) -> None:
    spec = write_spec(tmp_path, "plain_keras_sm.py", data, "hyperparameters: {epochs: 8, batch_size: 64}\n")
    code, err, job = submit_and_wait(spec, tmp_path / "home")

    assert code == 0, err[-3000:]
    accuracy = re.search(r"eval_accuracy=([0-9.]+) hosts=2", err)
    assert accuracy and float(accuracy.group(1)) >= 0.9, err[-3000:]
    assert "PerReplica" not in err

    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=tmp_path / "home")
    assert fetched.code == 0, fetched.err
    assert (tmp_path / "out" / "model" / "000000001" / "saved_model.pb").is_file()


def test_tf_tutorial_script_trains_on_two_workers_and_the_model_comes_back(tmp_path: Path, data: Path) -> None:
    code, err, job = submit_and_wait(write_spec(tmp_path, "tf_tutorial.py", data), tmp_path / "home")

    assert code == 0, err[-3000:]
    accuracy = re.search(r"final accuracy=([0-9.]+) workers=2", err)
    assert accuracy and float(accuracy.group(1)) >= 0.8, err[-3000:]

    fetched = cloudtrain("fetch-model", job, "--to", str(tmp_path / "out"), home=tmp_path / "home")
    assert fetched.code == 0, fetched.err
    assert (tmp_path / "out" / "model" / "keras-model" / "saved_model.pb").is_file()
    assert not list((tmp_path / "out" / "model").glob("workertemp_*"))


def test_keras3_under_two_workers_fails_with_one_line_naming_cause_and_fix(tmp_path: Path, data: Path) -> None:
    spec = write_spec(tmp_path, "plain_keras_sm.py", data, "hyperparameters: {epochs: 1}\n")
    code, err, job = submit_and_wait(spec, tmp_path / "home", "--set", "distribution.keras=keras3")

    assert code == 1
    assert err.rstrip().splitlines()[-1].endswith(KERAS3_MWMS_REASON)  # what `submit --wait` ends with
    status = cloudtrain("status", job, "--json", home=tmp_path / "home").json()
    assert status["status"] == "Failed"
    assert status["failure_reason"] == KERAS3_MWMS_REASON


def python_without_tf_keras(folder: Path) -> Path:
    """A Python as `pip install 'cloudtrain[tensorflow]'` leaves it: this one's packages but tf-keras (a venv whose
    site folder holds links to every installed package but tf_keras and its metadata)."""
    import sysconfig
    import venv

    site = Path(sysconfig.get_paths()["purelib"])
    overlay = folder / "site"
    overlay.mkdir(parents=True)
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("tf_keras", "tf-keras")):
            (overlay / entry.name).symlink_to(entry)
    venv.EnvBuilder(with_pip=False).create(folder / "venv")
    python = folder / "venv" / "bin" / "python"
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    Path(own.stdout.strip(), "overlay.pth").write_text(f"import site; site.addsitedir({str(overlay)!r})\n")
    return python


def test_a_tutorial_script_trains_on_two_workers_for_a_user_without_tf_keras(tmp_path: Path, data: Path) -> None:
    """cloudtrain packs tf-keras for the local backend as it does for AWS's stock images (from its cache, filled
    once with `pip download`; here pre-filled from this Python's own copy, so the test needs no network)."""
    import tf_keras

    python = python_without_tf_keras(tmp_path / "py")
    assert subprocess.run([python, "-c", "import tf_keras"], capture_output=True).returncode != 0
    cache = tmp_path / "cache"
    minor = ".".join(tf_keras.__version__.split(".")[:2])
    (cache / "cloudtrain" / "tf-keras" / minor).mkdir(parents=True)
    (cache / "cloudtrain" / "tf-keras" / minor / "tf_keras").symlink_to(Path(tf_keras.__file__).parent)
    spec = write_spec(tmp_path, "tf_tutorial.py", data)
    env = environment(tmp_path / "home", {"XDG_CACHE_HOME": str(cache)})
    done = subprocess.run(
        [python, "-m", "cloudtrain", "submit", str(spec), "--backend", "local", "--wait", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = re.search(r"final accuracy=([0-9.]+) workers=2", done.stderr)
    assert accuracy and float(accuracy.group(1)) >= 0.8, done.stderr[-3000:]

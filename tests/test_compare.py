"""`cloudtrain compare`: spec differences, code hashes, metrics and evaluation side by side (fast: no TensorFlow)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cloudtrain import api
from cloudtrain.backends.sagemaker.backend import SageMakerBackend
from cloudtrain.jobs import EVAL_REPORT, JobInfo
from cloudtrain.settings import Config, Options, Settings
from cloudtrain.transfer.tarballs import bytes_tarball, json_member
from tests.clirun import Result, cloudtrain
from tests.test_ci_contract import check_shape
from tests.test_cli import TINY, write_job


def ct(*args: str, home: Path) -> Result:
    return cloudtrain(*args, home=home, env={"XDG_CONFIG_HOME": str(home / "xdg")})


def submit(spec: Path, home: Path, *sets: str) -> str:
    args = [a for s in sets for a in ("--set", s)]
    done = ct("submit", str(spec), "--backend", "local", "--wait", "--json", *args, home=home)
    assert done.code == 0, done.err
    return done.json()["job"]["name"]


def test_two_local_jobs_with_different_hyperparameters(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = write_job(tmp_path, TINY)
    first = submit(spec, home, "resources.instance_count=1")
    second = submit(spec, home, "resources.instance_count=1", "hyperparameters.epochs=5", "hyperparameters.lr=0.1")

    shown = ct("compare", first, second, "--json", home=home)
    assert shown.code == 0, shown.err
    doc = shown.json()
    check_shape("compare", doc)
    assert [j["name"] for j in doc["jobs"]] == [first, second]
    assert doc["same_code"] is True and len(doc["jobs"][0]["code_sha256"]) == 64
    assert doc["spec_diff"] == [
        {"field": "hyperparameters.epochs", "values": [2, 5]},
        {"field": "hyperparameters.lr", "values": [None, 0.1]},
    ]
    assert {"name": "score", "values": [0.15, 0.15]} in doc["metrics"]
    assert {"name": "eval.accuracy", "values": [0.5, 0.5]} in doc["metrics"]
    assert doc["jobs"][0]["evaluation"]["source"].endswith(f"/jobs/{first}/output.tar.gz")

    table = ct("compare", first, second, home=home)
    assert table.code == 0, table.err
    rows = {line.split()[0]: line.split()[1:] for line in table.out.splitlines()[1:] if line.strip()}
    assert rows["hyperparameters.epochs"] == ["2", "5"] and rows["hyperparameters.lr"] == ["-", "0.1"]
    assert rows["eval.accuracy"] == ["0.5", "0.5"]
    assert "(same)" in table.out

    (tmp_path / "code" / "train.py").write_text((tmp_path / "code" / "train.py").read_text() + "# changed\n")
    changed = submit(spec, home, "resources.instance_count=1")
    assert ct("compare", first, changed, "--json", home=home).json()["same_code"] is False


def test_a_fetched_report_is_read_where_fetch_model_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    spec = write_job(tmp_path, TINY)
    first = submit(spec, home, "resources.instance_count=1")
    second = submit(spec, home, "resources.instance_count=1")
    fetched = tmp_path / "work" / first / "output"
    fetched.mkdir(parents=True)
    (fetched / "eval_report.json").write_text(json.dumps({"accuracy": 0.9, "loss": 0.25}))
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(home))

    result = api.compare([first, second], options=Options(config=Config()), fetched_root=tmp_path / "work")
    assert result.sides[0].evaluation == {"accuracy": 0.9, "loss": 0.25, "source": str(fetched / "eval_report.json")}
    assert ("eval.loss", [0.25, None]) in result.metrics
    assert result.spec_diff == []


def test_compare_needs_two_jobs_and_known_ones(tmp_path: Path) -> None:
    home = tmp_path / "home"
    one = ct("compare", "only-one", home=home)
    assert one.code == 2 and one.err == "error: compare: give at least two jobs\n"
    missing = ct("compare", "nope-1", "nope-2", "--backend", "local", home=home)
    assert missing.code == 2 and "nope-1" in missing.err and len(missing.err.splitlines()) == 1


def test_report_from_an_output_archive_in_s3(aws_endpoint: str) -> None:
    import boto3

    archive = bytes_tarball({"eval_report.json": b'{"accuracy": 0.75, "loss": 0.5}', "curves.png": b"png"})
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="out-bucket")
    s3.put_object(Bucket="out-bucket", Key="job/output/output.tar.gz", Body=archive)
    backend = SageMakerBackend(Settings())

    def report(uri: str) -> object:
        return backend.evaluation(JobInfo("job", "sagemaker", "Completed", artifacts={"output": uri}))[0]

    assert report("s3://out-bucket/job/output/output.tar.gz") == {"accuracy": 0.75, "loss": 0.5}
    assert report("s3://out-bucket/other/output.tar.gz") is None
    assert json_member(io.BytesIO(bytes_tarball({"other.json": b"{}"})), EVAL_REPORT, 1 << 20) is None

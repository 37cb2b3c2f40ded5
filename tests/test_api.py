"""`cloudtrain.api` as a program uses it: the same jobs as the command line, no process in between (fast: plain
Python scripts under the container contract, no TensorFlow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cloudtrain import api
from cloudtrain.errors import JobNotFound, UserError
from tests.clirun import environment
from tests.test_cli import TINY, write_job

LOCAL = api.Options(backend="local")


@pytest.fixture(autouse=True)
def no_outside_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line tests' environment (a job home of its own, no config file, no AWS and no CLOUDTRAIN_*
    settings from the machine), and no AWS files either."""
    wanted = environment(tmp_path / "home")
    for name in set(os.environ) - set(wanted):
        monkeypatch.delenv(name)
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def test_a_local_job_from_submit_to_fetch(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "p", TINY)
    submitted = api.submit(spec, options=LOCAL)
    assert submitted.created and submitted.job.backend == "local"

    final = api.wait(submitted.job.name, options=LOCAL, timeout=120)
    assert final.status == "Completed" and final.metrics == {"score": 0.15}
    assert api.status(submitted.job.name) == final  # the job's record names its backend: no options needed
    assert [j.name for j in api.list_jobs(options=LOCAL)] == [final.name]

    records = [event.to_json() for event in api.logs(final.name, host="algo-2")]
    assert {r["host"] for r in records} == {"algo-2"} and any("hello from algo-2" in r["message"] for r in records)
    assert set(records[0]) == {"timestamp", "host", "message"}

    found = api.fetch_model(final.name, to=tmp_path / "out")
    assert found.model is not None and (found.model / "weights.bin").read_text() == "w"
    assert json.loads((tmp_path / "out" / "output" / "eval_report.json").read_text()) == {"accuracy": 0.5}


def test_an_idempotent_submit_gives_the_same_job(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "p", TINY)
    first = api.submit(spec, options=LOCAL, idempotency_key="pipeline-41")
    again = api.submit(spec, options=LOCAL, idempotency_key="pipeline-41")
    assert (first.created, again.created) == (True, False) and again.job.name == first.job.name
    assert api.wait(first.job.name, timeout=120).status == "Completed"


def test_compare_two_jobs(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "p", TINY)
    names = [api.submit(spec, options=LOCAL, overrides=[f"hyperparameters.epochs={n}"]).job.name for n in (2, 3)]
    for name in names:
        api.wait(name, timeout=120)
    result = api.compare(names, fetched_root=tmp_path)
    assert result.same_code is True
    assert result.spec_diff == [("hyperparameters.epochs", [2, 3])]
    assert ("eval.accuracy", [0.5, 0.5]) in result.metrics


def test_a_dry_run_creates_nothing(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "p", TINY)
    planned = api.submit(spec, options=LOCAL, dry_run=True)
    assert planned.job.status == "NotCreated" and not planned.created
    assert planned.plan is not None and planned.plan["job_name"] == planned.job.name
    assert planned.plan["spec"]["resources"]["instance_count"] == 2
    with pytest.raises(JobNotFound):
        api.status(planned.job.name, options=LOCAL)


def test_settings_and_where_they_come_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "home" / "xdg" / "cloudtrain" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("region: eu-west-1\nprofiles:\n  ci: {backend: local}\n")
    monkeypatch.setenv("CLOUDTRAIN_REGION", "us-west-2")
    report = api.config(options=api.Options(profile="ci"))
    assert report.exists and report.profile == "ci"
    assert report.sources["region"] == ("us-west-2", "CLOUDTRAIN_REGION")
    assert report.sources["backend"] == ("local", f"{config} (profile ci)")
    assert report.to_json()["settings"]["region"] == {"value": "us-west-2", "source": "CLOUDTRAIN_REGION"}


def test_schemas_and_their_mistakes(tmp_path: Path) -> None:
    written = api.schema(out=tmp_path / "spec.schema.json")
    assert json.loads((tmp_path / "spec.schema.json").read_text()) == written
    assert "resources" in written["properties"]
    assert api.schema(output_of="status")["title"] == "cloudtrain status JOB --json"
    with pytest.raises(UserError, match="--output-of: 'statuses' is not one of"):
        api.schema(output_of="statuses")
    with pytest.raises(UserError, match="--backend: 'cloud' is not one of local, sagemaker"):
        api.Options(backend="cloud")

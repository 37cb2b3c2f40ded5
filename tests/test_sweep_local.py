"""Local sweeps as a user runs them: real trials of the job (N worker processes each, max_parallel at a time)
with values chosen by Optuna, the objective read from the chief's lines, a pruned trial stopped as SageMaker
stops one, and every command on the sweep. Fast ones use a plain-Python job; the slow one is the README's
digits job (the issue's "Done when")."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirun import REPO, cloudtrain
from tests.test_cli import write_job

# Each epoch's score grows with --rate: a trial's objective is rate x epochs.
SCORER = """\
    import os, sys, time
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    rate, epochs = float(args["--rate"]), int(args["--epochs"])
    chief = os.environ["SM_CURRENT_HOST"] == "algo-1"
    ckpt = os.environ.get("CLOUDTRAIN_CHECKPOINT_DIR") or "/opt/ml/checkpoints"
    for epoch in range(1, epochs + 1):
        time.sleep(float(args.get("--pause", "0.2")))
        if chief or args.get("--everyone") == "1":
            print(f"epoch={epoch} score={rate * epoch:.4f}", flush=True)
        if chief:
            open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "w").write(str(rate))
            open(os.path.join(ckpt, f"ckpt-{epoch}"), "w").write(str(epoch))
    """

SWEEP = """\
sweep:
  objective: {metric: score, goal: maximize}
  strategy: random
  parameters:
    rate: {min: 0.1, max: 0.9}
  max_trials: 4
  max_parallel: 2
  seed: 7
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def a_sweep(folder: Path, sweep: str = SWEEP, extra: str = "", script: str = SCORER) -> Path:
    spec = write_job(folder, script)
    text = spec.read_text().replace('regex: "score=([0-9.]+)"', r'regex: "epoch=\\d+ score=([0-9.]+)"')
    spec.write_text(text.replace("hyperparameters: {epochs: 2}", "hyperparameters: {epochs: 3}") + extra + sweep)
    return spec


def test_a_local_sweep_runs_its_trials_and_every_command_reads_it(tmp_path: Path, home: Path) -> None:
    spec = a_sweep(tmp_path)
    done = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home, timeout=600)
    assert done.code == 0, done.err
    sweep = done.json()["sweep"]
    name = sweep["name"]
    assert len(name) <= 32 and sweep["status"] == "Completed"
    assert sweep["counters"]["Completed"] == 4 and len(sweep["trials"]) == 4
    objectives = [t["objective"] for t in sweep["trials"]]
    assert objectives == sorted(objectives, reverse=True)  # best first
    for t in sweep["trials"]:  # the chief's last epoch: rate x 3, each rate in its range
        assert 0.1 <= t["hyperparameters"]["rate"] <= 0.9
        assert t["objective"] == pytest.approx(round(t["hyperparameters"]["rate"] * 3, 4), abs=1e-3)
        assert t["history"] == pytest.approx([round(t["hyperparameters"]["rate"] * e, 4) for e in (1, 2, 3)], abs=1e-3)
    assert sweep["best_trial"] == sweep["trials"][0]["name"]
    spans = [(t["created"], t["ended"]) for t in sweep["trials"]]  # never more than max_parallel at once
    assert max(sum(a <= start < b for a, b in spans) for start, _ in spans) <= 2
    assert "trial 1 " in done.err and " Completed score=" in done.err  # --wait's line per trial

    shown = cloudtrain("status", name, home=home)
    assert shown.code == 0, shown.err
    assert f"best trial   {sweep['best_trial']}" in shown.out and "4 of 4, 2 at a time (4 Completed)" in shown.out
    listed = cloudtrain("status", "--json", home=home).json()
    assert [row["name"] for row in listed] == [name] and listed[0]["kind"] == "sweep"  # one row, trials under it

    logs = cloudtrain("logs", name, "--trial", "2", home=home)
    assert logs.code == 0 and "epoch=3 score=" in logs.out

    fetched = cloudtrain("fetch-model", name, "--to", str(tmp_path / "best"), "--json", home=home)
    assert fetched.code == 0, fetched.err
    assert fetched.json()["trial"] == sweep["best_trial"]
    best = sweep["trials"][0]
    assert float((tmp_path / "best" / "model" / "weights.bin").read_text()) == pytest.approx(
        best["hyperparameters"]["rate"]
    )
    rows = list(csv.DictReader((tmp_path / "best" / "sweep_trials.csv").open()))
    assert [r["trial"] for r in rows] == [t["name"] for t in sweep["trials"]]
    assert "plot_optimization_history" in (tmp_path / "best" / "sweep_report.html").read_text()

    other = cloudtrain("compare", sweep["trials"][0]["name"], sweep["trials"][1]["name"], "--json", home=home)
    assert other.code == 0, other.err


def test_a_hopeless_trial_is_stopped_by_the_median_rule_and_keeps_its_checkpoints(tmp_path: Path, home: Path) -> None:
    sweep = SWEEP.replace("strategy: random", "strategy: grid").replace("seed: 7", "seed: 5")  # 0.9, 0.8, then 0.01
    sweep = sweep.replace("rate: {min: 0.1, max: 0.9}", "rate: {values: [0.9, 0.8, 0.01]}")
    sweep = sweep.replace("max_trials: 4\n  max_parallel: 2", "max_trials: 3\n  max_parallel: 1")
    spec = a_sweep(tmp_path, sweep + "  early_stopping: auto\n")
    spec.write_text(spec.read_text().replace("{epochs: 3}", "{epochs: 12}"))
    done = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home, timeout=600)
    assert done.code == 0, done.err
    sweep_info = done.json()["sweep"]
    trials = sorted(sweep_info["trials"], key=lambda t: t["created"])
    assert [t["hyperparameters"]["rate"] for t in trials] == [0.9, 0.8, 0.01]
    assert [t["status"] for t in trials[:2]] == ["Completed", "Completed"]
    hopeless = trials[2]  # below the median of the two before it from its first epoch
    assert hopeless["status"] == "Stopped" and hopeless["failure_reason"] == "early stopping"
    assert 1 <= len(hopeless["history"]) < 12
    assert sweep_info["counters"]["EarlyStopped"] == 1 and sweep_info["status"] == "Completed"
    checkpoints = home / "jobs" / hopeless["name"] / "hosts" / "algo-1" / "checkpoints"
    assert any(checkpoints.glob("ckpt-*"))  # what it saved is kept
    job = cloudtrain("status", hopeless["name"], "--json", home=home).json()
    assert job["status"] == "Stopped" and job["failure_reason"] == "early stopping"  # as SageMaker reports it


def test_stop_sweep_stops_the_running_trials(tmp_path: Path, home: Path) -> None:
    spec = a_sweep(tmp_path)
    spec.write_text(spec.read_text().replace("{epochs: 3}", "{epochs: 3, pause: 60}"))
    started = cloudtrain("submit", str(spec), "--backend", "local", "--json", home=home)
    assert started.code == 0, started.err
    name = started.json()["job"]["name"]
    deadline = time.monotonic() + 120
    while len(cloudtrain("status", name, "--json", home=home).json()["trials"]) < 2:
        assert time.monotonic() < deadline, "two trials did not start"
        time.sleep(0.5)
    stopped = cloudtrain("stop", name, "--wait", "--json", home=home, timeout=300)
    assert stopped.code == 0, stopped.err
    sweep = stopped.json()
    assert sweep["status"] == "Stopped" and len(sweep["trials"]) == 2  # none started after the stop
    assert {t["status"] for t in sweep["trials"]} == {"Stopped"}


def test_a_local_sweep_notes_when_several_hosts_print_the_objective(tmp_path: Path, home: Path) -> None:
    spec = a_sweep(tmp_path, SWEEP.replace("max_trials: 4\n  max_parallel: 2", "max_trials: 1\n  max_parallel: 1"))
    spec.write_text(spec.read_text().replace("{epochs: 3}", "{epochs: 3, everyone: 1}"))
    done = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home, timeout=300)
    assert done.code == 0, done.err
    notes = done.json()["sweep"]["notes"]
    assert any("algo-2" in n and "only the chief's (algo-1) lines count" in n for n in notes), notes


def test_warm_start_adds_the_parents_trials_and_refuses_other_names(tmp_path: Path, home: Path) -> None:
    one = SWEEP.replace("max_trials: 4\n  max_parallel: 2", "max_trials: 2\n  max_parallel: 2")
    parent = cloudtrain(
        "submit", str(a_sweep(tmp_path / "a", one)), "--backend", "local", "--wait", "--json", home=home, timeout=300
    )
    assert parent.code == 0, parent.err
    name = parent.json()["sweep"]["name"]
    child = a_sweep(tmp_path / "b", one + f"  warm_start: {{from: [{name}]}}\n")
    done = cloudtrain("submit", str(child), "--backend", "local", "--wait", "--json", home=home, timeout=300)
    assert done.code == 0, done.err
    assert "warm start: 2 of the parents' 2 trials added to the study" in done.json()["sweep"]["notes"]

    other = a_sweep(tmp_path / "c", one + f"  warm_start: {{from: [{name}]}}\n")
    other.write_text(other.read_text().replace("{epochs: 3}", "{epochs: 3, extra: 1}"))
    refused = cloudtrain("submit", str(other), "--backend", "local", home=home)
    assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
    assert "sweep.warm_start.from" in refused.err and "added extra" in refused.err
    elsewhere = a_sweep(
        tmp_path / "d", one.replace("metric: score", "metric: twice") + f"  warm_start: {{from: [{name}]}}\n"
    )
    text = elsewhere.read_text()
    elsewhere.write_text(text.replace("metrics:\n", "metrics:\n  - {name: twice, regex: 'score=([0-9.]+)'}\n"))
    refused = cloudtrain("submit", str(elsewhere), "--backend", "local", home=home)
    assert refused.code == 2 and "optimised score, this sweep twice" in refused.err, refused.err
    assert len(list((home / "sweeps").iterdir())) == 2  # the refused ones started nothing


@pytest.mark.slow
def test_the_digits_sweep_done_when(tmp_path: Path) -> None:
    """The issue's "Done when": 4 trials, 2 at a time, 2 workers each, a few epochs, --wait; status shows the best
    trial; fetch-model brings back its model, evaluation report and the sweep report."""
    home = tmp_path / "home"
    data = tmp_path / "digits"
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare-data"), "--out", str(data)], check=True)
    sets = [f"data.train={data / 'train'}", f"data.eval={data / 'eval'}", "hyperparameters.epochs=3"]
    sweep = {
        "sweep.objective": "{metric: val_accuracy, goal: maximize}",
        "sweep.parameters.learning_rate": "{min: 0.0005, max: 0.05, scale: log}",
        "sweep.parameters.batch_size": "{values: [32, 64, 128]}",
        "sweep.max_trials": "4",
        "sweep.max_parallel": "2",
        "sweep.early_stopping": "auto",
        "sweep.seed": "7",
    }
    args = [a for item in [*sets, *(f"{k}={v}" for k, v in sweep.items())] for a in ("--set", item)]
    spec = str(REPO / "job_specs" / "digits.yaml")
    done = cloudtrain("submit", spec, "--backend", "local", *args, "--wait", "--json", home=home, timeout=1800)
    assert done.code == 0, done.err
    result = done.json()["sweep"]
    name = result["name"]
    assert result["status"] == "Completed" and len(result["trials"]) == 4
    best = result["trials"][0]
    assert best["name"] == result["best_trial"] and best["objective"] > 0.5

    shown = cloudtrain("status", name, home=home)
    assert shown.code == 0 and f"best trial   {best['name']}" in shown.out

    fetched = cloudtrain("fetch-model", name, "--to", str(tmp_path / "best"), home=home)
    assert fetched.code == 0, fetched.err
    best_dir = tmp_path / "best"
    assert (best_dir / "model").is_dir() and (best_dir / "output" / "eval_report.json").is_file()
    assert (best_dir / "sweep_report.html").is_file() and (best_dir / "sweep_trials.csv").is_file()


def test_a_sweeps_json_matches_its_schemas(tmp_path: Path, home: Path) -> None:
    from jsonschema import Draft202012Validator

    from cloudtrain.output_schemas import output_schema

    spec = a_sweep(tmp_path, SWEEP.replace("max_trials: 4\n  max_parallel: 2", "max_trials: 2\n  max_parallel: 2"))
    done = cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", home=home, timeout=300)
    assert done.code == 0, done.err
    Draft202012Validator(output_schema("submit")).validate(done.json())
    name = done.json()["sweep"]["name"]
    Draft202012Validator(output_schema("status-sweep")).validate(cloudtrain("status", name, "--json", home=home).json())
    Draft202012Validator(output_schema("status-list")).validate(cloudtrain("status", "--json", home=home).json())
    fetched = cloudtrain("fetch-model", name, "--to", str(tmp_path / "out"), "--json", home=home)
    Draft202012Validator(output_schema("fetch-model")).validate(fetched.json())

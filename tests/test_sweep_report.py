"""The sweep report and trials CSV, from trials whichever backend ran them: Optuna's plotly figures, drawn for
real by headless Chromium from the page alone (plotly.js embedded: it opens offline)."""

from __future__ import annotations

import csv
import io
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudtrain.spec.sweep import ParameterRange
from cloudtrain.sweep.report import FIGURES, render
from cloudtrain.sweep.trials import EARLY_STOPPING, SweepInfo, Trial, trials_csv

PARAMETERS = {
    "learning_rate": ParameterRange(min=0.0005, max=0.05, scale="log"),
    "units": ParameterRange(min=32, max=256, type="integer"),
    "batch_size": ParameterRange(values=[32, 64, 128]),
}


def a_sweep(trials: int = 8) -> SweepInfo:
    rng = random.Random(7)
    made = []
    for i in range(1, trials + 1):
        pruned = i % 4 == 0
        history = tuple(round(0.5 + 0.05 * epoch + rng.random() * 0.1, 4) for epoch in range(2 if pruned else 5))
        made.append(
            Trial(
                name=f"digits-sweep-{i:03d}-abcdef12",
                status="Stopped" if pruned else "Completed",
                hyperparameters={
                    "learning_rate": round(10 ** rng.uniform(-3.3, -1.3), 6),
                    "units": rng.randint(32, 256),
                    "batch_size": rng.choice([32, 64, 128]),
                },
                objective=history[-1],
                failure_reason=EARLY_STOPPING if pruned else None,
                billable_seconds=60 * i,
                instance_count=2,
                cost_usd=0.0,
                history=history,
            )
        )
    return SweepInfo(
        name="digits-sweep",
        backend="local",
        status="Completed",
        metric="val_accuracy",
        goal="maximize",
        strategy="bayesian",
        max_trials=trials,
        max_parallel=2,
        trials=tuple(made),
    )


def test_best_trial_counters_and_ranking() -> None:
    sweep = a_sweep()
    completed = [t for t in sweep.trials if t.status == "Completed"]
    assert sweep.best == max(completed, key=lambda t: t.objective or 0)
    assert sweep.counters["Completed"] == 6 and sweep.counters["EarlyStopped"] == 2
    ranked = [t.objective for t in sweep.ranked()]
    assert ranked == sorted(ranked, reverse=True)
    assert sweep.trial("3") == sweep.trials[2] and sweep.trial(sweep.trials[4].name) == sweep.trials[4]


def test_trials_csv_has_a_row_per_trial_best_first() -> None:
    sweep = a_sweep()
    rows = list(csv.DictReader(io.StringIO(trials_csv(sweep))))
    assert len(rows) == len(sweep.trials)
    assert rows[0]["trial"] == sweep.best.name  # type: ignore[union-attr]
    assert set(rows[0]) >= {"trial", "status", "val_accuracy", "learning_rate", "units", "batch_size", "cost_usd"}
    assert {r["reason"] for r in rows if r["status"] == "Stopped"} == {EARLY_STOPPING}


def test_the_report_embeds_plotly_once_and_every_figure() -> None:
    page = render(a_sweep(), PARAMETERS)
    assert page.count("Plotly.newPlot(") >= len(FIGURES)
    assert re.search(r"<script[^>]*\ssrc=", page) is None  # plotly.js is in the page: no network needed
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1  # once, with the first figure
    for _, function, _ in FIGURES:
        assert f'id="{function}"' in page, function


def test_a_sweep_with_one_completed_trial_says_what_is_missing() -> None:
    page = render(a_sweep(1), PARAMETERS)
    assert "needs 2 completed trials (1 so far)" in page  # parameter importances


def test_chromium_draws_every_figure(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup installs Debian's chromium package)")
    report = tmp_path / "sweep_report.html"
    report.write_text(render(a_sweep(), PARAMETERS))
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # as root (CI)
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for _, function, _ in FIGURES:  # plotly marks a div it has drawn, and draws into SVG
        div = re.search(rf'<div id="{function}"[^>]*class="([^"]*)"', dom)
        assert div is not None and "js-plotly-plot" in div.group(1), function
    assert dom.count('class="main-svg"') >= len(FIGURES)
    assert "learning_rate" in dom and "val_accuracy" in dom

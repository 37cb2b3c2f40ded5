"""Row `sweep`: a local sweep's orchestration overhead, and what early stopping saves.

(a) A 4-trial sweep, 2 at a time, of a 2-worker job against the same 4 trials (the values the sweep chose)
submitted by hand, 2 at a time: each as soon as one of the two before it ends, as a script would do with
`cloudtrain submit` and `status`. Wall clock from the first submit to the last trial's end. Target ≤ 1.1x.
(b) The epochs trained with `early_stopping: auto` against off, on a grid where half the trials are hopeless
(their objective is 50x worse from the first epoch): target ≤ 0.7x, with the best trial's objective within 1 %.

The trials run a plain-Python script of 2 worker processes that sleeps per epoch and prints the objective on
the chief (the container contract and the local runner as for TensorFlow, without TensorFlow's start-up, which
would only add the same seconds to both sides).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchlib.context import Context
from benchlib.core import CLOUDTRAIN, Row, Stats, interleave, ratio_text

SCRIPT = """\
import os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
rate, epochs = float(args["--rate"]), int(args["--epochs"])
for epoch in range(1, epochs + 1):
    time.sleep(float(args["--pause"]))
    if os.environ["SM_CURRENT_HOST"] == "algo-1":
        print(f"epoch={epoch} score={rate * epoch:.4f}", flush=True)
"""
SPEC = """\
name: bench-sweep
code: {{source_dir: code, entry_point: train.py}}
resources: {{instance_count: 2}}
hyperparameters: {{epochs: {epochs}, pause: {pause}}}
metrics: [{{name: score, regex: 'epoch=\\d+ score=([0-9.]+)'}}]
"""
RANDOM = """\
sweep:
  objective: {metric: score}
  strategy: random
  parameters: {rate: {min: 0.1, max: 0.9}}
  max_trials: 4
  max_parallel: 2
  seed: 7
"""
HOPELESS = """\
sweep:
  objective: {{metric: score}}
  strategy: grid
  parameters: {{rate: {{values: [0.9, 0.85, 0.018, 0.017]}}}}
  max_trials: 4
  max_parallel: 2
  early_stopping: {stopping}
  seed: 5  # the grid's order: 0.9 and 0.85 first, then the hopeless two
"""


def _project(ctx: Context, name: str, spec: str) -> Path:
    work = ctx.folder(name)
    (work / "code").mkdir()
    (work / "code" / "train.py").write_text(SCRIPT)
    (work / "job.yaml").write_text(spec)
    return work / "job.yaml"


def _sweep(ctx: Context, spec: Path, env: dict[str, str]) -> dict:
    run = ctx.cloudtrain("submit", str(spec), "--backend", "local", "--wait", "--json", env=env, timeout=1800)
    return json.loads(run.check("cloudtrain submit (sweep)").out)["sweep"]


def _by_hand(ctx: Context, spec: Path, rates: list[float], env: dict[str, str]) -> float:
    """The trials submitted 2 at a time, the next as soon as one ends (`status --json` every 0.5 s)."""
    began = time.monotonic()
    pending, running = list(rates), []
    while pending or running:
        while pending and len(running) < 2:
            rate = pending.pop(0)
            run = ctx.cloudtrain(
                "submit", str(spec), "--backend", "local", "--json", "--set", f"hyperparameters.rate={rate}", env=env
            )
            running.append(json.loads(run.check("cloudtrain submit").out)["job"]["name"])
        time.sleep(0.5)
        for job in list(running):
            status = json.loads(ctx.cloudtrain("status", job, "--json", env=env).check("cloudtrain status").out)
            if status["status"] in ("Completed", "Failed", "Stopped"):
                running.remove(job)
    return time.monotonic() - began


def run(ctx: Context) -> Row:
    home = ctx.folder("sweep-home")
    env = {**ctx.base_env, "CLOUDTRAIN_HOME": str(home)}
    epochs, pause = (4, 0.5) if ctx.quick else (6, 1.0)
    plain = SPEC.format(epochs=epochs, pause=pause)
    sweep_spec = _project(ctx, "sweep", plain + RANDOM)
    hand_spec = _project(ctx, "by-hand", plain)
    chosen: list[float] = []

    def sweep() -> float:
        began = time.monotonic()
        result = _sweep(ctx, sweep_spec, env)
        chosen[:] = [t["hyperparameters"]["rate"] for t in sorted(result["trials"], key=lambda t: t["created"])]
        return time.monotonic() - began

    def by_hand() -> float:
        return _by_hand(ctx, hand_spec, chosen or [0.2, 0.4, 0.6, 0.8], env)

    runs = ctx.runs(3, 1)
    ctx.log(f"sweep: {runs} rounds of a 4-trial sweep and the same trials by hand (after a warm-up)")
    times = interleave([("sweep", sweep), ("by hand", by_hand)], runs)
    overhead, overhead_text = ratio_text(times["sweep"], times["by hand"])

    long_plain = SPEC.format(epochs=12, pause=0.3 if ctx.quick else 0.5)
    trained: dict[str, list[int]] = {"auto": [], "off": []}
    best: dict[str, list[float]] = {"auto": [], "off": []}
    for _ in range(runs):
        for stopping in ("auto", "off"):
            spec = _project(ctx, f"hopeless-{stopping}", long_plain + HOPELESS.format(stopping=stopping))
            result = _sweep(ctx, spec, env)
            trained[stopping].append(sum(len(t["history"]) for t in result["trials"]))
            best[stopping].append(result["best_objective"])
    epochs_ratio = sum(trained["auto"]) / sum(trained["off"])
    best_gap = max(abs(a - b) / b for a, b in zip(best["auto"], best["off"], strict=True))
    met = overhead <= 1.1 and epochs_ratio <= 0.7 and best_gap <= 0.01
    return Row(
        name="sweep",
        title="local 4-trial sweep (2 at a time) vs the same trials by hand; early stopping's epochs saved",
        figure=Stats.of(times["sweep"]).fmt(),
        against=f"by hand {Stats.of(times['by hand']).fmt()}",
        ratio=f"{overhead_text}; epochs {epochs_ratio:.2f}x",
        target="≤ 1.1x; epochs ≤ 0.7x, best within 1 %",
        met=met,
        commands=[
            f"{CLOUDTRAIN} submit SWEEP.yaml --backend local --wait --json",
            f"{CLOUDTRAIN} submit JOB.yaml --backend local --json --set hyperparameters.rate=R  (x4, 2 at a time, "
            "polling status --json)",
        ],
        details=[
            f"epochs trained, early_stopping auto: {trained['auto']}; off: {trained['off']} (12 per full trial)",
            f"best objective, auto: {best['auto']}; off: {best['off']} (largest gap {best_gap:.2%})",
        ],
        data={"times": times, "trained": trained, "best": best},
    )

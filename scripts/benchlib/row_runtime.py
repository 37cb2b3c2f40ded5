"""Row `runtime`: examples/s of the digits model through cloudtrain's runtime against a plain Keras `model.fit`.

Five variants, each in a fresh process, interleaved: plain Keras (no strategy) compiled as Keras compiles by
default (one step per function call) and with `steps_per_execution` at an epoch (a whole epoch per call, the
compilation cloudtrain.runtime's loop uses: the fair baseline, reported beside the old one), the runtime's
`fit` under a one-worker MultiWorkerMirroredStrategy (what a one-instance digits job runs: the headline), the
runtime's `fit` without a strategy (its training loop alone), and the plain-Keras path (the same `model.fit`
under a one-worker MultiWorkerMirroredStrategy with tf-keras, as cloudtrain runs a plain-Keras script on
several instances). See fit_driver.py.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchlib.context import Context
from benchlib.core import VENV_PY, Row, Stats, interleave, ratio_text

DRIVER = Path(__file__).with_name("fit_driver.py")
TARGET = 0.95
MODES = ("keras", "keras-spe", "runtime-mwms", "runtime", "keras-mwms")


def run(ctx: Context) -> Row:
    data = ctx.ensure_digits()
    epochs = 3 if ctx.quick else 12
    env = {**ctx.base_env, "CUDA_VISIBLE_DEVICES": ""}

    def variant(mode: str) -> tuple[str, Any]:
        cmd = [VENV_PY, DRIVER, mode, "--data", data, "--epochs", str(epochs)]

        def once() -> dict[str, Any]:
            out = ctx.processes.run(cmd, env=env, timeout=900).check(f"fit_driver {mode}")
            return dict(json.loads(out.out.strip().splitlines()[-1]))

        return mode, once

    runs = ctx.runs(5, 1)
    ctx.log(f"runtime: {runs} interleaved runs each of {', '.join(MODES)} ({epochs} epochs of digits)")
    results = interleave([variant(m) for m in MODES], runs)
    steady = {m: [r["steady_examples_per_s"] for r in results[m]] for m in MODES}
    whole = {m: [r["examples_per_s"] for r in results[m]] for m in MODES}
    first = {m: statistics.median(r["first_epoch_s"] for r in results[m]) for m in MODES}
    ratio, text = ratio_text(steady["runtime-mwms"], steady["keras-spe"])
    _, old_text = ratio_text(steady["runtime-mwms"], steady["keras"])
    _, spe_text = ratio_text(steady["keras-spe"], steady["keras"])
    _, loop_text = ratio_text(steady["runtime"], steady["keras"])
    plain_ratio, plain_text = ratio_text(steady["keras-mwms"], steady["keras"])
    _, whole_text = ratio_text(whole["runtime-mwms"], whole["keras-spe"])
    _, whole_loop_text = ratio_text(whole["runtime"], whole["keras"])  # against the default, as before
    accuracy = {m: statistics.median(r["val_accuracy"] for r in results[m]) for m in MODES}
    examples = results["keras"][0]["examples"]

    def fmt(values: list[float]) -> str:
        return Stats.of(values).fmt("examples/s", digits=5)

    return Row(
        name="runtime",
        title="examples/s of the digits model through cloudtrain's runtime, one worker",
        figure=f"{fmt(steady['runtime-mwms'])} steady; whole {epochs}-epoch fit "
        f"{statistics.median(whole['runtime-mwms']):.0f} examples/s",
        against=f"plain Keras `model.fit` with steps_per_execution at an epoch (the same compilation) "
        f"{fmt(steady['keras-spe'])} steady; whole fit {statistics.median(whole['keras-spe']):.0f} examples/s",
        ratio=f"{text} (against Keras's default compilation: {old_text}); whole fit {whole_text}; "
        f"plain-Keras path {plain_text} of default Keras",
        target=f"≥ {TARGET:g}x (steady), the runtime and the plain-Keras path",
        met=ratio >= TARGET and plain_ratio >= TARGET,
        commands=[f"{VENV_PY} scripts/benchlib/fit_driver.py {m} --data {data} --epochs {epochs}" for m in MODES],
        details=[
            f"{epochs} epochs of {examples} examples, batch 64, the eval split evaluated every epoch by both, the "
            "runtime also checkpointing every epoch. Steady: examples per median epoch of epochs 2.."
            f"{epochs}, an epoch timed from one epoch end to the next (Keras's on_epoch_end, the runtime's epoch "
            "line), so it holds training, evaluation and the runtime's checkpoint. Whole fit: the `fit` call, "
            "first-epoch tracing included; TensorFlow's import is excluded from both.",
            "Headline: the runtime under a one-worker MultiWorkerMirroredStrategy, what a one-instance digits job "
            "runs (the spec's strategy is multi_worker_mirrored, so the launcher sets a one-worker TF_CONFIG), "
            "against plain Keras given the same compilation: `compile(steps_per_execution=<steps of an epoch>)`, "
            "a whole epoch per function call as the runtime's loop. The earlier baseline (Keras's default, one step "
            f"per call) is reported beside it: {old_text}; Keras alone gains {spe_text} from that compilation.",
            f"The runtime's loop without a strategy: {fmt(steady['runtime'])} steady, {loop_text} of default Keras; "
            f"whole fit {whole_loop_text} of default Keras.",
            f"The plain-Keras path (model.fit under a one-worker MultiWorkerMirroredStrategy with tf-keras, "
            f"TF_USE_LEGACY_KERAS=1): {fmt(steady['keras-mwms'])} steady, {plain_text} of Keras.",
            "First epoch (tracing, then one epoch) medians: " + ", ".join(f"{m} {first[m]:.2f} s" for m in MODES) + ".",
            "Final eval accuracy (median): " + ", ".join(f"{m} {a:.3f}" for m, a in accuracy.items()) + ".",
        ],
        data={"results": results, "ratio": ratio, "plain_keras_ratio": plain_ratio, "baseline": "keras-spe"},
    )

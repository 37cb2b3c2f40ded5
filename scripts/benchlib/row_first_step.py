"""Row `first-step`: a local 2-worker digits job, from `cloudtrain submit` to its first training step.

The job runs first_step_train.py (digits/train.py plus timestamp lines). The breakdown comes from the job's
own records: the secondary-status transitions (runner started = Downloading, workers started = Training) and
the timestamps the local runner gives each log line (launcher's first line, script start, TensorFlow
imported, strategy created, the runtime's "training" line after its first collective, the first step).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchlib.context import Context, write_spec
from benchlib.core import CLOUDTRAIN, Row, Stats, poll

HOSTS = ("algo-1", "algo-2")
_MARK = re.compile(r"bench-mark (\S+) t=")
_TRAINING = re.compile(r"\((chief|worker), task \d+ of \d+\): training")
PHASES = (
    ("runner started", "the detached runner is up (its Downloading status)"),
    ("workers started", "runner starts the worker processes"),
    ("launcher up", "the chief's launcher prints its first line"),
    ("script started", "the training script starts"),
    ("TF imported", "`import tensorflow` done"),
    ("strategy created", "MultiWorkerMirroredStrategy created"),
    ("cluster up", "first collective done (the runtime's `training` line)"),
    ("first step", "the first training step runs, on both workers"),
)


@contextmanager
def _home(home: Path) -> Iterator[None]:
    """cloudtrain.api in this process, reading the bench's job home."""
    old = os.environ.get("CLOUDTRAIN_HOME")
    os.environ["CLOUDTRAIN_HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CLOUDTRAIN_HOME", None)
        else:
            os.environ["CLOUDTRAIN_HOME"] = old


def _one_run(ctx: Context, spec: Path, home: Path) -> dict[str, float]:
    from cloudtrain import api

    env = {**ctx.base_env, "CLOUDTRAIN_HOME": str(home)}
    began = time.time()
    run = ctx.cloudtrain("submit", str(spec), "--backend", "local", "--json", env=env).check("cloudtrain submit")
    returned = time.time()
    job = json.loads(run.out)["job"]["name"]
    with _home(home):
        info = poll(lambda: (i := api.status(job, backend="local")).done and i, 600, 0.5, f"job {job} to end")
        events = list(api.logs(job, backend="local"))
    if info.status != "Completed":
        raise RuntimeError(f"job {job} ended {info.status}: {info.failure_reason}")
    at: dict[str, float] = {"submit returned": returned}
    for t in info.transitions:
        if t.status == "Downloading":
            at["runner started"] = t.start
        elif t.status == "Training":
            at["workers started"] = t.start
    first_line: dict[str, float] = {}
    marks: dict[tuple[str, str], float] = {}
    for e in events:
        first_line.setdefault(e.host, e.timestamp)
        if m := _MARK.search(e.message):
            marks.setdefault((e.host, m.group(1)), e.timestamp)
        elif _TRAINING.search(e.message):
            marks.setdefault((e.host, "training"), e.timestamp)
    chief = HOSTS[0]
    at["launcher up"] = first_line[chief]
    at["script started"] = marks[(chief, "script-start")]
    at["TF imported"] = marks[(chief, "tf-imported")]
    at["strategy created"] = marks[(chief, "strategy-created")]
    at["cluster up"] = marks[(chief, "training")]
    at["first step"] = max(marks[(h, "first-step")] for h in HOSTS)
    at["other worker TF imported"] = marks[(HOSTS[1], "tf-imported")]
    return {k: v - began for k, v in at.items()}


def run(ctx: Context) -> Row:
    data = ctx.ensure_digits()
    work = ctx.folder("first-step")
    (work / "code").mkdir()
    (work / "code" / "train.py").write_text(Path(__file__).with_name("first_step_train.py").read_text())
    spec = write_spec(
        work / "spec.json",
        name="bench-first-step",
        source_dir=work / "code",
        backend="local",
        instance_count=len(HOSTS),
        hyperparameters={"epochs": 1, "batch_size": 64, "learning_rate": 0.002},
        data={"train": data / "train", "eval": data / "eval"},
        environment={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    home = ctx.folder("first-step-home")
    runs = ctx.runs(5, 1)
    results: list[dict[str, float]] = []
    _one_run(ctx, spec, home)  # warm-up: page cache, .pyc files
    for i in range(runs):
        ctx.log(f"first-step: run {i + 1}/{runs} of a local {len(HOSTS)}-worker job")
        results.append(_one_run(ctx, spec, home))
    total = Stats.of([r["first step"] for r in results])
    returned = Stats.of([r["submit returned"] for r in results])
    lines = [f"`cloudtrain submit` returned after {returned.fmt()}; meanwhile the job went on:"]
    previous = 0.0
    for key, what in PHASES:
        median = statistics.median(r[key] for r in results)
        lines.append(f"{key}: at {median:.2f} s (+{median - previous:.2f} s): {what}")
        previous = median
    other = statistics.median(r["other worker TF imported"] for r in results)
    lines.append(f"(algo-2's TensorFlow import was done at {other:.2f} s.)")
    return Row(
        name="first-step",
        title=f"local {len(HOSTS)}-worker job, submit to first training step",
        figure=total.fmt(),
        against="-",
        ratio="-",
        target="recorded",
        met=None,
        commands=[f"CLOUDTRAIN_HOME=<temp> {CLOUDTRAIN} submit SPEC --backend local --json  (then poll status)"],
        details=["Breakdown: medians, in seconds from the start of `cloudtrain submit`.", *lines],
        data={"runs": results},
    )

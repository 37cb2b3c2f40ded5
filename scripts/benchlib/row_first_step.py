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
from benchlib.core import CLOUDTRAIN, REPO, Row, Stats, poll

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


def _one_run(
    ctx: Context, spec: Path, home: Path, extra: tuple[str, ...] = (), env_extra: dict[str, str] | None = None
) -> dict[str, float]:
    from cloudtrain import api

    env = {**ctx.base_env, "CLOUDTRAIN_HOME": str(home), **(env_extra or {})}
    began = time.time()
    submit = ("submit", str(spec), "--backend", "local", *extra, "--json")
    run = ctx.cloudtrain(*submit, env=env).check("cloudtrain submit")
    returned = time.time()
    job = json.loads(run.out)["job"]["name"]
    local = api.Options(backend="local")
    with _home(home):
        info = poll(lambda: (i := api.status(job, options=local)).done and i, 600, 0.5, f"job {job} to end")
        events = list(api.logs(job, options=local))
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
        if not e.message.startswith("cloudtrain: "):  # --container's note on a GPU type without a GPU
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


def _spec(ctx: Context, name: str) -> Path:
    data = ctx.ensure_digits()
    work = ctx.folder(name)
    (work / "code").mkdir()
    (work / "code" / "train.py").write_text(Path(__file__).with_name("first_step_train.py").read_text())
    return write_spec(
        work / "spec.json",
        name=f"bench-{name}",
        source_dir=work / "code",
        backend="local",
        instance_count=len(HOSTS),
        hyperparameters={"epochs": 1, "batch_size": 64, "learning_rate": 0.002},
        data={"train": data / "train", "eval": data / "eval"},
        environment={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def _measure(
    ctx: Context, spec: Path, what: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> list[dict[str, float]]:
    home = ctx.folder(f"{spec.parent.name}-home")
    runs = ctx.runs(5, 1)
    results: list[dict[str, float]] = []
    _one_run(ctx, spec, home, extra, env)  # warm-up: page cache, .pyc files (and the image build)
    for i in range(runs):
        ctx.log(f"{spec.parent.name}: run {i + 1}/{runs} of a local {len(HOSTS)}-{what} job")
        results.append(_one_run(ctx, spec, home, extra, env))
    return results


def run(ctx: Context) -> Row:
    spec = _spec(ctx, "first-step")
    results = _measure(ctx, spec, "worker")
    return _row(
        "first-step",
        f"local {len(HOSTS)}-worker job, submit to first training step",
        results,
        f"CLOUDTRAIN_HOME=<temp> {CLOUDTRAIN} submit SPEC --backend local --json  (then poll status)",
    )


def run_container(ctx: Context) -> Row:
    """The same job with --container: each host a container of docker/Dockerfile built on a TF base image.

    Needs root: it starts a Docker engine of its own and the tests' base image (tests/docker_engine.py, made
    once per machine and cached). The image build is in the warm-up run, not in the figures.
    """
    from tests.docker_engine import Engine, base_image, install, why_no_engine

    if reason := why_no_engine():
        raise RuntimeError(f"no Docker engine can start here: {reason}")
    install()
    engine = Engine.start()
    ctx.stack.callback(engine.stop)
    ctx.log("first-step-container: the TensorFlow base image (made once per machine, then loaded)")
    base, how = base_image(engine)
    ctx.log(f"first-step-container: base image {base}: {how}")
    spec = _spec(ctx, "first-step-container")
    doc = json.loads(spec.read_text())
    doc["image"] = {
        "build": {
            "dockerfile": str(REPO / "docker" / "Dockerfile"),
            "context": str(REPO),
            "build_args": {"BASE_IMAGE": base},
        }
    }
    spec.write_text(json.dumps(doc, indent=2) + "\n")
    results = _measure(ctx, spec, "container", ("--container",), engine.env())
    return _row(
        "first-step-container",
        f"local {len(HOSTS)}-container job (--container), submit to first training step",
        results,
        f"CLOUDTRAIN_HOME=<temp> {CLOUDTRAIN} submit SPEC --backend local --container --json  (then poll status)",
    )


def _row(name: str, title: str, results: list[dict[str, float]], command: str) -> Row:
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
        name=name,
        title=title,
        figure=total.fmt(),
        against="-",
        ratio="-",
        target="recorded",
        met=None,
        commands=[command],
        details=["Breakdown: medians, in seconds from the start of `cloudtrain submit`.", *lines],
        data={"runs": results},
    )

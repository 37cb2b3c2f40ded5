"""The `sweep:` section: the issue's shape loads, `--set` reaches it, and every rule a tuning job would break
after instances were paid for is refused before anything is uploaded, as one line naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtrain.errors import SpecError
from cloudtrain.spec.load import load_spec

SPEC = """\
name: digits-sweep
code: {source_dir: code, entry_point: train.py}
resources: {instance_type: ml.g5.xlarge, instance_count: 2, max_runtime: 1h}
hyperparameters: {epochs: 3, learning_rate: 0.002}
metrics:
  - {name: loss, regex: 'loss=([0-9.]+)'}
  - {name: val_accuracy, regex: 'val_accuracy=([0-9.]+)'}
sweep:
  objective: {metric: val_accuracy, goal: maximize}
  strategy: bayesian
  parameters:
    learning_rate: {min: 0.0005, max: 0.05, scale: log}
    units: {min: 32, max: 256, type: integer}
    batch_size: {values: [32, 64, 128]}
  max_trials: 12
  max_parallel: 3
  early_stopping: auto
  max_cost: 40
  seed: 7
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print('training')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spec_with(project: Path, old: str, new: str) -> str:
    """The issue's spec with one change (the old text must be there)."""
    assert old in SPEC, old
    (project / "job.yaml").write_text(SPEC.replace(old, new))
    return "job.yaml"


def line_of(text: str) -> int:
    return next(i for i, line in enumerate(SPEC.splitlines(), start=1) if text in line)


def test_the_issues_sweep_section_loads(project: Path) -> None:
    spec = load_spec(spec_with(project, "seed: 7", "seed: 7"))
    assert spec.sweep is not None
    assert spec.sweep.objective.metric == "val_accuracy" and spec.sweep.strategy == "bayesian"
    assert {n: r.kind for n, r in spec.sweep.parameters.items()} == {
        "learning_rate": "continuous",
        "units": "integer",
        "batch_size": "categorical",
    }
    assert load_spec("job.yaml", ["sweep.max_trials=8"]).sweep.max_trials == 8  # type: ignore[union-attr]


def test_warm_start_takes_from(project: Path) -> None:
    path = spec_with(
        project, "  seed: 7\n", "  seed: 7\n  warm_start: {from: [digits-sweep-a], type: transfer_learning}\n"
    )
    warm = load_spec(path).sweep.warm_start  # type: ignore[union-attr]
    assert warm is not None and warm.from_ == ["digits-sweep-a"] and warm.type == "transfer_learning"


REFUSALS = [
    # (old text, new text, field, words of the message)
    (
        "    batch_size: {values: [32, 64, 128]}\n",
        "".join(f"    p{i}: {{min: 0, max: 1}}\n" for i in range(29)),
        "sweep.parameters",
        "at most 30",
    ),
    (
        "{values: [32, 64, 128]}",
        "{values: [" + ", ".join(map(str, range(31))) + "]}",
        "sweep.parameters.batch_size.values",
        "at most 30",
    ),
    (
        "strategy: bayesian",
        "strategy: grid",
        "sweep.parameters.learning_rate",
        "grid search takes categorical ranges only",
    ),
    ("strategy: bayesian", "strategy: hyperband", "sweep.early_stopping", "early_stopping must be off"),
    (
        "{metric: val_accuracy, goal",
        "{metric: val_acc, goal",
        "sweep.objective.metric",
        "not one of the spec's metrics",
    ),
    (
        "{min: 0.0005, max: 0.05, scale: log}",
        "{min: 0, max: 0.05, scale: log}",
        "sweep.parameters.learning_rate.min",
        "log scale needs min > 0",
    ),
    (
        "{min: 0.0005, max: 0.05, scale: log}",
        "{min: 0.5, max: 1, scale: reverse_log}",
        "sweep.parameters.learning_rate.scale",
        "0 <= min < max < 1",
    ),
    (
        "{min: 0.0005, max: 0.05, scale: log}",
        "{min: 0.05, max: 0.05}",
        "sweep.parameters.learning_rate.max",
        "greater than min",
    ),
    (
        "{min: 32, max: 256, type: integer}",
        "{min: 32.5, max: 256, type: integer}",
        "sweep.parameters.units.min",
        "whole bounds",
    ),
    ("max_parallel: 3", "max_parallel: 0", "sweep.max_parallel", "must be >= 1"),
    ("max_parallel: 3", "max_parallel: 13", "sweep.max_parallel", "cannot exceed max_trials"),
    ("max_cost: 40", "max_cost: 2", "sweep.max_cost", "does not pay for one trial"),
    ("instance_type: ml.g5.xlarge", "instance_type: ml.zz9.huge", "sweep.max_cost", "no price is listed"),
    ("  seed: 7\n", "  seed: 7\n  warm_start: {from: [a, b, c, d, e, f]}\n", "sweep.warm_start.from", "at most 5"),
    ("{values: [32, 64, 128]}", "{values: [32, 64, 32]}", "sweep.parameters.batch_size.values", "same value twice"),
    ("{values: [32, 64, 128]}", "{values: ['" + "x" * 2600 + "']}", "sweep.parameters.batch_size.values", "2,500"),
]


@pytest.mark.parametrize(("old", "new", "field", "words"), REFUSALS, ids=[f"{r[2]}:{r[3][:24]}" for r in REFUSALS])
def test_refusals_name_file_line_and_field(project: Path, old: str, new: str, field: str, words: str) -> None:
    path = spec_with(project, old, new)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    e = info.value
    assert "\n" not in str(e) and e.file == "job.yaml" and e.line is not None, str(e)
    assert e.field == field and words in e.message, str(e)


def test_hyperband_needs_a_fixed_epochs_hyperparameter(project: Path) -> None:
    text = SPEC.replace("strategy: bayesian", "strategy: hyperband").replace(
        "early_stopping: auto", "early_stopping: off"
    )
    (project / "job.yaml").write_text(text.replace("{epochs: 3, ", "{"))
    with pytest.raises(SpecError) as info:
        load_spec("job.yaml")
    assert info.value.field == "sweep.strategy" and "hyperband needs a fixed `epochs`" in info.value.message
    (project / "job.yaml").write_text(text)
    assert load_spec("job.yaml").sweep.strategy == "hyperband"  # type: ignore[union-attr]


def test_more_than_20_metrics_on_a_sweep(project: Path) -> None:
    metrics = "".join(f"  - {{name: m{i}, regex: 'm{i}=([0-9.]+)'}}\n" for i in range(19))
    path = spec_with(project, "metrics:\n", "metrics:\n" + metrics)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == "metrics" and "at most 20 metrics" in info.value.message
    assert info.value.line == line_of("metrics:")


def test_an_override_that_breaks_a_rule_names_set(project: Path) -> None:
    spec_with(project, "seed: 7", "seed: 7")
    with pytest.raises(SpecError) as info:
        load_spec("job.yaml", ["sweep.max_parallel=20"])
    assert info.value.file == "--set" and info.value.field == "sweep.max_parallel"


def test_validate_on_the_command_line_is_one_line_exit_2(project: Path) -> None:
    import subprocess
    import sys

    path = spec_with(project, "strategy: bayesian", "strategy: grid")
    done = subprocess.run(
        [sys.executable, "-m", "cloudtrain", "validate", path], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "job.yaml:" in done.stderr and "grid search" in done.stderr
    assert "Traceback" not in done.stderr


def test_inits_commented_sweep_example_validates_once_uncommented(tmp_path: Path) -> None:
    from cloudtrain import api

    made = api.init(tmp_path / "proj", name="demo")
    spec = next(p for p in made.files if p.suffix == ".yaml")
    text = spec.read_text()
    assert "# sweep:" in text
    head, _, tail = text.partition("# sweep:\n")
    sweep = "".join(line.removeprefix("# ") + "\n" for line in tail.splitlines())
    spec.write_text(head + "sweep:\n" + sweep)
    loaded = load_spec(spec).sweep
    assert loaded is not None and loaded.max_trials == 4 and loaded.early_stopping == "auto"


def test_schema_describes_the_sweep_section() -> None:
    from cloudtrain.spec.models import json_schema

    schema = json_schema()
    sweep = schema["$defs"]["SweepSpec"]
    assert {"objective", "strategy", "parameters", "max_trials", "max_parallel", "max_cost"} <= set(sweep["properties"])
    assert "from" in schema["$defs"]["WarmStart"]["properties"]

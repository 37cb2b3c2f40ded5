"""A project like job_specs/digits (code/, data/train/, job.yaml) in a test's folder, and its spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cloudtrain.spec.models import JobSpec

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def make_spec(root: Path, extra: dict[str, Any] | None = None, *, drop: tuple[str, ...] = ()) -> JobSpec:
    """A project like job_specs/digits in root: code/, data/train/, job.yaml; loaded as the CLI would."""
    code = root / "code"
    if not code.exists():
        (code / "lib").mkdir(parents=True)
        (code / "train.py").write_text("import lib.util\nprint('training')\n")
        (code / "requirements.txt").write_text("tf-keras\n")
        (code / "lib" / "util.py").write_text("X = 1\n")
        (code / "__pycache__").mkdir()
        (code / "__pycache__" / "junk.pyc").write_bytes(b"\0")
        (root / "data" / "train").mkdir(parents=True)
        (root / "data" / "train" / "x.csv").write_text("1,2\n3,4\n")
    spec: dict[str, Any] = {
        "name": "digits",
        "code": {"source_dir": "code", "entry_point": "train.py", "requirements": "requirements.txt"},
        "image": {"framework_version": "2.19"},
        "resources": {"instance_type": "ml.g5.xlarge", "instance_count": 2, "max_runtime": "1h"},
        "data": {"train": "data/train"},
        "hyperparameters": {"epochs": 5},
        "aws": {"region": "us-east-1", "role_arn": ROLE},
    }
    spec = _merge(spec, extra or {})
    for dotted in drop:
        *parents, last = dotted.split(".")
        node = spec
        for p in parents:
            node = node[p]
        node.pop(last)
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return JobSpec.model_validate(yaml.safe_load(path.read_text()), context={"base_dir": root})

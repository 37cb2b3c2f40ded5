"""`cloudtrain compare`: jobs side by side: the spec fields that differ, the code digest, metrics and evaluation.

The spec is the one cloudtrain recorded at submit (secret-looking values redacted); a job submitted from another
machine has none here. The code digest and the evaluation report come from each job's backend
(`Backend.code_digest`, `Backend.evaluation`), unless fetch-model has put the report in `./JOB/output/`.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import CloudtrainError
from cloudtrain.jobs import EVAL_KEYS, EVAL_REPORT, eval_numbers

if TYPE_CHECKING:
    from cloudtrain.backends.base import Backend
    from cloudtrain.jobs import JobInfo


@dataclass(frozen=True)
class Side:
    """One job as compared."""

    info: JobInfo
    spec: dict[str, Any] | None
    code_sha256: str | None
    evaluation: dict[str, Any] | None  # accuracy, loss, source

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.info.name,
            "backend": self.info.backend,
            "status": self.info.status,
            "code_sha256": self.code_sha256,
            "metrics": dict(self.info.metrics),
            "evaluation": self.evaluation,
        }


@dataclass(frozen=True)
class Comparison:
    sides: tuple[Side, ...]
    notes: tuple[str, ...] = ()

    @property
    def same_code(self) -> bool | None:
        hashes = {s.code_sha256 for s in self.sides}
        return None if None in hashes else len(hashes) == 1

    @property
    def spec_diff(self) -> list[tuple[str, list[Any]]] | None:
        """(dotted field, one value per job) for each field whose values differ; None if a spec is unknown."""
        specs = [s.spec for s in self.sides]
        if any(spec is None for spec in specs):
            return None
        flat = [dict(_flatten(spec)) for spec in specs if spec is not None]
        fields = sorted({key for f in flat for key in f})
        rows = [(key, [f.get(key) for f in flat]) for key in fields]
        return [(key, values) for key, values in rows if any(v != values[0] for v in values)]

    @property
    def metrics(self) -> list[tuple[str, list[float | None]]]:
        """Each final metric, then eval.accuracy and eval.loss, one value per job."""
        names = sorted({name for s in self.sides for name in s.info.metrics})
        rows = [(name, [s.info.metrics.get(name) for s in self.sides]) for name in names]
        for key in EVAL_KEYS:
            values = [(s.evaluation or {}).get(key) for s in self.sides]
            if any(v is not None for v in values):
                rows.append((f"eval.{key}", values))
        return rows

    def to_json(self) -> dict[str, Any]:
        diff = self.spec_diff
        return {
            "jobs": [s.to_json() for s in self.sides],
            "same_code": self.same_code,
            "spec_diff": None if diff is None else [{"field": k, "values": v} for k, v in diff],
            "metrics": [{"name": k, "values": v} for k, v in self.metrics],
            "notes": list(self.notes),
        }


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths of a JSON spec's leaves, list items by index (`metrics.0.regex`, as `--set` names them): each
    row one short value. An empty mapping or list is no leaf: `data: {}` is a job without channels, shown `-`."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            yield from _flatten(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _flatten(child, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, value


def side(be: Backend, job: str, *, spec: dict[str, Any] | None, fetched: Path | None, notes: list[str]) -> Side:
    """What compare shows of one job, with the spec it was submitted with (None: not recorded here); what cannot
    be found becomes None and a note."""
    info = be.describe(job, tags=True)  # tags hold a SageMaker job's code digest
    if spec is None:
        notes.append(f"{job}: no spec recorded here (submitted from another machine?)")
    code = be.code_digest(info)
    if code is None:
        notes.append(f"{job}: code hash unknown")
    return Side(info, spec, code, _evaluation(be, info, fetched, notes))


def _evaluation(be: Backend, info: JobInfo, fetched: Path | None, notes: list[str]) -> dict[str, Any] | None:
    """accuracy and loss of the job's eval_report.json, and where it was read."""
    report: Any = None
    source = ""
    try:
        if fetched is not None and (fetched / "output" / EVAL_REPORT).is_file():
            source = str(fetched / "output" / EVAL_REPORT)
            report = json.loads((fetched / "output" / EVAL_REPORT).read_text())
        else:
            report, source = be.evaluation(info)
    except (OSError, ValueError, tarfile.TarError, CloudtrainError) as e:
        notes.append(f"{info.name}: could not read {EVAL_REPORT} from {source or info.name}: {e}")
        return None
    if not isinstance(report, dict):
        return None
    values = eval_numbers(report)
    return {**values, "source": source}


def compare(sides: Sequence[Side], notes: Sequence[str] = ()) -> Comparison:
    return Comparison(tuple(sides), tuple(notes))

"""How results look in a terminal, and as JSON for pipelines.

Human output goes through rich, which drops colour and animation when stdout is not a terminal (and
honours NO_COLOR and TERM=dumb); `CI` set in the environment turns every escape sequence off even on a
terminal. There are no spinners or prompts. Every line is flushed as it is printed, so logs stream.
`--json` output is plain `json.dumps`; its shapes are in `cloudtrain.output_schemas`.

Everything shown goes through `cloudtrain.redact` first: secret-looking environment values become `***`
and the AWS credentials of the environment are scrubbed from text (only the output: requests keep them).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from cloudtrain.jobs import ARTIFACT_KINDS, EVAL_REPORT, TARBALL_KINDS, eval_numbers
from cloudtrain.redact import redact, scrub

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from rich.console import Console

    from cloudtrain.api import BuildResult, Comparison, ConfigReport, Diagnosis, Scaffold, SpecCheck, SweepInfo
    from cloudtrain.jobs import Artifacts, JobInfo, LogEvent

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
STATUS_STYLE = {"Completed": "green", "Failed": "red", "Stopped": "yellow", "Stopping": "yellow", "InProgress": "cyan"}


def plain() -> bool:
    """CI is set: no escape sequences at all, whatever the output is."""
    return bool(os.environ.get("CI"))


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    off = False if plain() else None
    return Console(
        stderr=stderr,
        no_color=plain() or None,
        force_terminal=off,
        force_interactive=off,
        highlight=False,
        soft_wrap=True,
    )


@contextlib.contextmanager
def transfer_progress(err: Console, what: str, *, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar (bytes, rate, time left) for a transfer, on a terminal only: none under --json or in a pipe."""
    if quiet or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(json_safe(redact(data)), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def json_safe(data: Any) -> Any:
    """A copy with every non-finite number (a metric that logged `loss=inf`) as null: JSON has no NaN or Infinity,
    and a CI parser refuses Python's `NaN`."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def duration(info: JobInfo) -> str:
    if not info.created:
        return "-"
    seconds = int((info.ended or time.time()) - info.created)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def styled_status(info: JobInfo) -> str:
    style = STATUS_STYLE.get(info.status, "")
    text = _markup_safe(info.status + (f" ({info.secondary_status})" if info.secondary_status else ""))
    return f"[{style}]{text}[/]" if style else text


def _markup_safe(value: object) -> str:
    """Text from outside (a failure reason, a path, a metric's name) inside a line that uses rich markup:
    `[/opt/ml/model]` in a failure reason is a closing tag to rich, and an unmatched one is an exception."""
    from rich.markup import escape

    return escape(str(value))


def job_table(jobs: list[JobInfo]) -> None:
    """The recent jobs; a job's name is never cut (it is what users copy): off a terminal, plain columns."""
    from rich.table import Table

    out = console()
    if not jobs:
        out.print("no jobs yet: cloudtrain submit JOB.yaml")
        return
    headers = ("JOB", "BACKEND", "STATUS", "INSTANCES", "CREATED", "DURATION")
    rows = []
    for job in jobs:
        instances = f"{job.instance_count} x {job.instance_type}" if job.instance_type else str(job.instance_count)
        rows.append([job.name, job.backend, styled_status(job), instances, when(job.created), duration(job)])
    if not out.is_terminal:
        from rich.text import Text

        columns([list(headers), *([Text.from_markup(c).plain for c in row] for row in rows)], out)
        return
    table = Table(box=None, pad_edge=False)
    for column in headers:
        table.add_column(
            column, no_wrap=column == "JOB", min_width=max(len(j.name) for j in jobs) if column == "JOB" else None
        )
    for row in rows:
        table.add_row(*row)
    out.print(table)


def job_detail(info: JobInfo, metrics_note: str | None = None) -> None:
    """A job in detail; `metrics_note` says why it has no metrics (`api.metrics_note`)."""
    out = console()
    safe = _markup_safe

    def field(label: str, value: str, style: str = "") -> None:
        text = f"  {label:<12}{safe(value)}"
        out.print(f"[{style}]{text}[/]" if style else text)

    out.print(f"[bold]{safe(info.name)}[/]  {styled_status(info)}  backend={safe(info.backend)}")
    field("instances", f"{info.instance_count} x {info.instance_type or '-'}")
    field("created", f"{when(info.created)}   duration {duration(info)}")
    if info.billable_seconds is not None:
        savings = f"  spot savings {info.spot_savings_percent:.0f}%" if info.spot_savings_percent else ""
        each = f" ({info.instance_count} x {info.billable_seconds}s)" if info.instance_count > 1 else ""
        field("billable", f"{info.billable_instance_seconds}s{each}{savings}")
    if info.failure_reason:
        field("failure", neutralised(scrub(info.failure_reason)), "red")
    for name, value in sorted(info.metrics.items()):
        field("metric", f"{name} = {value:g}")
    if metrics_note:
        field("metrics", metrics_note)
    for kind, location in sorted(info.artifacts.items()):
        field(kind, location)
    if info.transitions:
        out.print("  history")
        for t in info.transitions:
            out.print(f"    {when(t.start)}  {t.status:<12} {neutralised(scrub(t.message))}", markup=False)


def neutralised(text: str) -> str:
    """Text from a job made inert for a terminal: control characters (ESC of every escape sequence, CR,
    BEL, C1 controls) and bidirectional overrides are shown as `\\x1b`-style escapes instead of acting."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


def log_line(event: LogEvent, out: Console | None = None) -> None:
    """One host-tagged line; the message is printed as inert text, never as markup or escape sequences.

    Off a terminal the line is written as it is, without rich (no styles to add, and ten times faster).
    """
    out = out or console()
    stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    message = neutralised(scrub(event.message))
    if not out.is_terminal:
        out.file.write(f"{stamp} {event.host} {message}\n")
        out.file.flush()
        return
    from rich.text import Text

    out.print(Text.assemble((stamp, "dim"), " ", (event.host, "cyan"), " ", message), emoji=False, markup=False)


EMPTY_MODEL = (
    "the model folder is empty: the script saved nothing in SM_MODEL_DIR (/opt/ml/model), the only folder that "
    "becomes the model (docs/bring-your-script.md, section 6)"
)


def artifacts(found: Artifacts) -> None:
    out = console()
    if not (found.model or found.output or found.checkpoints or found.tensorboard):
        out.print("  nothing to fetch: the job left no model, output or checkpoints", markup=False)
        return
    if found.trial:
        out.print(f"  {'trial':<12} {found.trial}", markup=False)
    for kind in ARTIFACT_KINDS:
        path = getattr(found, kind)
        out.print(f"  {kind:<12} {neutralised(str(path)) if path else '- (none)'}", markup=False)
    if found.model is None or not any(found.model.iterdir()):
        out.print(f"  {'':<12} {EMPTY_MODEL}", markup=False)
    elif (found.model / "model.keras").is_file():
        load = f"tf.keras.models.load_model({str(found.model / 'model.keras')!r})"
        serving = f"; {found.model / '1'} is a SavedModel for TF Serving" if (found.model / "1").is_dir() else ""
        out.print(f"  {'load it':<12} {neutralised(load)}{neutralised(serving)}", markup=False)
    for kind in ("sweep_report", "sweep_trials"):
        if (path := getattr(found, kind)) is not None:
            out.print(f"  {kind:<12} {neutralised(str(path))}", markup=False)
    if found.checked:
        checked = ", ".join(f"{name} {how}" for name, how in sorted(found.checked.items()))
        out.print(f"  {'checked':<12} {checked}", markup=False)


def evaluation(found: Artifacts) -> tuple[Path, dict[str, float | None]] | None:
    """eval_report.json among fetched artifacts, and its accuracy and loss; None when the job wrote none."""
    report_path = found.output / EVAL_REPORT if found.output else None
    if report_path is None or not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text())
    except ValueError:
        report = {}
    return report_path, eval_numbers(report)


def fetched_json(job: str, found: Artifacts) -> dict[str, Any]:
    """fetch-model's --json document (schema `fetch-model`)."""
    report = evaluation(found)
    paths = {kind: str(getattr(found, kind)) if getattr(found, kind) else None for kind in TARBALL_KINDS}
    return {
        "job": job,
        **paths,
        "checkpoints": str(found.checkpoints) if found.checkpoints else None,
        "tensorboard": str(found.tensorboard) if found.tensorboard else None,
        "eval_report": str(report[0]) if report else None,
        "evaluation": report[1] if report else None,
        "checked": dict(found.checked),
        **(
            {"trial": found.trial, "sweep_report": str(found.sweep_report), "sweep_trials": str(found.sweep_trials)}
            if found.trial
            else {}
        ),
    }


def eval_summary(found: Artifacts) -> None:
    """The headline numbers of the evaluation report, when the job wrote one."""
    report = evaluation(found)
    if report is None:
        return
    parts = [f"{k}={v:.4f}" for k, v in report[1].items() if v is not None]
    console().print(f"evaluation: {' '.join(parts)}  ({report[0]})", markup=False)


def next_steps(info: JobInfo) -> None:
    """What to run next for a job in this state."""
    job = info.name
    if info.status == "Completed":
        hint = f"fetch the model and evaluation report: cloudtrain fetch-model {job} --to DIR"
    elif info.status in ("Failed", "Stopped"):
        hint = f"see what happened: cloudtrain logs {job}"
    elif info.status == "NotCreated":
        return
    else:
        hint = (
            f"follow it: cloudtrain logs {job} --follow, or its curves: cloudtrain tensorboard {job}   "
            f"(then: cloudtrain fetch-model {job})"
        )
    console().print(f"next: {hint}", markup=False)


def initialized(done: Scaffold) -> None:
    """What init wrote, and the commands that take it to a fetched model."""
    import shlex

    out = console()
    for path in done.files:
        out.print(f"wrote {path}", markup=False)
    spec = shlex.quote(str(done.spec))
    steps = [
        (f"cloudtrain validate {spec}", "check the spec"),
        (f"cloudtrain submit {spec} --backend local --wait", "train on this machine; prints the job's name"),
        ("cloudtrain fetch-model JOB --to fetched", "fetched/model/model.keras, fetched/output/eval_report.json"),
    ]
    width = max(len(command) for command, _ in steps)
    out.print("\nnext:", markup=False)
    for command, why in steps:
        out.print(f"  {command:<{width}}  # {why}", markup=False)
    out.print(
        f"on SageMaker: give it an IAM role (aws.role_arn in {spec}, or see cloudtrain config --help) "
        "and use --backend sagemaker",
        markup=False,
    )


def columns(rows: list[list[str]], out: Console | None = None) -> None:
    """Rows as aligned columns, as plain text: nothing is cut to fit the width, nothing is read as markup."""
    rows = [[neutralised(cell) for cell in row] for row in rows]  # keys and values from a spec, names from a job
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        (out or console()).print(line, markup=False, emoji=False, highlight=False)


def comparison(result: Comparison) -> None:
    rows = [["", *(side.info.name for side in result.sides)]]

    def row(label: str, values: list[Any]) -> None:
        rows.append([label, *(_cell(v) for v in values)])

    row("backend", [s.info.backend for s in result.sides])
    row("status", [s.info.status for s in result.sides])
    same = {True: " (same)", False: " (differs)", None: ""}[result.same_code]
    row("code sha256" + same, [s.code_sha256[:12] if s.code_sha256 else None for s in result.sides])
    diff = result.spec_diff
    for field, values in diff or []:
        row(field, values)
    for name, values in result.metrics:
        row(name if name.startswith("eval.") else f"metric {name}", values)
    out = console()
    columns(rows, out)
    if diff == []:
        out.print("the specs are the same")
    for note in result.notes:
        out.print(f"note: {neutralised(note)}", markup=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def settings(report: ConfigReport) -> None:
    """`cloudtrain config`: the file, the profile, and each setting with where it comes from."""
    out = console()
    out.print(f"config file: {neutralised(str(report.path))}{'' if report.exists else ' (none)'}", markup=False)
    if report.profile:
        out.print(f"profile: {report.profile}", markup=False)
    rows = ([name, value or "-", source] for name, (value, source) in report.sources.items())
    columns([["SETTING", "VALUE", "FROM"], *rows])


def spec_checks(checks: Sequence[SpecCheck], *, json: bool) -> None:
    """`cloudtrain validate`: a line per spec (on stdout when ok, on stderr when not), or the JSON document."""
    if json:
        print_json([c.to_json() for c in checks])
    for check in checks:
        for warning in check.warnings:
            warn(check.file, warning)
        if check.spec is not None and not json:
            count = check.spec.resources.instance_count
            console().print(
                f"{neutralised(str(check.file))}: ok ({check.spec.name}, {count} instance(s))", markup=False
            )
        elif check.error is not None:
            sys.stderr.write(f"error: {neutralised(str(check.error))}\n")


def warn(spec: Path | str, warning: str) -> None:
    """A spec's warning on stderr; the file name and the warning (which may quote the spec's keys) made inert."""
    sys.stderr.write(f"warning: {neutralised(str(spec))}: {neutralised(warning)}\n")


def log_json(event: LogEvent) -> None:
    """`logs --json`: one JSON object per line, flushed as it arrives."""
    sys.stdout.write(json.dumps(event.to_json()) + "\n")
    sys.stdout.flush()


def diagnosis(result: Diagnosis) -> None:
    """`cloudtrain doctor`: one line per check."""
    columns([[check.status.upper(), check.name, check.detail] for check in result.checks])


PLAN_FILES_SHOWN = 20  # code files listed by name in a text dry run; the rest are counted (--json has all)


def plan(plan: dict[str, Any]) -> None:
    """A dry run: the exact request (secrets shown as `***`), the code files and uploads with their sizes, the
    notes (AWS not reached, a placeholder account), then the cost estimate."""
    out = console()
    plan = redact(plan)
    request = plan.get("request", plan)
    out.print_json(json.dumps(request, default=str))
    if source := plan.get("image_source"):
        out.print(
            f"image: {request.get('AlgorithmSpecification', {}).get('TrainingImage', '-')} ({source})", markup=False
        )
    if files := plan.get("code_files"):
        out.print(f"code files ({len(files)}):", markup=False)
        for name in files[:PLAN_FILES_SHOWN]:
            out.print(f"  {neutralised(name)}", markup=False)
        if len(files) > PLAN_FILES_SHOWN:
            out.print(f"  ... and {len(files) - PLAN_FILES_SHOWN} more (--json lists them all)", markup=False)
    uploads = plan.get("uploads") or []
    if uploads:
        out.print("uploads:", markup=False)
        state = {True: "there already", False: "to upload", None: "to upload unless there already"}
        rows = [
            [f"  {u['kind']}", neutralised(u["name"]), human_bytes(u["size"]), state[u.get("exists")], u["s3_uri"]]
            for u in uploads
        ]
        columns(rows, out)
        total = sum(u["size"] for u in uploads if u.get("exists") is not True)
        out.print(f"  at most {human_bytes(total)} to upload", markup=False)
    for note in plan.get("notes") or []:
        out.print(f"note: {neutralised(note)}", markup=False)
    cost = plan.get("estimated_cost_usd")
    note = plan.get("cost_note", "")
    if cost is not None:
        out.print(f"estimated cost: up to ${cost:.2f} {note}".rstrip(), markup=False)
    elif note:
        out.print(f"estimated cost: {note}", markup=False)
    out.print("dry run: nothing was created")


def build_result(result: BuildResult) -> None:
    """What `cloudtrain build` did, or would do."""
    out = console()
    if result.dry_run:
        size = f"{result.files} files, {result.context_bytes} bytes"
        out.print(f"{result.image}: dry run; the build context ({size}) is in {result.context_dir}", markup=False)
        for command in result.commands:
            out.print(f"  $ {command}", markup=False)
    elif result.skipped_reason:
        out.print(f"{result.image}: {result.skipped_reason}", markup=False)
    else:
        out.print(f"{result.image}: {'built and pushed' if result.pushed else 'built'}", markup=False)
    for note in result.notes:
        out.print(f"  note: {note}", markup=False)


def human_bytes(size: int) -> str:
    """`88226` -> `86.2 KiB`: sizes as a person reads them."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def sweep_detail(info: SweepInfo) -> None:
    """`status SWEEP`: the counters, the best trial, then every trial sorted by the objective."""
    out = console()
    counters = ", ".join(f"{n} {k}" for k, n in info.counters.items() if n)
    state = STATUS_STYLE.get(info.status)
    status = f"[{state}]{info.status}[/]" if state and not plain() else info.status
    out.print(f"sweep {_markup_safe(info.name)} ({info.backend}, {info.strategy}): {status}")
    out.print(
        f"  trials       {len(info.trials)} of {info.max_trials}, {info.max_parallel} at a time"
        + (f" ({counters})" if counters else ""),
        markup=False,
    )
    out.print(f"  objective    {info.goal} {info.metric}", markup=False)
    best = info.best
    shown = f"{best.name}  {info.metric}={best.objective:g}" if best and best.objective is not None else "- (none yet)"
    out.print(f"  best trial   {shown}", markup=False)
    if info.spent_usd is not None or info.max_cost is not None:
        ceiling = f" of max_cost ${info.max_cost:,.2f}" if info.max_cost is not None else ""
        out.print(
            f"  cost         ${info.spent_usd or 0:,.2f}{ceiling} (billed time at on-demand prices)", markup=False
        )
    if info.failure_reason:
        out.print(f"  reason       {neutralised(info.failure_reason)}", markup=False)
    for note in info.notes:
        out.print(f"  note         {neutralised(note)}", markup=False)
    if not info.trials:
        return
    names = sorted({k for t in info.trials for k in t.hyperparameters})
    rows = [["#", "TRIAL", "STATUS", info.metric.upper(), *names, "BILLABLE", "COST"]]
    numbers = {t.name: i for i, t in enumerate(info.trials, start=1)}
    for t in info.ranked():
        status = f"{t.status} ({t.failure_reason})" if t.pruned else t.status
        rows.append(
            [
                str(numbers[t.name]),
                t.name,
                status,
                "-" if t.objective is None else f"{t.objective:.4g}",
                *(_hp(t.hyperparameters.get(k)) for k in names),
                "-" if t.billable_seconds is None else f"{t.billable_seconds}s",
                "-" if t.cost_usd is None else f"${t.cost_usd:,.2f}",
            ]
        )
    columns([[neutralised(c) for c in row] for row in rows], out)


def _hp(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def sweep_next_steps(info: SweepInfo) -> None:
    name = info.name
    if info.best is not None:
        hint = f"the best trial's model and the sweep report: cloudtrain fetch-model {name} --to DIR"
    elif info.done:
        hint = f"see what happened: cloudtrain logs {name} --trial 1"
    else:
        hint = f"follow it: cloudtrain status {name}, or a trial: cloudtrain logs {name} --trial 1 --follow"
    console().print(f"next: {hint}", markup=False)


def sweep_plan(plan: dict[str, Any]) -> None:
    """A sweep's dry run: the request (a tuning job's, or the local trials'), then its worst-case cost."""
    out = console()
    plan = redact(plan)
    out.print_json(json.dumps(plan.get("request", plan), default=str))
    cost = plan.get("sweep_cost") or {}
    if cost.get("summary"):
        out.print(f"sweep cost: {cost['summary']}", markup=False)
    for note in plan.get("notes", []):
        out.print(f"note: {neutralised(note)}", markup=False)
    out.print("dry run: nothing was created")

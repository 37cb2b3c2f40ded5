"""Row `logs`: `cloudtrain logs JOB --follow` on a 1-host and a 4-host job that are InProgress.

The job runs on the SageMaker control plane of the tests (tests/sagemaker_control_plane.py: SageMaker's API in
front of moto, jobs run with the local backend, every request recorded): a stand-in script on each host says
it is up and idles. While it runs, the bench writes its own lines straight into the job's CloudWatch streams
(one per host every 0.5 s, staggered), each stamped with when the host wrote it; half the hosts' lines are
put `--logs-lag` seconds later (CloudWatch's ingestion lag, which differs between hosts on AWS). It notes
when each line shows up on the follower's stdout; a line's latency is counted from when it became visible.
A counting proxy between cloudtrain and the control plane times every API call. Calls are counted per log
stream: a call naming streams counts for each it names, one naming none (a filter over the job's prefix) for
every stream of the job, so a one-host job is held to the same target as a larger one.
"""

from __future__ import annotations

import heapq
import importlib
import re
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchlib.aws import CountingProxy, Seen
from benchlib.context import Context, write_spec
from benchlib.core import CLOUDTRAIN, REPO, Row, Stats, poll
from tests.loopback_aws import client

HOST_COUNTS = (1, 4)
PERIOD_S = 0.5  # each host writes a line this often
LATENCY_TARGET_S = 3.0  # from visible in CloudWatch to shown: a read every 2 s, plus the request
CALLS_TARGET = 1.0  # per stream per 2 s
LOG_CALLS = ("GetLogEvents", "DescribeLogStreams", "FilterLogEvents", "GetLogRecord", "StartLiveTail")
CONTROL_PLANE = REPO / "tests" / "sagemaker_control_plane.py"
_LINE = re.compile(r"bench-line host=(\S+) seq=(\d+)")
_HOST = re.compile(r"algo-\d+")


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
    rates: dict[str, float]  # operation -> calls per stream per 2 s while busy (the busiest stream's)
    latencies: list[float]
    missing: int

    @property
    def log_calls(self) -> float:
        return sum(r for op, r in self.rates.items() if op in LOG_CALLS)


def _rates(seen: list[Seen], window: float, hosts: int) -> dict[str, float]:
    """Calls per stream per 2 s of each operation, on the busiest stream, from the calls' own times (so the
    window's edges do not count): a group of n calls spread over t seconds runs at (n - 1) / t, a single call
    at 1 / window. A call counts for each stream it names, or for every stream when it names none."""
    groups: dict[tuple[str, str], list[float]] = {}
    for s in seen:
        named = set(_HOST.findall(s.body_start.decode("latin-1"))) or {f"algo-{i + 1}" for i in range(hosts)}
        for host in named:
            groups.setdefault((s.operation, host), []).append(s.time)
    rates: dict[str, float] = {}
    for (op, _), times in groups.items():
        span = max(times) - min(times)
        per_s = (len(times) - 1) / span if len(times) > 1 and span > 0 else 1 / window
        rates[op] = max(rates.get(op, 0.0), per_s * 2)
    return rates


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
    proxy: CountingProxy,
    moto_url: str,
    group: str,
    env: dict[str, str],
    work: Path,
    window: float,
    hosts: int,
) -> _Result:
    stop_file = work / f"stop-{time.monotonic_ns()}"
    spec = write_spec(
        work / "spec.json",
        name="bench-logs",
        source_dir=work / "code",
        backend="sagemaker",
        instance_count=hosts,
        hyperparameters={"stop_file": str(stop_file), "max_seconds": 600},
    )
    job = ctx.submit(spec, env)
    logs = client("logs", moto_url)  # the bench's own writes go straight to moto, uncounted

    def streams_up() -> dict[str, str] | None:
        try:
            found = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{job}/")["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        names = {s["logStreamName"].split("/", 1)[1].rsplit("-", 1)[0]: s["logStreamName"] for s in found}
        return names if len(names) == hosts else None

    try:
        streams = poll(streams_up, 180, 0.2, f"the {hosts} log streams of {job}")
        proc = ctx.processes.start(
            [CLOUDTRAIN, "logs", job, "--follow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        follower = _Follower(proc)
        poll(lambda: follower.has("bench-logs ready", hosts), 60, 0.1, "the follower to print every host's first line")
        time.sleep(1)
        began = time.time()
        written = _write_lines(logs, streams, window, group, ctx.logs_lag_s)
        ended = time.time()
        busy = [s for s in proxy.seen if began <= s.time <= ended]
        time.sleep(LATENCY_TARGET_S + 2)  # the last lines' chance to show up (the lagging ones are put already)
    finally:
        stop_file.touch()
    code = follower.wait(180)
    if code != 0:
        raise RuntimeError(f"cloudtrain logs --follow exited with {code}")
    seen: dict[tuple[str, int], float] = {}
    for at, line in follower.lines:
        if m := _LINE.search(line):
            seen.setdefault((m.group(1), int(m.group(2))), at)
    latencies = [seen[k] - t for k, t in written.items() if k in seen]
    missing = sum(k not in seen for k in written)
    return _Result(hosts, ended - began, _rates(busy, ended - began, hosts), latencies, missing)


def run(ctx: Context) -> Row:
    module = _control_plane()
    moto = ctx.moto()
    work = ctx.folder("logs")
    (work / "code").mkdir()
    (work / "code" / "train.py").write_text(Path(__file__).with_name("logs_job.py").read_text())
    plane = module.ControlPlane(moto.url, ctx.folder("logs-control-plane")).start()
    ctx.stack.callback(plane.close)
    proxy = CountingProxy(plane.url)  # cloudtrain -> counting proxy -> control plane -> moto
    ctx.stack.callback(proxy.close)
    env = ctx.aws_env(proxy.url, ctx.folder("logs-home"))
    window = 6.0 if ctx.quick else 20.0
    runs = ctx.runs(3, 1)
    results: list[_Result] = []
    try:
        for hosts in HOST_COUNTS:
            for i in range(runs):
                ctx.log(f"logs: run {i + 1}/{runs}: a {hosts}-host job, {window:g} s of lines while following")
                results.append(_one_run(ctx, proxy, moto.url, module.LOG_GROUP, env, work, window, hosts))
    finally:
        proxy.close()
        plane.close()
    lag = ctx.logs_lag_s
    figures, per_op, met = [], [], True
    for hosts in HOST_COUNTS:
        mine = [r for r in results if r.hosts == hosts]
        rates = Stats.of([r.log_calls for r in mine])
        latencies = [x for r in mine for x in r.latencies]
        lat = Stats.of(latencies) if latencies else None
        p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 20 else max(latencies, default=0.0)
        missing = sum(r.missing for r in mine)
        figures.append(
            f"{hosts} host{'s' if hosts > 1 else ''}: {rates.fmt('log API calls/stream/2 s', digits=3)}; line latency "
            + (f"median {lat.median:.2f} s, p95 {p95:.2f} s, max {lat.max:.2f} s" if lat else "none seen")
            + f" ({len(latencies)} lines, {missing} missing)"
        )
        ops = sorted({op for r in mine for op in r.rates})
        per_op.append(
            f"{hosts} host(s): "
            + ", ".join(f"{op} {statistics.median(r.rates.get(op, 0.0) for r in mine):.3f}" for op in ops)
        )
        met = met and rates.max <= CALLS_TARGET and lat is not None and lat.max <= LATENCY_TARGET_S and missing == 0
    return Row(
        name="logs",
        title=f"`logs --follow` on a 1-host and a 4-host InProgress job, half the hosts' lines {lag:g} s late",
        figure="; ".join(figures),
        against="-",
        ratio="-",
        target=f"≤ {CALLS_TARGET:g} call/stream/2 s while busy; every line, within {LATENCY_TARGET_S:g} s of "
        "reaching CloudWatch",
        met=met,
        commands=[f"AWS_ENDPOINT_URL=<SageMaker control plane, moto behind it> {CLOUDTRAIN} logs JOB --follow"],
        details=[
            f"{runs} run(s) per host count; each: a job idling on the control plane, every host's stream gets a "
            f"line every {PERIOD_S:g} s for {window:g} s (written by the bench with PutLogEvents straight to moto; the "
            f"lines of half the hosts put {lag:g} s after their timestamp, as CloudWatch's ingestion lag); "
            "latency is from PutLogEvents returning to the line on the follower's stdout (a pipe).",
            "Requests per stream per 2 s while busy, on the busiest stream, by operation (medians over runs; rates "
            "from the calls' own times, seen by a counting proxy between cloudtrain and the control plane): "
            + "; ".join(per_op)
            + ".",
            f"Log API calls counted: {', '.join(LOG_CALLS)}; DescribeTrainingJob is SageMaker's, shown apart.",
        ],
        data={
            "by_hosts": {
                str(h): {
                    "rates": [r.rates for r in results if r.hosts == h],
                    "latencies": [x for r in results if r.hosts == h for x in r.latencies],
                    "missing": sum(r.missing for r in results if r.hosts == h),
                }
                for h in HOST_COUNTS
            },
            "lag_s": lag,
        },
    )

"""`logs` on SageMaker: each host's CloudWatch stream read from its start, or followed while the job runs.

A job logs to `/aws/sagemaker/TrainingJobs`, one stream `<job>/algo-N-<epoch>` per host and container start.
AWS's quotas on reading them are per account and Region, not per stream (docs/quotas.md): every call here
takes a token from the process's budget for its operation (`cloudtrain.aws.RateBudget`), whatever the number of
hosts, jobs and streams being read.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cloudtrain.aws import BUSY_CODES, RateBudget, error_code
from cloudtrain.jobs import TERMINAL, LogEvent

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MAX_LAG_S = 60.0  # the longest CloudWatch ingestion lag `logs --follow` waits out after a job has ended
# A GetLogEvents page: at most 10,000 events or 1 MB, each event counted as its UTF-8 message plus 26 bytes, an
# event at most 256 KB (GetLogEvents, PutLogEvents: CloudWatch Logs API Reference). A page within one largest
# event of 1 MB may have stopped for size: read again at once.
PAGE_EVENTS = 10_000
PAGE_BYTES = 1_048_576
EVENT_OVERHEAD = 26
EVENT_MAX_BYTES = 262_144

Budgets = Callable[[str], RateBudget]  # operation -> the process's budget for it (`AwsSession.budget`)


@dataclass(frozen=True)
class Pace:
    """How often `follow` reads a stream (`poll_interval`, up to `max_poll_interval` while it is quiet), checks the
    job's status (`status_interval`) and looks for new streams (`discover_interval`): `SageMakerBackend`'s."""

    poll_interval: float
    max_poll_interval: float
    status_interval: float
    discover_interval: float


@dataclass
class Stream:
    """One log stream, followed from its start: its forward token, when it is next read (monotonic), how many
    reads in a row found nothing, whether its last page said more waits right behind it, when a read that
    reached its end last began, and whether it has given any line."""

    name: str
    host: str
    token: str | None = None
    due: float = 0.0
    quiet: int = 0
    more: bool = False
    read_at: float = 0.0  # when (monotonic) its last read began
    caught_up: float = 0.0
    spoke: bool = False


@dataclass(frozen=True)
class Page:
    """One GetLogEvents answer: its lines, the largest ingestion lag among them (AWS's `ingestionTime` minus the
    line's `timestamp`, both AWS's clocks, never this machine's), and whether more may wait right behind it: a
    full page (10,000 events, or close to 1 MB) or an empty one whose token moved (CloudWatch's empty page
    before the end of a stream)."""

    lines: list[LogEvent]
    lag: float
    more: bool


def busy(exc: Exception) -> bool:
    """Throttling or AWS failing inside (5xx), past botocore's retries: transient, asked again later."""
    status = int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return error_code(exc) in BUSY_CODES or status >= 500


def read(client: Any, job_name: str, host: str | None, budgets: Budgets) -> Iterator[LogEvent]:
    """Every stream of the job (or of one host) read to its end, merged by time."""
    streams = discover(client, job_name, host, budgets)
    yield from heapq.merge(*(read_stream(client, s, budgets) for s in streams), key=lambda e: e.timestamp)


def discover(client: Any, job_name: str, host: str | None, budgets: Budgets) -> list[Stream]:
    """The job's log streams `<job>/algo-N-<epoch>` (one per host and container start), each page in budget."""
    from botocore.exceptions import ClientError

    prefix = f"{job_name}/{host}-" if host else f"{job_name}/"
    streams: list[Stream] = []
    kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": prefix}
    budget = budgets("DescribeLogStreams")
    try:
        while True:
            budget.take()
            page = client.describe_log_streams(**kwargs)
            budget.answered()
            for s in page.get("logStreams", []):
                rest = s["logStreamName"][len(job_name) + 1 :]
                m = re.fullmatch(r"(?P<host>.+?)-\d+", rest)
                streams.append(Stream(s["logStreamName"], m.group("host") if m else rest))
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
    except ClientError as e:
        if error_code(e) == "ResourceNotFoundException":  # no log group before the first job logs
            return []
        if busy(e):
            budget.throttled()
        raise
    return streams


def fetch(client: Any, stream: Stream, budgets: Budgets) -> Page:
    """One GetLogEvents call in budget: the stream's next lines (empty at its end). The token moves only on an
    answer, so a throttled call (a ClientError) loses nothing: it is asked again from the same place."""
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream.name, "startFromHead": True}
    if stream.token:
        kwargs["nextToken"] = stream.token
    budget = budgets("GetLogEvents")
    budget.take()
    try:
        page = client.get_log_events(**kwargs)
    except ClientError as e:
        if busy(e):
            budget.throttled()
        raise
    budget.answered()
    before, stream.token = stream.token, page.get("nextForwardToken") or stream.token
    events = page.get("events", [])
    size = sum(len(e["message"].encode()) + EVENT_OVERHEAD for e in events)
    emptied = not events and stream.token != before and before is not None
    more = len(events) >= PAGE_EVENTS or size > PAGE_BYTES - EVENT_MAX_BYTES or emptied
    lag = max(((e.get("ingestionTime", e["timestamp"]) - e["timestamp"]) / 1000.0 for e in events), default=0.0)
    lines = [LogEvent(e["timestamp"] / 1000.0, stream.host, e["message"].rstrip("\n")) for e in events]
    return Page(lines, lag, more)


def read_stream(client: Any, stream: Stream, budgets: Budgets) -> Iterator[LogEvent]:
    """A whole stream, page by page (GetLogEvents repeats the token at the end; an empty page that moves it is
    not the end)."""
    while True:
        before = stream.token
        yield from fetch(client, stream, budgets).lines
        if stream.token == before:
            return


def follow(
    client: Any,
    job_name: str,
    host: str | None,
    raw: Mapping[str, Any],
    describe: Callable[[], Mapping[str, Any]],
    pace: Pace,
    budgets: Budgets,
) -> Iterator[LogEvent]:
    """Every host's new lines until the job has ended and its streams are drained.

    Each stream is followed on its own with GetLogEvents and its forward token, as the SDK's `logs_for_job`
    does: a host whose lines reach CloudWatch late loses none. Every call takes a token of the process's
    budget, so whatever the number of hosts a process keeps to its share of the account's quota, and each
    stream is read less often as hosts are added. One stream is read at a time, the most urgent first: one
    whose last page says more waits right behind it (a full page, or CloudWatch's empty page before the end)
    is read again at once, then the stream due longest. A stream with new lines is due again after
    `pace.poll_interval`, a quiet one backs off by half up to `pace.max_poll_interval` (or a round of the budget
    over every stream, when there are more streams than that covers). A throttled call (or AWS
    failing inside) pauses the budget and is asked again: it never ends the follow. The status comes from
    `describe` (the backend's shared DescribeTrainingJob: one call per `status_interval` with `--wait`'s own);
    streams are looked for every `pace.discover_interval`, at once when the status changes, and at every status
    check while hosts have none (a host that starts late, a container restarted after a spot interruption: read
    from its start). Once the job has ended, every stream is read to its end after the longest ingestion lag
    seen (AWS's `ingestionTime` minus the line's time: this machine's clock plays no part; at most
    `MAX_LAG_S`), until no line has come for that lag plus two rounds; and up to `MAX_LAG_S` for a host that
    has shown no line yet (no stream, or an empty one: its lag is unknown).
    """
    from botocore.exceptions import ClientError

    hosts = 1 if host else int(raw.get("ResourceConfig", {}).get("InstanceCount", 1))
    state = (raw["TrainingJobStatus"], raw.get("SecondaryStatus", ""))
    streams: dict[str, Stream] = {}
    lag = 0.0
    ended: float | None = None  # when the job was seen ended (monotonic)
    last_line = 0.0
    batch: list[LogEvent] = []  # a round's lines: merged by time once every stream was read, or none is due
    batch_began = 0.0
    now = time.monotonic()
    next_status, next_discover = now + pace.status_interval, now
    while True:
        now = time.monotonic()
        if now >= next_status:
            next_status = now + pace.status_interval
            try:
                raw = describe()
            except ClientError as e:
                if not busy(e):
                    raise
            current = (raw["TrainingJobStatus"], raw.get("SecondaryStatus", ""))
            if current != state or len({s.host for s in streams.values()}) < hosts:
                next_discover = now  # a new phase (or hosts without a stream yet): look for streams now
            state = current
        if ended is None and state[0] in TERMINAL:
            ended, next_discover = now, now
            for s in streams.values():
                s.due = now  # drain: no more back-off
        if now >= next_discover:
            next_discover = now + pace.discover_interval
            try:
                for s in discover(client, job_name, host, budgets):
                    streams.setdefault(s.name, s)
            except ClientError as e:
                if not busy(e):
                    raise
                next_discover = now + pace.poll_interval
        if ended is not None:
            since = now - max(ended, last_line)
            trained = any(t.get("Status") == "Training" for t in raw.get("SecondaryStatusTransitions", []))
            silent = trained and len({s.host for s in streams.values() if s.spoke}) < hosts
            swept = all(s.caught_up >= ended + lag for s in streams.values())  # each read to its end since
            if swept and since >= lag + 2 * pace.poll_interval and not (silent and since < MAX_LAG_S) and not batch:
                return  # drained: nothing for longer than lines have been seen to lag
        due = [s for s in streams.values() if s.more or s.due <= now]
        if batch and (not due or all(s.read_at >= batch_began for s in streams.values())):  # a round
            yield from sorted(batch, key=lambda e: e.timestamp)
            batch = []
        if not due:
            wake = min((s.due for s in streams.values()), default=now + pace.poll_interval)
            time.sleep(max(0.0, min(wake, next_status, next_discover) - time.monotonic()))
            continue
        stream = min(due, key=lambda s: (not s.more, s.due))
        began = stream.read_at = time.monotonic()
        try:
            page = fetch(client, stream, budgets)
        except ClientError as e:
            if not busy(e):
                raise
            continue  # the budget is paused; the stream is asked again, from the same token
        stream.more = page.more
        if not page.more:
            stream.caught_up = began
        lag = max(lag, min(MAX_LAG_S, page.lag))
        stream.quiet = 0 if page.lines else stream.quiet + 1
        # A quiet stream backs off up to max_poll_interval, or to a round of the budget over every stream when
        # there are more streams than that covers: the budget goes to the streams that are talking.
        ceiling = max(pace.max_poll_interval, len(streams) / budgets("GetLogEvents").rate)
        quiet_wait = min(pace.poll_interval * 1.5**stream.quiet, ceiling)
        stream.due = time.monotonic() + (pace.poll_interval if page.lines or ended is not None else quiet_wait)
        if page.lines:
            stream.spoke = True
            last_line = time.monotonic()
            batch_began = batch_began if batch else began
            batch += page.lines

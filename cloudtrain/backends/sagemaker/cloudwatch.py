"""`logs` on SageMaker: each host's CloudWatch stream read from its start, or followed while the job runs.

A job logs to `/aws/sagemaker/TrainingJobs`, one stream `<job>/algo-N-<epoch>` per host and container start.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cloudtrain.aws import error_code
from cloudtrain.jobs import TERMINAL, LogEvent

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MAX_LAG_S = 60.0  # the longest CloudWatch ingestion lag `logs --follow` waits out after a job has ended


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
    """One log stream, followed from its start: its forward token, when it is next read (monotonic), and how
    many reads in a row found nothing."""

    name: str
    host: str
    token: str | None = None
    due: float = 0.0
    quiet: int = 0


def read(client: Any, job_name: str, host: str | None) -> Iterator[LogEvent]:
    """Every stream of the job (or of one host) read to its end, merged by time."""
    streams = discover(client, job_name, host)
    yield from heapq.merge(*(read_stream(client, s) for s in streams), key=lambda e: e.timestamp)


def discover(client: Any, job_name: str, host: str | None) -> list[Stream]:
    """The job's log streams `<job>/algo-N-<epoch>` (one per host and container start)."""
    from botocore.exceptions import ClientError

    prefix = f"{job_name}/{host}-" if host else f"{job_name}/"
    streams: list[Stream] = []
    kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": prefix}
    try:
        while True:
            page = client.describe_log_streams(**kwargs)
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
        raise
    return streams


def fetch(client: Any, stream: Stream) -> list[LogEvent]:
    """One GetLogEvents call: the stream's next lines (empty at its end)."""
    kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream.name, "startFromHead": True}
    if stream.token:
        kwargs["nextToken"] = stream.token
    page = client.get_log_events(**kwargs)
    stream.token = page.get("nextForwardToken") or stream.token
    return [LogEvent(e["timestamp"] / 1000.0, stream.host, e["message"].rstrip("\n")) for e in page.get("events", [])]


def read_stream(client: Any, stream: Stream) -> Iterator[LogEvent]:
    """A whole stream, page by page (GetLogEvents repeats the token at the end)."""
    while True:
        before = stream.token
        yield from fetch(client, stream)
        if stream.token == before:
            return


def follow(
    client: Any,
    job_name: str,
    host: str | None,
    raw: Mapping[str, Any],
    describe: Callable[[], Mapping[str, Any]],
    pace: Pace,
) -> Iterator[LogEvent]:
    """Every host's new lines until the job has ended and its streams are drained.

    Each stream is followed on its own with GetLogEvents and its forward token, as the SDK's `logs_for_job`
    does: a host whose lines reach CloudWatch late loses none (each stream keeps its own position, where a
    time window over all hosts skips a lagging one), and GetLogEvents is limited per stream where
    FilterLogEvents is limited per account and region (5 requests/s, shared by every follower). A stream is
    read at most once per `pace.poll_interval`, less often while it is quiet (up to `pace.max_poll_interval`); each
    round's lines are merged by time. Streams are looked for every `pace.discover_interval`, at once when the
    status changes, and at every status check while hosts have none (a host that starts late, a container
    restarted after a spot interruption: read from its start). Once the job has ended, every stream is read
    until no line has come for the longest ingestion lag seen (the age of the newest line a read of a
    caught-up stream brings, at most `MAX_LAG_S`) plus two rounds, and up to `MAX_LAG_S` for a host that
    has no stream yet.
    """
    hosts = 1 if host else int(raw.get("ResourceConfig", {}).get("InstanceCount", 1))
    state = (raw["TrainingJobStatus"], raw.get("SecondaryStatus", ""))
    streams: dict[str, Stream] = {}
    lag = 0.0
    ended: float | None = None  # when the job was seen ended (monotonic)
    last_line = 0.0
    now = time.monotonic()
    next_status, next_discover = now + pace.status_interval, now
    while True:
        now = time.monotonic()
        if now >= next_status:
            raw = describe()
            current = (raw["TrainingJobStatus"], raw.get("SecondaryStatus", ""))
            if current != state or len({s.host for s in streams.values()}) < hosts:
                next_discover = now  # a new phase (or hosts without a stream yet): look for streams now
            state, next_status = current, now + pace.status_interval
        if ended is None and state[0] in TERMINAL:
            ended, next_discover = now, now
            for s in streams.values():
                s.due = now  # drain: no more back-off
        if now >= next_discover:
            for s in discover(client, job_name, host):
                streams.setdefault(s.name, s)
            next_discover = now + pace.discover_interval
        batch: list[LogEvent] = []
        for s in streams.values():
            if s.due > now:
                continue
            caught_up = s.token is not None  # past its backlog: a new line's age is how late it came
            lines = fetch(client, s)
            if lines and caught_up:
                lag = max(lag, min(MAX_LAG_S, time.time() - lines[-1].timestamp))
            s.quiet = 0 if lines else s.quiet + 1
            quiet_wait = min(pace.poll_interval * 1.5**s.quiet, pace.max_poll_interval)
            s.due = now + (pace.poll_interval if lines or ended is not None else quiet_wait)
            batch += lines
        if batch:
            last_line = now
        yield from sorted(batch, key=lambda e: e.timestamp)
        if ended is not None:
            since = time.monotonic() - max(ended, last_line)
            trained = any(t.get("Status") == "Training" for t in raw.get("SecondaryStatusTransitions", []))
            silent = trained and len({s.host for s in streams.values()}) < hosts  # a host's first lines late
            if since >= lag + 2 * pace.poll_interval and not (silent and since < MAX_LAG_S):
                return  # drained: nothing for longer than lines have been seen to lag
        due = min((s.due for s in streams.values()), default=now + pace.poll_interval)
        time.sleep(max(0.0, min(due, next_status, next_discover) - time.monotonic()))

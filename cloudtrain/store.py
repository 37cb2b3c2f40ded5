"""The job record store: one SQLite file (`<home>/jobs.db`) that every cloudtrain process shares.

Several processes write at once (a CLI, the detached local runner of each job, another CLI), so the
database runs in WAL mode (readers never block the writer), every connection waits on a busy
timeout instead of failing, and every change is one short transaction. Changes that read before
they write (a status transition appends to a JSON list) take the write lock first with
`BEGIN IMMEDIATE`, so no concurrent update is lost.

Secrets never reach the file: environment and hyperparameter values of the spec whose names look secret
(and passwords in URLs) are stored as `***` (`cloudtrain.redact`), and the spec digest is taken of the redacted spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import BackendUnavailable, JobExists, JobNotFound, quoted
from cloudtrain.jobs import TERMINAL, JobInfo, Transition
from cloudtrain.redact import REDACTED as REDACTED  # re-exported: what a redacted value reads
from cloudtrain.redact import redact_environment

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

DB_NAME = "jobs.db"
JOBS_FOLDER = "jobs"  # <home>/jobs/<job>: the local backend's job folders
BUSY_TIMEOUT_S = 30.0

SCHEMA_VERSION = 2  # PRAGMA user_version; a newer file is refused, an older one gains the missing columns
# Every column a release adds needs a DEFAULT, so that rows written before it read as that default.
_TABLE_COLUMNS = (
    ("name", "TEXT NOT NULL"),
    ("backend", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL"),
    ("secondary_status", "TEXT NOT NULL DEFAULT ''"),
    ("failure_reason", "TEXT"),
    ("created", "REAL"),
    ("ended", "REAL"),
    ("instance_type", "TEXT NOT NULL DEFAULT ''"),
    ("instance_count", "INTEGER NOT NULL DEFAULT 1"),
    ("transitions", "TEXT NOT NULL DEFAULT '[]'"),
    ("metrics", "TEXT NOT NULL DEFAULT '{}'"),
    ("artifacts", "TEXT NOT NULL DEFAULT '{}'"),
    ("billable_seconds", "INTEGER"),
    ("spot_savings_percent", "REAL"),
    ("tags", "TEXT NOT NULL DEFAULT '{}'"),
    ("spec", "TEXT NOT NULL DEFAULT '{}'"),
    ("spec_digest", "TEXT NOT NULL DEFAULT ''"),
    ("pid", "INTEGER"),
    ("kind", "TEXT NOT NULL DEFAULT 'job'"),  # schema 2: sweeps
    ("parent", "TEXT"),  # the sweep a trial belongs to
    ("sweep", "TEXT NOT NULL DEFAULT '{}'"),  # a sweep's own state (trials, objective, notes)
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs ("
    + ", ".join(f"{name} {definition}" for name, definition in _TABLE_COLUMNS)
    + ", PRIMARY KEY (backend, name))",
    "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created DESC)",
)
_INFO_COLUMNS = tuple(f.name for f in fields(JobInfo))  # one column per JobInfo field, in the same order
_JSON_COLUMNS = frozenset({"transitions", "metrics", "artifacts", "tags", "spec", "sweep"})
_COLUMNS = ", ".join((*_INFO_COLUMNS, "spec", "spec_digest", "pid", "parent", "sweep"))
_VALUES = f"({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(',')))})"


_DISK_HINT = {"disk I/O error": " (is the disk full?)", "database or disk is full": " (free some space)"}


def private_home(home: Path, db: Path) -> None:
    """The home readable by its owner only (700), as ~/.aws is, and the database file 600 (its WAL files follow).

    An unusable home (a file, no permission) is one line, exit code 3.
    """
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if home.stat().st_mode & 0o077 and home.stat().st_uid == os.getuid():
            home.chmod(0o700)
        os.close(os.open(db, os.O_CREAT | os.O_RDWR, 0o600))
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if path.exists() and path.stat().st_mode & 0o077:
                path.chmod(0o600)
    except OSError as e:
        reason = e.strerror or str(e)
        raise BackendUnavailable(
            f"cloudtrain home {home}: {reason} (set CLOUDTRAIN_HOME to a folder of yours)"
        ) from None


def redact_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a JSON spec whose secret-looking environment and hyperparameter values are `***`."""
    return {
        **spec,
        "environment": redact_environment(spec.get("environment") or {}),
        "hyperparameters": redact_environment(spec.get("hyperparameters") or {}),
    }


def spec_digest(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a spec: equal specs give equal digests across processes."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class JobRecord:
    """One job as the store keeps it: what `status` shows, plus the redacted JSON spec and the runner's pid."""

    info: JobInfo
    spec: dict[str, Any] = field(default_factory=dict)
    spec_digest: str = ""
    pid: int | None = None
    parent: str | None = None  # the sweep this job is a trial of
    sweep: dict[str, Any] = field(default_factory=dict)  # a sweep's state, kept by the backend running it

    @classmethod
    def for_spec(
        cls,
        name: str,
        backend: str,
        spec: JobSpec,
        *,
        instance_type: str | None = None,
        message: str = "",
        kind: str = "job",
        parent: str | None = None,
    ) -> JobRecord:
        """A new InProgress/Starting record of a job (or a sweep) submitted from `spec`."""
        now = time.time()
        info = JobInfo(
            name=name,
            backend=backend,
            status="InProgress",
            secondary_status="Starting",
            created=now,
            instance_type=instance_type if instance_type is not None else spec.resources.instance_type,
            instance_count=spec.resources.instance_count,
            transitions=(Transition("Starting", now, None, message),),
            tags=dict(spec.tags),
            kind=kind,
        )
        return cls(info, spec=spec.model_dump(mode="json", by_alias=True), parent=parent)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def done(self) -> bool:
        return self.info.done


def _row(record: JobRecord) -> tuple[Any, ...]:
    """The record as a row; the single place records are written, so redaction cannot be skipped."""
    spec = redact_spec(record.spec)
    values = {c: getattr(record.info, c) for c in _INFO_COLUMNS}
    values.update(transitions=[asdict(t) for t in record.info.transitions], spec=spec)
    values.update(spec_digest=spec_digest(spec), pid=record.pid, parent=record.parent, sweep=record.sweep)
    return tuple(json.dumps(v) if c in _JSON_COLUMNS else v for c, v in values.items())


def _record(row: sqlite3.Row) -> JobRecord:
    values = {c: json.loads(row[c]) if c in _JSON_COLUMNS else row[c] for c in row.keys()}  # noqa: SIM118
    values["transitions"] = tuple(Transition(**t) for t in values["transitions"])
    info = JobInfo(**{c: values[c] for c in _INFO_COLUMNS})
    return JobRecord(
        info,
        spec=values["spec"],
        spec_digest=values["spec_digest"],
        pid=values["pid"],
        parent=values["parent"],
        sweep=values["sweep"],
    )


def _next_status(current: str, requested: str | None) -> str:
    """A stop request is not undone by a runner still reporting progress."""
    if requested is None or (current == "Stopping" and requested == "InProgress"):
        return current
    return requested


def _advance(info: JobInfo, secondary: str, status: str | None, message: str, reason: str | None) -> JobInfo:
    """The job after one secondary-status step; a repeated step only updates the status."""
    now = time.time()
    new_status = _next_status(info.status, status)
    terminal = new_status in TERMINAL
    transitions = list(info.transitions)
    if not transitions or transitions[-1].status != secondary:
        if transitions and transitions[-1].end is None:
            transitions[-1] = replace(transitions[-1], end=now)
        transitions.append(Transition(secondary, now, now if terminal else None, message))
    return replace(
        info,
        status=new_status,
        secondary_status=secondary,
        failure_reason=reason if reason is not None else info.failure_reason,
        ended=now if terminal else info.ended,
        transitions=tuple(transitions),
    )


class JobStore:
    """The job records under one cloudtrain home. Cheap to create; opens a connection per operation."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / DB_NAME
        private_home(self.path.parent, self.path)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            current = self._schema_version(db) == SCHEMA_VERSION
        if not current:  # a new home, or one an older cloudtrain wrote: the only time opening writes
            self._refuse_lost_records()
            with self._write() as db:
                self._migrate(db)

    def _refuse_lost_records(self) -> None:
        """A store with no table beside job folders lost its records (jobs.db truncated or deleted): saying "no
        jobs yet" and starting afresh would hide those jobs (and a running one's runner would write into nothing)."""
        with self._connect() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone():
                return
        jobs = self.path.parent / JOBS_FOLDER
        found = sorted(p.name for p in jobs.iterdir() if p.is_dir()) if jobs.is_dir() else []
        if found:
            raise BackendUnavailable(
                f"job store {self.path} is empty, but {jobs} holds {len(found)} job folder(s) ({found[0]}, ...): "
                f"its records were lost; move {self.path} and {jobs} aside to start afresh"
            )

    def _schema_version(self, db: sqlite3.Connection) -> int:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise BackendUnavailable(
                f"job store {self.path} was written by a newer cloudtrain (schema {version}, this one reads "
                f"{SCHEMA_VERSION}): upgrade cloudtrain, or point CLOUDTRAIN_HOME elsewhere"
            )
        return version

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the table, or bring one an older cloudtrain wrote up to this schema (its rows kept)."""
        version = self._schema_version(db)  # again, under the write lock: another process may have done it
        for statement in _SCHEMA:
            db.execute(statement)
        present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, definition in _TABLE_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise BackendUnavailable(f"job store {self.path}: {e}") from None
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=NORMAL")  # durable across crashes of a process in WAL mode
            yield db
        except sqlite3.IntegrityError:
            raise  # a taken name: the caller's to report
        except sqlite3.OperationalError as e:
            raise BackendUnavailable(f"job store {self.path}: {e}{_DISK_HINT.get(str(e), '')}") from None
        except sqlite3.DatabaseError as e:  # not a database, or a damaged one
            raise BackendUnavailable(
                f"job store {self.path} cannot be read ({e}): move it aside, and cloudtrain starts a new one"
            ) from None
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from its start, so read-modify-write is atomic."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _fetch(db: sqlite3.Connection, backend: str, name: str) -> JobRecord:
        row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE backend = ? AND name = ?", (backend, name)).fetchone()
        if row is None:
            raise JobNotFound(f"no {backend} job named {quoted(name)}")
        return _record(row)

    def create(self, record: JobRecord) -> JobRecord:
        """Add a new job; raises JobExists if the backend has a job of that name already."""
        row = _row(record)  # redaction before the write lock, never while every other process waits
        try:
            with self._write() as db:
                db.execute(f"INSERT INTO jobs {_VALUES}", row)
        except sqlite3.IntegrityError:
            raise JobExists(record.name) from None
        return self.get(record.info.backend, record.name)

    def save(self, record: JobRecord) -> None:
        """Insert or replace a whole record (a remote backend mirroring what its API reports)."""
        row = _row(record)
        with self._write() as db:
            db.execute(f"INSERT OR REPLACE INTO jobs {_VALUES}", row)

    def remember(self, name: str, backend: str, spec: JobSpec, *, kind: str = "job") -> None:
        """Record a job (or sweep) submitted to a remote backend, once; later calls for the same one change nothing."""
        row = _row(JobRecord.for_spec(name, backend, spec, kind=kind))
        with self._write() as db:
            db.execute(f"INSERT OR IGNORE INTO jobs {_VALUES}", row)

    def get(self, backend: str, name: str) -> JobRecord:
        """Raises JobNotFound for an unknown job."""
        with self._connect() as db:
            return self._fetch(db, backend, name)

    def backend_of(self, name: str) -> str | None:
        """The backend of the newest job of that name, or None when cloudtrain never submitted it."""
        with self._connect() as db:
            row = db.execute(
                "SELECT backend FROM jobs WHERE name = ? ORDER BY created DESC LIMIT 1", (name,)
            ).fetchone()
        return row["backend"] if row else None

    def list_jobs(self, backend: str | None = None, limit: int = 20) -> list[JobRecord]:
        """The newest jobs and sweeps first, of one backend or of all; a sweep's trials are in its own row."""
        where, args = ("WHERE parent IS NULL AND backend = ?", (backend,)) if backend else ("WHERE parent IS NULL", ())
        with self._connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY created DESC LIMIT ?", (*args, limit))
            return [_record(r) for r in rows]

    def transition(
        self,
        backend: str,
        name: str,
        secondary: str,
        *,
        status: str | None = None,
        message: str = "",
        failure_reason: str | None = None,
    ) -> JobRecord:
        """Move a job to a secondary status (and optionally a status); a job that has ended stays as it is."""
        with self._write() as db:
            record = self._fetch(db, backend, name)
            if record.done:
                return record
            record = replace(record, info=_advance(record.info, secondary, status, message, failure_reason))
            db.execute(f"INSERT OR REPLACE INTO jobs {_VALUES}", _row(record))
        return record

    def _set(self, backend: str, name: str, column: str, value: Any) -> None:
        with self._write() as db:
            cursor = db.execute(f"UPDATE jobs SET {column} = ? WHERE backend = ? AND name = ?", (value, backend, name))
            if cursor.rowcount == 0:
                raise JobNotFound(f"no {backend} job named {quoted(name)}")

    def set_metrics(self, backend: str, name: str, metrics: Mapping[str, float]) -> None:
        """The final value of each metric so far (SageMaker's FinalMetricDataList)."""
        self._set(backend, name, "metrics", json.dumps(dict(metrics)))

    def set_artifacts(self, backend: str, name: str, artifacts: Mapping[str, str]) -> None:
        self._set(backend, name, "artifacts", json.dumps(dict(artifacts)))

    def set_sweep(self, backend: str, name: str, state: Mapping[str, Any]) -> None:
        """A sweep's state (its trials, their values and objectives), as the backend running it sees it now."""
        self._set(backend, name, "sweep", json.dumps(dict(state)))

    def trials(self, backend: str, sweep: str) -> list[JobRecord]:
        """The jobs that are trials of a sweep, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE backend = ? AND parent = ? ORDER BY created", (backend, sweep)
            )
            return [_record(r) for r in rows]

    def set_pid(self, backend: str, name: str, pid: int | None) -> None:
        """The pid of the local runner supervising the job."""
        self._set(backend, name, "pid", pid)

"""Timing, statistics, child processes and their cleanup, the machine, and how a row is reported."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
VENV_PY = REPO / ".venv" / "bin" / "python"
CLOUDTRAIN = REPO / ".venv" / "bin" / "cloudtrain"
SDK_PY = REPO / ".venv-sdk" / "bin" / "python"
CRT_PATH = REPO / ".venv-crt"  # awscrt alone (scripts/setup)


AWS_VENV = REPO / ".venv-awscli"  # scripts/setup installs the AWS CLI (`awscli` from PyPI) there


def _aws_cli() -> str:
    """The AWS CLI scripts/setup installed, always: never whatever `aws` PATH has (a version manager's shim adds
    its own start-up; another version is another baseline)."""
    return str(AWS_VENV / "bin" / "aws")


AWS = _aws_cli()

T = TypeVar("T")


# --- statistics ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Median and spread of a sample (min-max and the interquartile range)."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no values")
        return cls(tuple(values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def iqr(self) -> tuple[float, float]:
        if len(self.values) < 2:
            return self.values[0], self.values[0]
        q = statistics.quantiles(self.values, n=4, method="inclusive")
        return q[0], q[2]

    def fmt(self, unit: str = "s", scale: float = 1.0, digits: int = 3) -> str:
        """`0.512 s [0.498-0.530, IQR 0.503-0.519, n=7]`."""
        q1, q3 = self.iqr

        def f(x: float) -> str:
            return f"{x * scale:.{digits}g}"

        return f"{f(self.median)} {unit} [{f(self.min)}-{f(self.max)}, IQR {f(q1)}-{f(q3)}, n={len(self.values)}]"


def ratio_text(a: Sequence[float], b: Sequence[float]) -> tuple[float, str]:
    """median(a)/median(b), and the range of the per-pair ratios a[i]/b[i] (runs interleaved A/B/A/B)."""
    ratio = statistics.median(a) / statistics.median(b)
    pairs = [x / y for x, y in zip(a, b, strict=False) if y]
    spread = f" (pairs {min(pairs):.2f}-{max(pairs):.2f})" if pairs else ""
    return ratio, f"{ratio:.3f}x{spread}"


def interleave(variants: Sequence[tuple[str, Callable[[], Any]]], runs: int, warmup: int = 1) -> dict[str, list[Any]]:
    """Run each variant `runs` times in the order A, B, A, B ... after `warmup` discarded rounds."""
    results: dict[str, list[Any]] = {name: [] for name, _ in variants}
    for i in range(warmup + runs):
        for name, fn in variants:
            value = fn()
            if i >= warmup:
                results[name].append(value)
    return results


# --- child processes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished child process: wall time, exit code, peak RSS (its own and its waited-for children's)."""

    wall: float
    code: int
    maxrss_kb: int
    out: str
    err: str

    def check(self, what: str) -> Run:
        if self.code != 0:
            tail = (self.err or self.out).strip().splitlines()[-15:]
            raise RuntimeError(f"{what} exited with {self.code}:\n" + "\n".join(tail))
        return self


class Processes:
    """Every child the bench starts, each in its own session so Ctrl-C reaches only the bench; `kill_all` ends them."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def start(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        text: bool = False,
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            env=dict(env),
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            text=text,
        )
        self._procs.append(proc)
        return proc

    def run(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        timeout: float = 600,
    ) -> Run:
        """Run to the end; wall time from just before the fork to the reap, and the child's peak RSS (wait4)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            began = time.perf_counter()
            proc = self.start(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
            status, usage = _wait4(proc, timeout)
            wall = time.perf_counter() - began
            out.seek(0)
            err.seek(0)
            return Run(
                wall,
                os.waitstatus_to_exitcode(status),
                int(usage.ru_maxrss),
                out.read().decode(errors="replace"),
                err.read().decode(errors="replace"),
            )

    def kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        self._procs.clear()


def _wait4(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise TimeoutError(f"{proc.args} took longer than {timeout:g}s")
        time.sleep(0.002)


def kill_processes_under(root: Path) -> list[int]:
    """SIGKILL every process whose working folder is under `root` (the local runners and workers of our jobs).

    They run in sessions of their own (the local backend detaches them), so only their folder ties them to
    this bench; each is ended by its pid.
    """
    killed: list[int] = []
    root = root.resolve()
    for _ in range(5):
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if cwd == root or root in cwd.parents:
                found.append(int(entry.name))
        if not found:
            break
        for pid in found:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.2)
    return killed


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The bench's environment without any AWS, cloudtrain or SageMaker SDK setting of the person running it."""
    dropped = ("AWS_", "CLOUDTRAIN_", "SAGEMAKER_", "TF_", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k not in ("XDG_CONFIG_HOME", "CI")}
    env.update({"COLUMNS": "200", "TF_CPP_MIN_LOG_LEVEL": "2"})
    env.update(extra or {})
    return env


# --- the machine ------------------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return "-"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "-"


def source_fingerprint(package: Path) -> str:
    """A short hash of a cloudtrain package's Python sources: tells whether the code changed during a run."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(f"{path.relative_to(package)}\0".encode())
        with suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine() -> dict[str, str]:
    """What the numbers were measured on: cores, memory, CPU, kernel, Python and every relevant version."""
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    dirty = _first_line(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]) != "-"
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    sdk = "-"
    if SDK_PY.exists():
        sdk = _first_line([str(SDK_PY), "-c", "import importlib.metadata as m; print(m.version('sagemaker'))"])
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "ram": f"{total_kb / 2**20:.1f} GiB",
        "cpu": model or platform.processor() or "-",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cloudtrain": f"{_version('cloudtrain')} (git {commit}{', uncommitted changes' if dirty else ''})",
        "boto3/botocore": f"{_version('boto3')}/{_version('botocore')}",
        "moto": _version("moto"),
        "tensorflow": _version("tensorflow-cpu") if _version("tensorflow-cpu") != "-" else _version("tensorflow"),
        "keras": _version("keras"),
        "awscli": f"{_first_line([AWS, '--version'])} ({AWS})",
        "sagemaker SDK (.venv-sdk)": sdk,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --- rows ---------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table, with what it took to get it."""

    name: str
    title: str
    figure: str
    against: str
    ratio: str
    target: str
    met: bool | None  # None: recorded only, no target
    commands: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**not met**", None: "recorded"}[self.met]

    def text(self) -> str:
        lines = [
            f"== {self.name}: {self.title}",
            f"   figure : {self.figure}",
            f"   against: {self.against}",
            f"   ratio  : {self.ratio}   target {self.target}: {self.verdict}",
        ]
        lines += [f"   command: {c}" for c in self.commands]
        lines += [f"   {d}" for d in self.details]
        return "\n".join(lines)


def markdown(rows: Sequence[Row], info: Mapping[str, str], command: str) -> str:
    """The results table, the machine and the command, as BENCHMARKS.md shows them."""
    out = [
        "| row | figure | against (same run) | ratio | target | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        out.append(f"| {r.name}: {r.title} | {r.figure} | {r.against} | {r.ratio} | {r.target} | {r.verdict} |")
    out += ["", "Machine:", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    out += ["", f"Command: `{command}`", ""]
    for r in rows:
        out += [f"### {r.name}", ""]
        out += [f"- `{c}`" for c in r.commands]
        out += [f"- {d}" for d in r.details]
        out.append("")
    return "\n".join(out)


def dump_json(path: Path, rows: Sequence[Row], info: Mapping[str, str], command: str) -> None:
    path.write_text(json.dumps({"machine": info, "command": command, "rows": [asdict(r) for r in rows]}, indent=2))


def render_json(path: Path) -> str:
    """markdown() of a dump_json file: the same text the run printed, from the file alone."""
    saved = json.loads(path.read_text())
    return markdown([Row(**row) for row in saved["rows"]], saved["machine"], saved["command"])


def poll(condition: Callable[[], T | None], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """The first truthy value of condition(), waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)

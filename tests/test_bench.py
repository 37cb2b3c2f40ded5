"""Smoke test of scripts/bench: one quick row runs and is reported, and its JSON renders the same table.

No timing is asserted. The row runs the AWS CLI scripts/setup installs (.venv-awscli), never PATH's `aws`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
    return subprocess.run(
        [str(REPO / "scripts" / "bench"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_bench_quick_help_row_runs_and_its_json_renders_the_printed_table(tmp_path: Path) -> None:
    saved = tmp_path / "bench.json"
    proc = bench("--quick", "--only", "help", "--json", str(saved))
    assert proc.returncode == 0, proc.stderr[-2000:]  # the row ran (a target missed on a busy machine is fine)
    assert "== help: `cloudtrain --help`, `--version` and every command's `--help`" in proc.stdout
    (row,) = json.loads(saved.read_text())["rows"]
    timed = set(row["data"]["cloudtrain_s"])
    assert {"--help", "--version", "submit --help", "status --help", "logs --help"} <= timed
    assert row["commands"][-1] == f"{REPO / '.venv-awscli' / 'bin' / 'aws'} --version"
    rendered = bench("--render", str(saved))
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert rendered.stdout.startswith("| row | figure |")
    assert proc.stdout.endswith("\n" + rendered.stdout)  # the table BENCHMARKS.md pastes is the run's own
    assert "nproc" in rendered.stdout  # the machine is recorded

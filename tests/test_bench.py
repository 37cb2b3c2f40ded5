"""Smoke test of scripts/bench: one quick row runs and is reported (no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_quick_help_row_runs_and_prints_a_row() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
    proc = subprocess.run(
        [str(REPO / "scripts" / "bench"), "--quick", "--only", "help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "== help: `cloudtrain --help` wall time" in proc.stdout
    assert "| help: `cloudtrain --help` wall time |" in proc.stdout  # the results table's row
    assert "nproc" in proc.stdout  # the machine is recorded

"""Run the real `cloudtrain` command in a subprocess, as a user or a CI pipeline would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cloudtrain(
    *args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path = REPO
) -> Result:
    """`cloudtrain ARGS` with its own job home and no AWS configured unless `env` says otherwise."""
    proc = subprocess.run(
        [sys.executable, "-m", "cloudtrain", *args],
        cwd=cwd,
        env=environment(home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def environment(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `cloudtrain` runs in: this one without AWS or cloudtrain settings, its own job home."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDTRAIN_"))}
    base.update({"CLOUDTRAIN_HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    base["XDG_CONFIG_HOME"] = str(home / "xdg")  # a developer's own config file never leaks into a test
    return base | (env or {})

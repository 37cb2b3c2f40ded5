"""Where a cloudtrain command spends its time: one extra, untimed run under cProfile."""

from __future__ import annotations

import pstats
from collections.abc import Sequence
from pathlib import Path

from benchlib.core import VENV_PY, Processes

_PACKAGE = "/cloudtrain/"  # the repository's or --cloudtrain-src's, never an installed copy in site-packages
_DRIVERS = frozenset({"main", "invoke", "wrapper", "<module>", "_main", "submit", "status", "fetch_model", "logs"})


def top_functions(
    processes: Processes, args: Sequence[str], env: dict[str, str], scratch: Path, count: int = 6
) -> list[str]:
    """`cloudtrain ARGS` under cProfile: total, import share, and cloudtrain's heaviest functions (cumulative)."""
    out = scratch / "cloudtrain.prof"
    # cwd: `python -m` puts the working folder first on sys.path, and the repository's would shadow PYTHONPATH.
    cmd = [VENV_PY, "-m", "cProfile", "-o", out, "-m", "cloudtrain", *args]
    processes.run(cmd, env=env, cwd=scratch).check("profiled run")
    stats = pstats.Stats(str(out))
    raw = stats.stats  # type: ignore[attr-defined]
    total = max((ct for (_, _, _, ct, _) in raw.values()), default=0.0)
    # cProfile counts a recursive function's cumulative time once, at its outermost frames: all imports.
    imports = next(
        (ct for (file, _, func), (_, _, _, ct, _) in raw.items() if func == "_find_and_load" and "importlib" in file),
        0.0,
    )
    ours = [
        (ct, f"cloudtrain/{file.rsplit(_PACKAGE, 1)[1]}:{func}")
        for (file, _, func), (_, _, _, ct, _) in raw.items()
        if _PACKAGE in file and "site-packages" not in file and func not in _DRIVERS
    ]
    ours.sort(reverse=True)
    lines = [f"profiled run {total:.2f} s in all (cProfile slows Python code down; shares matter, not seconds)"]
    lines.append(f"{imports:.2f} s  imports (all modules)")
    lines += [f"{ct:.2f} s  {name}" for ct, name in ours[:count]]
    return lines

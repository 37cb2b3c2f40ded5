"""The README's two commands need nothing preinstalled but Python: what the suite and the demo run, scripts/setup
installs (or the operating system has), and nothing is found through a developer's PATH (a pyenv shim, a
globally installed `aws`).

The whole `./scripts/test` cannot run inside itself in reasonable time, so the test command is checked in two
bounded parts: statically, every executable the suite and the bench start is a system one or one scripts/setup
makes; and for real, `./scripts/test tests/test_bench.py` (setup, lint, and the test that once needed an `aws`
nobody installed) and `./scripts/demo` end to end, in an empty environment whose PATH holds system folders only.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP = (REPO / "scripts" / "setup").read_text()
NOT_INSTALLED = {"docker": "tests/test_build.py runs a stand-in `docker` where no engine runs"}
SUITE = [*(REPO / "tests").glob("*.py"), *(REPO / "scripts" / "benchlib").glob("*.py")]
SCRIPTS = [REPO / "scripts" / name for name in ("bench", "demo", "test", "setup", "prepare-data")]


def started_executables() -> dict[str, set[str]]:
    """Executables named literally where the suite and the bench start a process (`[name, ...]` or `which(name)`)."""
    found: dict[str, set[str]] = {}
    for path in [*(p for p in SUITE if p.name != Path(__file__).name), REPO / "scripts" / "bench"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            first = node.args[0]
            if func == "which" and isinstance(first, ast.Constant):
                found.setdefault(str(first.value), set()).add(path.name)
            elif func in ("run", "Popen", "check_call", "check_output", "call", "start") and isinstance(
                first, ast.List
            ):
                head = first.elts[0] if first.elts else None
                if isinstance(head, ast.Constant) and isinstance(head.value, str):
                    found.setdefault(head.value, set()).add(path.name)
    return found


def test_every_executable_the_suite_starts_is_the_systems_or_installed_by_setup() -> None:
    found = started_executables()
    assert {"bash", "docker"} <= set(found), found  # the scan sees what it should
    for name, where in sorted(found.items()):
        if name not in NOT_INSTALLED:
            assert shutil.which(name, path=SYSTEM_PATH), f"{name} (run by {sorted(where)}) is not a system executable"
    venvs = {m for path in [*SUITE, *SCRIPTS] for m in re.findall(r"\.venv(?:-[a-z]+)?(?=[/\"' ])", path.read_text())}
    assert {".venv", ".venv-sdk", ".venv-crt", ".venv-awscli"} <= venvs, venvs
    for venv in venvs:  # each venv something uses is one scripts/setup makes
        assert re.search(rf"(-m venv|--target) {re.escape(venv)}\b", SETUP), venv
    assert re.search(r"\.venv-awscli/bin/python -m pip install --quiet awscli", SETUP)


def clean_run(*command: str, home: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """A README command as on a fresh machine: no variables but a system PATH, a HOME of its own."""
    env = {"PATH": SYSTEM_PATH, "HOME": str(home), "LANG": "C.UTF-8", "CLOUDTRAIN_HOME": str(home / "jobs")}
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.mark.slow
def test_readme_commands_run_with_nothing_on_path_but_the_system(tmp_path: Path) -> None:
    assert shutil.which("aws", path=SYSTEM_PATH) is None, "this machine has an aws on its system PATH"
    assert shutil.which("python3", path=SYSTEM_PATH), "no python3 among the system's executables"
    tested = clean_run("./scripts/test", "tests/test_bench.py", home=tmp_path, timeout=1800)
    assert tested.returncode == 0, (tested.stdout + tested.stderr)[-3000:]
    assert re.search(r"\b1 passed\b", tested.stdout), tested.stdout[-2000:]
    demo = clean_run("./scripts/demo", home=tmp_path, timeout=1800)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    job = re.search(r"^submitted (\S+);", demo.stdout, re.MULTILINE)
    assert job, demo.stdout[-2000:]
    assert (REPO / "out" / job.group(1) / "output" / "eval_report.json").is_file()
    shutil.rmtree(REPO / "out" / job.group(1))

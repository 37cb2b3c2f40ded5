"""docs/architecture.md's rules, held: what each package may import, no cycles, and no backend named outside
`cloudtrain.backends` (and the one function that picks one)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests.clirun import REPO

PACKAGE = REPO / "cloudtrain"
LEAVES = {"__init__", "errors", "redact", "files", "jobs", "pricing", "output_schemas", "__version__", "cloudtrain"}
# Each unit (a top-level module or package of cloudtrain) and the units it may import, as the doc's table says.
ALLOWED: dict[str, set[str]] = {
    "__main__": {"cli"},
    "cli": {"api", "board", "compare", "doctor", "image", "jobs", "scaffold", "settings", "store"},
    "api": {"backends", "board", "compare", "doctor", "image", "scaffold", "settings", "spec", "store", "transfer"},
    "compare": {"backends", "store"},
    "doctor": {"aws", "settings", "spec"},
    "scaffold": {"spec"},
    "board": {"backends"},
    "backends": {"aws", "image", "runtime", "settings", "spec", "store", "transfer"},
    "settings": {"spec", "store"},
    "store": {"spec"},
    "image": {"aws", "settings", "spec", "transfer"},
    "transfer": {"aws", "spec"},
    "aws": {"settings"},
    "spec": set(),
    "runtime": set(),
    "pricing": {"spec"},
}


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cloudtrain":
            yield from (f"cloudtrain.{a.name}" for a in node.names) if node.module == "cloudtrain" else [node.module]
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "cloudtrain")


def unit(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "cloudtrain"


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = unit(".".join(path.relative_to(REPO).with_suffix("").parts))
        targets = {unit(name) for name in imports(path)} - {source}
        edges.setdefault(source, set()).update(targets)
    return edges


def test_each_package_imports_only_what_the_architecture_allows() -> None:
    for source, targets in graph().items():
        assert source in ALLOWED or source in LEAVES, f"{source} is not in docs/architecture.md"
        extra = targets - LEAVES - ALLOWED.get(source, set())
        assert not extra, f"{source} imports {extra}"


def test_no_import_cycles_between_packages() -> None:
    edges = graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    assert [u for u in edges if reaches(u, u, set())] == []


def test_the_runtime_imports_only_itself() -> None:
    """It is shipped alone in the code tarball and runs in AWS's stock image."""
    for path in (PACKAGE / "runtime").rglob("*.py"):
        assert {name for name in imports(path) if not name.startswith("cloudtrain.runtime")} == set(), path


def test_no_code_outside_the_backends_names_one() -> None:
    concrete = re.compile(
        r"LocalBackend|SageMakerBackend|backends\.(local|sagemaker|containers)"
        r"|\bbe\.name == |backend == \"(local|sagemaker)\""
    )
    for path in PACKAGE.rglob("*.py"):
        if "backends" not in path.relative_to(PACKAGE).parts:
            assert not concrete.search(path.read_text()), path


def test_the_architecture_page_lists_every_package() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    for path in PACKAGE.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            assert f"`{path.name}/`" in page, path.name

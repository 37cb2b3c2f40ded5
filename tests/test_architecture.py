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
    "cli": {"api"},
    "api": {
        "backends",
        "board",
        "compare",
        "doctor",
        "image",
        "records",
        "scaffold",
        "settings",
        "spec",
        "sweep",
        "transfer",
    },
    "records": {"settings", "spec", "store"},
    "compare": {"backends"},
    "doctor": {"aws", "settings", "spec"},
    "scaffold": {"spec"},
    "board": {"backends"},
    "backends": {"aws", "channels", "image", "runtime", "settings", "spec", "store", "sweep", "transfer"},
    "sweep": {"spec"},
    "settings": {"spec"},
    "store": {"spec"},
    "image": {"aws", "settings", "spec", "transfer"},
    "transfer": {"aws", "spec"},
    "channels": {"aws", "spec", "transfer"},
    "aws": {"runtime", "settings"},
    "spec": set(),
    "runtime": set(),
}


def imports(path: Path, *, typing_too: bool = True) -> Iterator[str]:
    """The cloudtrain modules (or packages) a file imports, anywhere in it; `typing_too=False` leaves out what
    `if TYPE_CHECKING:` imports (types for the checker: no import at run time, so no cycle)."""
    tree = ast.parse(path.read_text())
    if not typing_too:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cloudtrain":
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "cloudtrain")


def unit(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "cloudtrain"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_module(name: str) -> str:
    """`from pkg import mod` names the module `pkg.mod`; `from mod import name` the module `mod`."""
    return name if name in MODULES else name.rpartition(".")[0]


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = unit(module_name(path)) if path.name != "__init__.py" or path.parent != PACKAGE else "__init__"
        targets = {unit(imported_module(name)) for name in imports(path)} - {source}
        edges.setdefault(source, set()).update(targets)
    return edges


def module_graph() -> dict[str, set[str]]:
    """Every module and the modules it imports when it runs (at its top or inside a function)."""
    return {
        name: {imported_module(n) for n in imports(path, typing_too=False)} - {name} for name, path in MODULES.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """The nodes that reach themselves."""

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(edges.get(start, ()))
        while todo:
            if (node := todo.pop()) not in seen:
                seen.add(node)
                todo.extend(edges.get(node, ()))
        return seen

    return [u for u in edges if u in reachable(u)]


def test_each_package_imports_only_what_the_architecture_allows() -> None:
    for source, targets in graph().items():
        assert source in ALLOWED or source in LEAVES, f"{source} is not in docs/architecture.md"
        extra = targets - LEAVES - ALLOWED.get(source, set())
        assert not extra, f"{source} imports {extra}"


def test_no_import_cycles_between_packages() -> None:
    assert cycles(graph()) == []


def test_no_import_cycles_between_modules() -> None:
    assert cycles(module_graph()) == []


def doc_table() -> dict[str, set[str]]:
    """docs/architecture.md's package table: each unit and the units its "may import" column names."""
    page = (REPO / "docs" / "architecture.md").read_text()
    table: dict[str, set[str]] = {}
    for line in page.split("## Packages and modules", 1)[1].splitlines():
        cells = line.split(" | ")
        if not line.startswith("| `") or len(cells) != 3 or "(leaves)" in cells[2]:
            continue
        names = {re.sub(r"(/|\.py)$", "", w) for w in re.findall(r"`([^`]+)`", cells[0])}
        may = {w.split(".")[0] for w in re.findall(r"`([^`]+)`", cells[2])}
        for name in names:
            table[name] = may - LEAVES - {name}
    return table


def test_the_architecture_page_and_this_test_give_the_same_rules() -> None:
    table = doc_table()
    assert {u: table.get(u) for u in ALLOWED if u not in LEAVES} == {
        u: a for u, a in ALLOWED.items() if u not in LEAVES
    }


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


def test_the_path_of_a_submit_names_modules_and_functions_that_exist() -> None:
    """Every `package/module` and `module.function` the page's submit path names is in the code."""
    import importlib

    page = (REPO / "docs" / "architecture.md").read_text()
    path = page.split("## The path of a submit", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`([a-z_]+(?:/[a-z_]+)*)(?:\.([a-z_]+))?`", path)
    checked = 0
    for module, attribute in named:
        dotted = module.replace("/", ".")
        candidates = [f"cloudtrain.{dotted}", f"cloudtrain.backends.{dotted}"]
        found = next((c for c in candidates if c in MODULES), None)
        if found is None:
            assert "/" not in module, f"{module}: no such module"
            continue  # a word in backquotes (an attribute, a variable), not a module
        if attribute:
            assert hasattr(importlib.import_module(found), attribute), f"{module}.{attribute}"
        checked += 1
    assert checked >= 15

"""The documentation a user reads first agrees with the code: the spec reference is what the models give, every
spec field is described, and the README opens as promised."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from cloudtrain.spec.models import json_schema
from cloudtrain.spec.reference import markdown
from tests.clirun import REPO


def test_the_spec_reference_is_what_the_models_give() -> None:
    committed = (REPO / "docs" / "spec-reference.md").read_text()
    assert committed == markdown(json_schema()), "docs/spec-reference.md is out of date: run scripts/spec-reference"


def test_scripts_spec_reference_check_passes_on_the_committed_page() -> None:
    ran = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "spec-reference"), "--check"], capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr


def _properties(node: dict[str, Any], defs: dict[str, Any], prefix: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, prop in node.get("properties", {}).items():
        out.append((prefix + name, prop))
        for option in [prop, *prop.get("anyOf", []), prop.get("items", {})]:
            if "$ref" in option:
                out += _properties(defs[option["$ref"].rsplit("/", 1)[-1]], defs, f"{prefix}{name}.")
    return out


def test_every_spec_field_has_a_description_and_the_page_names_it() -> None:
    schema = json_schema()
    page = (REPO / "docs" / "spec-reference.md").read_text()
    fields = _properties(schema, schema["$defs"], "")
    assert len(fields) > 40
    undescribed = [name for name, prop in fields if not prop.get("description")]
    assert undescribed == []
    for name, _ in fields:
        assert f"`{name.replace('metrics.', 'metrics[].')}`" in page, name


def test_the_readme_starts_with_the_two_repository_commands() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    assert readme.index(first_block.group(0)) < readme.index("pip install")
    ci = (REPO / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


def test_the_readme_tells_a_user_how_to_install_and_where_the_docs_are() -> None:
    readme = (REPO / "README.md").read_text()
    assert "pip install 'cloudtrain[tensorflow]'" in readme
    for page in re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#]+)", readme):
        assert (REPO / page).is_file(), page
    for needed in (
        "docs/spec-reference.md",
        "docs/bring-your-script.md",
        "docs/sagemaker.md",
        "docs/troubleshooting.md",
        "docs/runtime.md",
        "CONTRIBUTING.md",
    ):
        assert needed in readme, needed

"""`--set dotted.path=value`: overrides applied to a spec's YAML before it is validated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any, get_origin

from cloudtrain.errors import SpecError, quoted
from cloudtrain.redact import is_secret_name
from cloudtrain.spec.fields import bare, type_at
from cloudtrain.spec.source import Loc, SourceMap, SpecLoader, dotted_path, kind_of


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], source: SourceMap
) -> tuple[dict[str, Any], dict[Loc, str]]:
    """`data` with each `--set dotted.path=value` applied, and the text given for each path set.

    Mappings and lists along a path are copied, not changed: an alias may share them with another
    place in the spec. A missing or empty section on the way is created.
    """
    root: dict[str, Any] = dict(data)
    source.copied(root, data)
    from_cli: dict[Loc, str] = {}
    for override in overrides:
        dotted, sep, text = override.partition("=")
        segments = [segment.strip() for segment in dotted.split(".")]
        if not sep or not all(segments):
            raise SpecError(
                "--set", None, dotted_path((dotted.strip(),)) or None, f"expected dotted.path=value (got {override!r})"
            )
        value = _override_value(dotted.strip(), text)
        path: list[str | int] = []
        parent: Any = root
        for i, segment in enumerate(segments):
            key: str | int = segment
            if isinstance(parent, list):
                if not segment.isdigit() or int(segment) >= len(parent):
                    raise SpecError(
                        "--set",
                        None,
                        dotted_path((*path, segment)),
                        f"no such item ({dotted_path(path)} has {len(parent)})",
                    )
                key = int(segment)
            path.append(key)
            if i == len(segments) - 1:
                parent[key] = _typed_override(tuple(path), value, text.strip())
                break
            child = parent[key] if isinstance(parent, list) else parent.get(key)
            if child is None:  # a list field (metrics) starts as an empty list: `.0` then says it has no item 0
                child = [] if get_origin(bare(type_at(tuple(path)))) is list else {}
            elif isinstance(child, (dict, list)):
                original, child = child, (dict(child) if isinstance(child, dict) else list(child))
                source.copied(child, original)
            else:
                raise SpecError(
                    "--set", None, dotted_path(path), f"is {kind_of(child)}, so it has no {segments[i + 1]!r}"
                )
            parent[key] = child
            parent = child
        from_cli[tuple(path)] = text.strip()
    return root, from_cli


def _override_value(dotted: str, text: str) -> Any:
    """An override's value, read as YAML with the spec's own limits."""
    try:
        return SpecLoader(text, "--set").load()
    except SpecError as e:
        if dotted.startswith("environment.") or is_secret_name(dotted.rsplit(".", 1)[-1]):  # never echoed
            raise SpecError(
                "--set", None, dotted_path((dotted,)), "cannot read the value (not shown: it may be a secret)"
            ) from None
        raise SpecError(
            "--set", None, dotted_path((dotted,)), f"cannot read the value {quoted(text.strip())}: {e.message}"
        ) from None


def _typed_override(path: Loc, value: Any, text: str) -> Any:
    """The text as given where the field takes text: `--set image.framework_version=2.10` means "2.10", not 2.1.

    In a file, quotes say so (and the error says to add them); on a command line they would need a
    second layer of shell quoting.
    """
    if isinstance(value, (bool, int, float, date)):
        tp = bare(type_at(path))
        if isinstance(tp, type) and issubclass(tp, (str, Path)) and not issubclass(tp, Enum):
            return text
    return value

"""The spec reference page (docs/spec-reference.md), generated from the spec's JSON Schema.

One source for the models, `cloudtrain schema` and the page: `scripts/spec-reference` rewrites the page, and a
test regenerates it and fails when the committed page differs (a new field, a changed default or description).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from cloudtrain.spec.models import format_duration
from cloudtrain.spec.patterns import PATTERN_HELP

HEADER = """\
# Job spec reference

<!-- Generated from cloudtrain/spec/models.py by scripts/spec-reference: edit the models, then rerun it. -->

Every field of a cloudtrain job spec (YAML). Paths are relative to the spec file; a field left out takes its
default; an unknown or misspelled field is an error naming the field you probably meant. Durations are written
`90s`, `30m`, `2h`, `1d` or as seconds. Change a field for one run without editing the file:
`cloudtrain submit job.yaml --set resources.instance_count=1`. For your editor: `cloudtrain schema >
cloudtrain.schema.json` and `# yaml-language-server: $schema=cloudtrain.schema.json` at the top of the spec.

"""


def markdown(schema: dict[str, Any]) -> str:
    """The reference page for a spec schema (`cloudtrain.spec.models.json_schema()`)."""
    defs = schema.get("$defs", {})
    lines = [HEADER.rstrip("\n"), ""]
    lines += ["| field | type | default |", "| --- | --- | --- |"]
    entries = list(_fields(schema, defs, ()))
    for path, prop, required in entries:
        default = "required" if required else _default(prop)
        lines.append(f"| [`{_dotted(path)}`](#{_anchor(path)}) | {_type(prop, defs)} | {default} |")
    lines.append("")
    for path, prop, required in entries:
        lines += _section(path, prop, required, defs)
    return "\n".join(lines).rstrip("\n") + "\n"


def _fields(
    node: dict[str, Any], defs: dict[str, Any], prefix: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], dict[str, Any], bool]]:
    """Each property of an object schema, depth first: (dotted path, property schema, required)."""
    required = set(node.get("required", ()))
    for name, prop in node.get("properties", {}).items():
        path = (*prefix, name)
        yield path, prop, name in required
        target = _object(prop, defs)
        if target is not None:
            yield from _fields(target, defs, path)
        elif (items := _resolve(prop, defs).get("items")) and (target := _object(items, defs)) is not None:
            yield from _fields(target, defs, (*path, "[]"))


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The property's schema with a `$ref` (or a `$ref`-or-null) followed."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    one = options[0] if len(options) == 1 else prop
    return defs[one["$ref"].rsplit("/", 1)[-1]] if "$ref" in one else one


def _object(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    target = _resolve(prop, defs)
    return target if "properties" in target else None


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if _is_duration(prop):
        return "duration"
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    kinds = []
    for option in options:
        target = defs[option["$ref"].rsplit("/", 1)[-1]] if "$ref" in option else option
        if "enum" in target:
            kinds.append("one of " + ", ".join(f"`{v}`" for v in target["enum"]))
        elif "properties" in target:
            kinds.append("section")
        elif target.get("type") == "object":
            value = target.get("additionalProperties") or next(iter(target.get("patternProperties", {}).values()), {})
            kinds.append(f"map of name → {_type(value, defs) if value else 'value'}")
        elif target.get("type") == "array":
            kinds.append(f"list of {_type(target.get('items', {}), defs)}")
        elif "anyOf" in target:
            kinds.append(" or ".join(o.get("type", "value") for o in target["anyOf"]))
        else:
            kinds.append(target.get("type", "value"))
    return " or ".join(kinds)


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "empty" if prop.get("type") in ("object", "array") else "not set"
    default = prop["default"]
    if default is None:
        return "not set"
    if isinstance(default, dict) and default:
        return "see its fields"
    if isinstance(default, int) and _is_duration(prop):
        return f"`{format_duration(default)}`"
    return f"`{json.dumps(default)}`"


def _is_duration(prop: dict[str, Any]) -> bool:
    return any(o.get("pattern", "").startswith(r"^\s*(\d+)") for o in prop.get("anyOf", [prop]))


def _allowed(prop: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    """What a value may be, beyond its type: a pattern's meaning, bounds, lengths."""
    out = []
    for option in [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]:
        target = defs[option["$ref"].rsplit("/", 1)[-1]] if "$ref" in option else option
        if (pattern := target.get("pattern")) and not pattern.startswith(r"^\s*(\d+)"):
            out.append(PATTERN_HELP.get(pattern, f"matches `{pattern}`"))
        for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
            if key in target:
                bound = format_duration(target[key]) if _is_duration(prop) else target[key]
                out.append(f"{word} {bound}")
        for key, word in (("minLength", "at least"), ("minItems", "at least")):
            if target.get(key, 0) > 1 or (key == "minItems" and key in target):
                out.append(f"{word} {target[key]} {'characters' if 'Length' in key else 'items'}")
        for key, word in (("maxLength", "characters"), ("maxItems", "items")):
            if key in target:
                out.append(f"at most {target[key]} {word}")
        for keys in target.get("patternProperties", {}):
            out.append(f"names: {PATTERN_HELP.get(keys, keys)}")
    return out


def _section(path: tuple[str, ...], prop: dict[str, Any], required: bool, defs: dict[str, Any]) -> list[str]:
    facts = [_type(prop, defs), "required" if required else f"default {_default(prop)}", *_allowed(prop, defs)]
    lines = [f'<a id="{_anchor(path)}"></a>', f"### `{_dotted(path)}`", "", " · ".join(facts), ""]
    lines += [prop.get("description") or _resolve(prop, defs).get("description", ""), ""]
    if examples := prop.get("examples"):
        lines += ["```yaml", _example(path, examples[0]).rstrip("\n"), "```", ""]
    return lines


def _example(path: tuple[str, ...], value: Any) -> str:
    """The example as it sits in a spec: nested under its section."""
    for part in reversed(path):
        value = [value] if part == "[]" else {part: value}
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)


def _anchor(path: tuple[str, ...]) -> str:
    return "-".join(p for p in path if p != "[]").replace("_", "-")


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(".[]", "[]")

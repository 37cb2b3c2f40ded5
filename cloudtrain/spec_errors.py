"""Wording a spec's problems: `--set` overrides, and pydantic errors turned into one line with a line number."""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ValidationError,
)
from pydantic.fields import FieldInfo

from cloudtrain.errors import SpecError, quoted
from cloudtrain.redact import is_secret_name
from cloudtrain.spec import PATTERN_HELP, FieldError, JobSpec, format_duration, parse_duration
from cloudtrain.spec_source import Loc, SourceMap, SpecLoader, dotted_path, kind_of, one_line, short

# ----------------------------------------------------------------------------------------------------------
# --set overrides


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
            if child is None:
                child = {}
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
        tp = _bare(_type_at(path))
        if isinstance(tp, type) and issubclass(tp, (str, Path)) and not issubclass(tp, Enum):
            return text
    return value


# ----------------------------------------------------------------------------------------------------------
# The models' shape, for messages: which fields a location has, which are durations.


def _bare(tp: Any) -> Any:
    """`tp` without Annotated and without `| None`."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType) and len(args := [a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = args[0]
        else:
            return tp


def _step(tp: Any, segment: str | int) -> tuple[Any, FieldInfo | None]:
    """The type one step into `tp` (a model's field, a mapping's value, a list's item), and the FieldInfo if a field."""
    tp = _bare(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(segment) if isinstance(segment, str) else None
        return (info.annotation, info) if info else (None, None)
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1], None
    if origin is list and args:
        return args[0], None
    return None, None


def _type_at(loc: Loc) -> Any:
    tp: Any = JobSpec
    for segment in loc:
        tp, _ = _step(tp, segment)
    return tp


def _field_at(loc: Loc) -> FieldInfo | None:
    tp: Any = JobSpec
    info = None
    for segment in loc:
        tp, info = _step(tp, segment)
    return info


def _is_duration(info: FieldInfo | None) -> bool:
    if info is None:
        return False

    def metadata(tp: Any) -> Iterator[Any]:
        if get_origin(tp) is Annotated:
            yield from tp.__metadata__
        for arg in get_args(tp):
            yield from metadata(arg)

    return any(
        isinstance(m, BeforeValidator) and m.func is parse_duration
        for m in (*info.metadata, *metadata(info.annotation))
    )


def _model_fields(tp: Any) -> list[str]:
    tp = _bare(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _field_paths(tp: Any, prefix: Loc = ()) -> Iterator[Loc]:
    """Every field path of the model tree, to spot a field written at the wrong level."""
    for name in _model_fields(tp):
        yield (*prefix, name)
        yield from _field_paths(_step(tp, name)[0], (*prefix, name))


# ----------------------------------------------------------------------------------------------------------
# pydantic's errors -> one SpecError


@dataclass(frozen=True)
class _Problem:
    loc: Loc  # where in the document, as the user wrote it
    error: Any  # pydantic's ErrorDetails
    union_member: bool  # one member's complaint, of a union type (`str | int | float | bool`)
    about_key: bool  # about a mapping's key (an environment variable's name), not its value


def spec_error(exc: ValidationError, data: Any, source: SourceMap, file: str, from_cli: dict[Loc, str]) -> SpecError:
    """The one error to show: the first in the file, in words a user reads, at the line of its field."""
    groups: dict[Loc, list[_Problem]] = {}
    for error in exc.errors(include_url=False):
        problem = _problem(error, data)
        groups.setdefault(problem.loc, []).append(problem)
    found: list[tuple[bool, int, SpecError]] = []
    for loc, problems in groups.items():
        where, (line, raw, depth) = file, source.locate(data, loc)
        value = _value_at(data, loc)
        for path, text in from_cli.items():
            # The override set this place, or made the part of the path that the file does not have.
            if loc[: len(path)] == path or _common(loc, path) > depth:
                where, line, raw = "--set", None, text if loc == path else None
                break
        if _is_secret(loc):
            message = f"expected a string (got {kind_of(value)}; the value is not shown: the name looks secret)"
        elif len(problems) > 1 and all(p.union_member for p in problems):
            message = _union_message(problems, value, raw)
        else:
            message = _message(problems[0], value, raw)
        found.append((where == "--set", line or 0, SpecError(where, line, dotted_path(loc) or None, message)))
    return min(found, key=lambda f: (f[0], f[1]))[2]


def _is_secret(loc: Loc) -> bool:
    """An environment entry or hyperparameter whose name looks secret: its value never appears in an error."""
    return len(loc) == 2 and loc[0] in ("environment", "hyperparameters") and is_secret_name(str(loc[1]))


def _problem(error: Any, data: Any) -> _Problem:
    """Drop from pydantic's location what is not a place in the document (a union member's tag, `[key]`)."""
    loc: list[str | int] = []
    cur, union_member, about_key = data, False, False
    raw_loc = error["loc"]
    for i, segment in enumerate(raw_loc):
        if segment == "[key]":
            about_key = True
        elif _holds(cur, segment):
            loc.append(segment)
            cur = cur[segment]
        elif i == len(raw_loc) - 1 and error["type"] == "missing":
            loc.append(segment)
        else:
            union_member = True
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        loc.extend(cause.path)
    return _Problem(tuple(loc), error, union_member, about_key)


def _holds(container: Any, segment: str | int) -> bool:
    if isinstance(container, dict):
        return isinstance(segment, str) and segment in container
    return isinstance(container, list) and isinstance(segment, int) and 0 <= segment < len(container)


def _value_at(data: Any, loc: Loc) -> Any:
    """The value at `loc`, None where there is none."""
    for segment in loc:
        if not _holds(data, segment):
            return None
        data = data[segment]
    return data


def _common(a: Loc, b: Loc) -> int:
    """Length of the common prefix."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _got(value: Any, raw: str | None) -> str:
    """What the user wrote, as they wrote it."""
    if isinstance(value, str):
        return quoted(value)
    if raw is not None:
        return short(raw) if raw else "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return kind_of(value)
    return short(str(value))


_COMPARISONS = types.MappingProxyType(
    {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
)
_EXPECTED = types.MappingProxyType(
    {
        "string_type": "a string",
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "dict_type": "a mapping",
        "model_type": "a mapping of fields",
        "model_attributes_type": "a mapping of fields",
        "list_type": "a list",
        "path_type": "a path",
    }
)


def _message(problem: _Problem, value: Any, raw: str | None) -> str:
    error, loc = problem.error, problem.loc
    kind, ctx = error["type"], error.get("ctx") or {}
    got = _got(value, raw)
    if problem.about_key:
        name = quoted(str(loc[-1])) if loc else "?"
        if kind == "string_pattern_mismatch":
            return f"the name {name} is not allowed: use {PATTERN_HELP.get(ctx.get('pattern'), ctx.get('pattern'))}"
        return f"the name {name} is not allowed: {one_line(error['msg']).lower()}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_field(loc)
    if kind in _COMPARISONS:
        op, key = _COMPARISONS[kind]
        limit = ctx.get(key)
        if _is_duration(_field_at(loc)):
            limit = format_duration(limit) if isinstance(limit, int) and limit else limit
            got = short(one_line(value)) if isinstance(value, str) else got  # 30d, as written
        return f"must be {op} {limit} (got {got})"
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must be at least {n} characters (got {got})"
    if kind == "string_too_long":
        length = len(value) if isinstance(value, str) else got
        return f"must be at most {ctx.get('max_length')} characters (got {length})"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"needs {'at least' if kind == 'too_short' else 'at most'} {n} item{'s' if n != 1 else ''}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return f"must be {PATTERN_HELP[pattern]} (got {got})" if pattern in PATTERN_HELP else f"must match {pattern}"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        close = difflib.get_close_matches(str(value), re.findall(r"'([^']*)'", expected), n=1)
        return f"must be {expected} (got {got})" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind in ("value_error", "assertion_error") and ctx.get("error") is not None:
        return one_line(str(ctx["error"]))
    if kind in _EXPECTED:
        noun = _EXPECTED[kind]
        if noun == "a string" and isinstance(value, (bool, int, float, date)) and raw:
            return f'expected a string (got {raw}; put it in quotes: "{raw}")'
        return f"expected {noun} (got {got})"
    return f"{one_line(error['msg'])} (got {got})"


def _union_message(problems: list[_Problem], value: Any, raw: str | None) -> str:
    nouns = {"int": "a number", "float": "a number", "bool": "true/false", "string": "a string"}
    expected = list(dict.fromkeys(nouns.get(p.error["type"].split("_")[0], "something else") for p in problems))
    listed = ", ".join(expected[:-1]) + f" or {expected[-1]}" if len(expected) > 1 else expected[0]
    return f"expected {listed} (got {_got(value, raw)})"


def _unknown_field(loc: Loc) -> str:
    name = str(loc[-1])
    fields = _model_fields(_type_at(loc[:-1]))
    close = difflib.get_close_matches(name, fields, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    elsewhere = [path for path in _field_paths(JobSpec) if path[-1] == name]
    if elsewhere:
        return f"unknown field here (did you mean {dotted_path(elsewhere[0])!r}?)"
    return f"unknown field (expected one of: {', '.join(fields)})"

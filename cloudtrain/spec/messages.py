"""pydantic's errors about a spec, turned into one line with the file, the line and the field."""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import (
    ValidationError,
)

from cloudtrain.errors import SpecError, one_line, quoted
from cloudtrain.redact import is_secret_name
from cloudtrain.spec.fields import field_at, field_paths, is_duration, model_fields, type_at
from cloudtrain.spec.models import PATTERN_HELP, FieldError, JobSpec, format_duration
from cloudtrain.spec.source import Loc, SourceMap, dotted_path, kind_of, short


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
        if is_duration(field_at(loc)):
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
    fields = model_fields(type_at(loc[:-1]))
    close = difflib.get_close_matches(name, fields, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    elsewhere = [path for path in field_paths(JobSpec) if path[-1] == name]
    if elsewhere:
        return f"unknown field here (did you mean {dotted_path(elsewhere[0])!r}?)"
    return f"unknown field (expected one of: {', '.join(fields)})"

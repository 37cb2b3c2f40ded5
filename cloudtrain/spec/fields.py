"""Where a dotted path leads in the JobSpec models: the type and field there, and every field path."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
)
from pydantic.fields import FieldInfo

from cloudtrain.spec.models import JobSpec, parse_duration
from cloudtrain.spec.source import Loc


def bare(tp: Any) -> Any:
    """`tp` without Annotated and without `| None`."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType) and len(args := [a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = args[0]
        else:
            return tp


def step(tp: Any, segment: str | int) -> tuple[Any, FieldInfo | None]:
    """The type one step into `tp` (a model's field, a mapping's value, a list's item), and the FieldInfo if a field."""
    tp = bare(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(segment) if isinstance(segment, str) else None
        return (info.annotation, info) if info else (None, None)
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1], None
    if origin is list and args:
        return args[0], None
    return None, None


def type_at(loc: Loc) -> Any:
    tp: Any = JobSpec
    for segment in loc:
        tp, _ = step(tp, segment)
    return tp


def field_at(loc: Loc) -> FieldInfo | None:
    tp: Any = JobSpec
    info = None
    for segment in loc:
        tp, info = step(tp, segment)
    return info


def is_duration(info: FieldInfo | None) -> bool:
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


def model_fields(tp: Any) -> list[str]:
    tp = bare(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def field_paths(tp: Any, prefix: Loc = ()) -> Iterator[Loc]:
    """Every field path of the model tree, to spot a field written at the wrong level."""
    for name in model_fields(tp):
        yield (*prefix, name)
        yield from field_paths(step(tp, name)[0], (*prefix, name))

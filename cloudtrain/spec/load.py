"""`load_spec`: a spec file (and `--set` overrides) read, checked and validated into a JobSpec."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from cloudtrain.errors import SpecError
from cloudtrain.spec.messages import spec_error
from cloudtrain.spec.models import JobSpec
from cloudtrain.spec.overrides import apply_overrides
from cloudtrain.spec.source import SpecLoader, kind_of, read_text


def load_spec(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> JobSpec:
    """Read, check and validate a job spec; paths in it are resolved against the spec file's folder.

    `overrides` are `--set dotted.path=value` strings applied before validation, each value read as
    YAML (`epochs=3` is a number, `data.train=s3://bucket/p` a string; a text field keeps the text, so
    `image.framework_version=2.10` stays "2.10"). Paths they give are, like the file's, relative to
    the spec file's folder. Raises one `SpecError` for any problem, naming the file (as given), the
    line and the field; `--set` in place of the file when an override is at fault.
    """
    shown = os.fspath(path)
    text = read_text(Path(shown), shown)
    loader = SpecLoader(text, shown)
    data = loader.load()
    if data is None:
        raise SpecError(shown, 1, None, "the spec is empty")
    if not isinstance(data, dict):
        raise SpecError(
            shown, loader.source.root_line, None, f"the top level must be a mapping of fields (got {kind_of(data)})"
        )
    data, from_cli = apply_overrides(data, overrides, loader.source)
    try:
        return JobSpec.model_validate(data, context={"base_dir": Path(shown).absolute().parent})
    except ValidationError as e:
        raise spec_error(e, data, loader.source, shown, from_cli) from None

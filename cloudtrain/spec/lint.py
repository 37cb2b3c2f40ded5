"""Warnings about a valid spec: where AWS's own container code treats it other than its author would expect.

Each is one line naming the field; `validate` and `submit` print them and carry on (the job can still run).
Some are what a new user would otherwise learn from a failed, paid-for run: a script that cannot take the
`--model_dir` SageMaker passes, a `--set` of a hyperparameter the spec does not have (a typo a script using
`parse_known_args` silently ignores).
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cloudtrain.errors import quoted

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

# What a POSIX shell passes through as one word unchanged (shlex.quote's safe characters); "" is dropped.
_SHELL_SAFE = re.compile(r"^[\w@%+=:,./-]+$", re.ASCII)
FORCED_LOG_LEVEL = "1"


def spec_warnings(
    spec: JobSpec, *, spec_path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> list[str]:
    """The spec's traps on AWS's TensorFlow images, each one line starting with the field; with the file and
    the `--set`s it was loaded with, also each `--set` of a hyperparameter the file does not have."""
    warnings = []
    if spec_path is not None:
        warnings += new_hyperparameters(spec_path, overrides)
    if (strict := strict_parse_args(spec.code.source_dir / spec.code.entry_point)) is not None:
        warnings.append(strict)
    if spec.image.kind != "build" and not spec.code.entry_point.endswith(".sh"):
        for name, value in spec.hyperparameters.items():
            if isinstance(value, str) and not _SHELL_SAFE.match(value):
                warnings.append(
                    f"hyperparameters.{name}: {quoted(value)} has spaces or shell characters; AWS's TensorFlow images "
                    "(sagemaker-training 4.8.3) run the command line through a shell, so the script gets it split "
                    "or interpreted"
                )
    level = spec.environment.get("TF_CPP_MIN_LOG_LEVEL")
    if level is not None and level.strip() != FORCED_LOG_LEVEL:
        warnings.append(
            f"environment.TF_CPP_MIN_LOG_LEVEL: AWS's TensorFlow toolkit (and cloudtrain's launcher, to match it) sets "
            f"it to {FORCED_LOG_LEVEL} whatever the spec says; set it in the script before importing TensorFlow"
        )
    warnings += shard_policy_warnings(spec)
    return warnings


def new_hyperparameters(spec_path: str | os.PathLike[str], overrides: Sequence[str]) -> list[str]:
    """A line per `--set hyperparameters.NAME=...` whose NAME the spec file does not have: a new hyperparameter is
    allowed, but is more often a typo (`epoch` for `epochs`), which a script using parse_known_args ignores."""
    from cloudtrain.errors import SpecError
    from cloudtrain.spec.source import SpecLoader, read_text

    names = [o.partition("=")[0].strip() for o in overrides]
    wanted = [n.split(".", 1)[1].strip() for n in names if n.split(".")[0].strip() == "hyperparameters" and "." in n]
    if not wanted:
        return []
    shown = os.fspath(spec_path)
    try:
        data = SpecLoader(read_text(Path(shown), shown), shown).load()
    except SpecError:
        return []
    section = data.get("hyperparameters") if isinstance(data, dict) else None
    have = [str(k) for k in section] if isinstance(section, dict) else []
    out = []
    for name in dict.fromkeys(wanted):
        if name in have:
            continue
        close = difflib.get_close_matches(name, have, n=1)
        question = f"did you mean {quoted(close[0])}?" if close else f"it has {', '.join(have) or 'none'}"
        out.append(
            f"--set hyperparameters.{name}: the spec has no hyperparameter {quoted(name)} ({question}); it is passed "
            f"as a new one, which a script using parse_known_args ignores"
        )
    return out


def strict_parse_args(script: Path) -> str | None:
    """A line when a Python entry point calls `parse_args()` and never names `model_dir`: SageMaker passes
    `--model_dir` to every script, and such a parser exits with "unrecognized arguments" once the instances
    are paid for. Only where the source says so plainly: a script that reads argv otherwise gets no warning."""
    if script.suffix != ".py":
        return None
    try:
        source = script.read_text(errors="replace")
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return None
    strict = any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "parse_args"
        and not node.args
        and not node.keywords
        for node in ast.walk(tree)
    )
    if not strict or "model_dir" in source:
        return None
    return (
        f"code.entry_point: {script.name} calls parse_args() and never declares --model_dir, which SageMaker passes "
        'to every script: it would stop with "unrecognized arguments"; add parser.add_argument("--model_dir") '
        "or use parse_known_args()"
    )


TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos", "tensorflow-intel")


def tensorflow_here() -> str | None:
    """The installed TensorFlow's version, from its package metadata (no TensorFlow import), or None."""
    return next((v for v in map(installed_version, TF_DISTRIBUTIONS) if v), None)


def installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def tensorflow_mismatch(spec: JobSpec, here: str | None) -> str | None:
    """A line when this machine's TensorFlow (`here`, which local worker processes train with) and the job's
    stock image differ in minor version: "what trains locally trains unchanged on SageMaker" holds only for the
    same TensorFlow."""
    if here is None or spec.image.kind != "framework":
        return None
    local, image = (".".join(v.split(".")[:2]) for v in (here, spec.image.version))
    if local == image:
        return None
    default = "" if spec.image.framework_version else " (the default)"
    return (
        f"image.framework_version: this machine trains with TensorFlow {here}, the job's image on SageMaker runs "
        f"{image}{default}; what trains here may not train the same there: pip install 'tensorflow-cpu=={image}.*' "
        f'here, or set image.framework_version: "{local}" where AWS publishes that image'
    )


_POLICY = re.compile(r"AutoShardPolicy\.(AUTO|FILE|DATA|OFF|HINT)\b")


def shard_policy_warnings(spec: JobSpec) -> list[str]:
    """Where the entry point's tf.data auto-shard policy contradicts a channel's distribution, as far as its text
    tells: FILE, DATA or AUTO on a sharded channel drops examples (each host has only its share already); OFF on
    replicated data under several workers has every worker train on every example."""
    script = spec.code.source_dir / spec.code.entry_point
    try:
        text = script.read_text(errors="replace")
    except OSError:
        return []
    policies = set(_POLICY.findall(text))
    if not policies:
        return []
    sharded = [name for name, channel in spec.data.items() if channel.distribution == "sharded"]
    out = []
    if sharded and policies - {"OFF"}:
        named = ", ".join(f"AutoShardPolicy.{p}" for p in sorted(policies - {"OFF"}))
        out += [
            f"data.{name}.distribution: sharded, but {spec.code.entry_point} sets {named}: each host has only its "
            "share of the files, so sharding again drops examples; use AutoShardPolicy.OFF for this channel"
            for name in sharded
        ]
    multi = spec.resources.instance_count > 1 and spec.distribution.strategy.value == "multi_worker_mirrored"
    if multi and not sharded and policies == {"OFF"}:
        out.append(
            f"code.entry_point: {spec.code.entry_point} sets AutoShardPolicy.OFF but no channel is sharded: every "
            "worker reads every example each epoch; use DATA (or FILE) for replicated data, or distribution: sharded"
        )
    return out

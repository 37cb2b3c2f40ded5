"""The job spec as a user meets it: a YAML file, and what cloudtrain says about it.

Each bad spec gets one line naming the file (as the user gave it), the line and the field.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Protocol

import pytest
import yaml

from cloudtrain.errors import SpecError
from cloudtrain.spec.load import load_spec
from cloudtrain.spec.models import JobSpec, json_schema, spec_digest
from cloudtrain.spec.source import MAX_SPEC_BYTES

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """\
name: demo
code:
  source_dir: code
  entry_point: train.py
"""


class Write(Protocol):
    def __call__(self, text: str | bytes, name: str = "job.yaml") -> str: ...


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Write:
    """A project folder as the current directory (code/, data/train/), and a writer of spec files in it."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print('training')\n")
    (tmp_path / "code" / "requirements.txt").write_text("")
    (tmp_path / "data" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    def _write(text: str | bytes, name: str = "job.yaml") -> str:
        data = text if isinstance(text, bytes) else textwrap.dedent(text).encode()
        Path(name).write_bytes(data)
        return name

    return _write


def error_of(path: str, overrides: tuple[str, ...] = ()) -> SpecError:
    """The SpecError loading `path` raises; it must be one line, with no pydantic chatter."""
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert "pydantic" not in message and "Input should" not in message
    return info.value


def assert_error(e: SpecError, file: str, line: int | None, field: str | None, message: str) -> None:
    """`e` reads `file:line: field: message...` (without the parts that are None)."""
    assert (e.file, e.line, e.field) == (file, line, field), str(e)
    prefix = ": ".join(part for part in (f"{file}:{line}" if line else file, field) if part)
    assert str(e).startswith(f"{prefix}: ") and message in e.message, str(e)


# ---------------------------------------------------------------------------------------------- good specs


def test_the_example_spec_loads(tmp_path: Path) -> None:
    """job_specs/digits.yaml, the README's demo, in a copy of the repository's layout (data made up)."""
    specs = tmp_path / "job_specs"
    (specs / "digits").mkdir(parents=True)
    shutil.copy(REPO / "job_specs" / "digits.yaml", specs / "digits.yaml")
    for name in ("train.py", "requirements.txt"):  # the repository's own when they exist
        source = REPO / "job_specs" / "digits" / name
        (specs / "digits" / name).write_text(source.read_text() if source.is_file() else "")
    for channel in ("train", "eval"):
        (tmp_path / "data" / "digits" / channel).mkdir(parents=True)

    spec = load_spec(specs / "digits.yaml")

    assert spec.name == "digits-mwms"
    assert spec.backend is None
    assert spec.code.source_dir == specs / "digits"
    assert (spec.code.entry_point, spec.code.requirements) == ("train.py", "requirements.txt")
    assert spec.image.kind == "framework" and spec.image.version == "2.19"
    assert (spec.resources.instance_type, spec.resources.instance_count) == ("ml.g5.xlarge", 2)
    assert (spec.resources.volume_size_gb, spec.resources.max_runtime) == (30, 3600)
    assert spec.distribution.strategy.value == "multi_worker_mirrored"
    assert {k: c.uri for k, c in spec.data.items()} == {
        "train": str(tmp_path / "data" / "digits" / "train"),
        "eval": str(tmp_path / "data" / "digits" / "eval"),
    }
    assert spec.hyperparameters == {"epochs": 12, "batch_size": 64, "learning_rate": 0.002}
    assert spec.environment == {"PYTHONHASHSEED": "0"}
    assert [m.name for m in spec.metrics] == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert spec.tags == {"project": "cloudtrain-demo"}


def test_the_example_metrics_read_the_training_log() -> None:
    """Each regex picks its own number: `loss` is not fooled by `val_loss`."""
    spec = yaml.safe_load((REPO / "job_specs" / "digits.yaml").read_text())
    line = "epoch=3 loss=0.1234 accuracy=0.9500 val_loss=0.2 val_accuracy=0.93"
    found = {m["name"]: re.search(m["regex"], line).group(1) for m in spec["metrics"]}  # type: ignore[union-attr]
    assert found == {"loss": "0.1234", "accuracy": "0.9500", "val_loss": "0.2", "val_accuracy": "0.93"}


def test_a_minimal_spec_gets_the_defaults(write: Write) -> None:
    spec = load_spec(write(MINIMAL))
    assert spec.backend is None
    assert spec.image.kind == "framework" and spec.image.version == "2.19"
    assert spec.resources.instance_count == 1 and spec.resources.max_runtime == 86400
    assert spec.distribution.strategy.value == "multi_worker_mirrored"
    assert spec.data == {} and spec.metrics == []


def test_paths_are_relative_to_the_spec_file_not_the_working_directory(write: Write, tmp_path: Path) -> None:
    write(MINIMAL + "data:\n  train: data/train\n  remote: s3://bucket/prefix\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    spec = load_spec("../job.yaml")
    assert spec.code.source_dir == tmp_path / "code"
    assert {k: c.uri for k, c in spec.data.items()} == {
        "train": str(tmp_path / "data" / "train"),
        "remote": "s3://bucket/prefix",
    }


def test_anchors_and_merge_keys_work(write: Write) -> None:
    text = MINIMAL + "tags:\n  <<: {team: ml, owner: ana}\n  owner: bo\nenvironment:\n  A: &v 'x'\n  B: *v\n"
    spec = load_spec(write(text))
    assert spec.tags == {"team": "ml", "owner": "bo"}  # a key written in the mapping wins over a merged one
    assert spec.environment == {"A": "x", "B": "x"}


def test_keys_are_the_text_written(write: Write) -> None:
    """YAML 1.1 reads `NO` as false; as a key in a spec it is the environment variable NO."""
    spec = load_spec(write(MINIMAL + "environment:\n  NO: 'x'\n  ON: 'y'\n"))
    assert spec.environment == {"NO": "x", "ON": "y"}


# ----------------------------------------------------------------------------------------- YAML syntax


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        pytest.param(
            "name: demo\nresources:\n\tinstance_count: 2\n",
            3,
            "resources.instance_count",
            "a tab character; YAML indents with spaces only",
            id="tab",
        ),
        pytest.param(
            "name: demo\ncode\n  source_dir: code\n", 2, "code", "invalid YAML: could not find expected ':'", id="colon"
        ),
        pytest.param(
            "name: demo\ntags:\n  team: 'ml\n  owner: ana\n",
            3,
            "tags.team",
            "invalid YAML: found unexpected end of stream",
            id="unclosed-quote",
        ),
        pytest.param(
            "name: demo: x\n", 1, "name", "invalid YAML: mapping values are not allowed in this context", id="colon2"
        ),
        pytest.param(
            "name: demo\nmetrics:\n  - name: loss\n    regex: 'a\n",
            4,
            "metrics.0.regex",
            "invalid YAML",
            id="in-a-list",
        ),
    ],
)
def test_yaml_syntax_errors(write: Write, text: str, line: int, field: str, message: str) -> None:
    assert_error(error_of(write(text)), "job.yaml", line, field, message)


def test_a_second_document_is_refused(write: Write) -> None:
    e = error_of(write(MINIMAL + "---\nname: other\n"))
    assert_error(e, "job.yaml", 5, None, "a spec is one YAML document")


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['true']", "!custom x", "!!set {a, b}"])
def test_tags_that_construct_objects_are_refused(write: Write, tag: str) -> None:
    e = error_of(write(MINIMAL + f"tags:\n  a: {tag}\n"))
    assert_error(e, "job.yaml", 6, "tags.a", "is not supported")


def test_deep_nesting_is_refused(write: Write) -> None:
    e = error_of(write(MINIMAL + "tags: " + "[" * 60 + "]" * 60 + "\n"))
    assert_error(e, "job.yaml", 5, "tags" + ".0" * 49, "nested more than 50 levels deep")


def test_nesting_past_libyamls_own_limit_reads_the_same(write: Write) -> None:
    """libyaml (0.2.6+) scans far ahead and gives up at 1000 levels, before the loader sees level 51."""
    e = error_of(write(MINIMAL + "tags: " + "[" * 100_000 + "]" * 100_000 + "\n"))
    assert (e.file, e.line) == ("job.yaml", 5) and e.field is not None and e.field.startswith("tags"), str(e)
    assert str(e).endswith("nested more than 50 levels deep"), str(e)


# ------------------------------------------------------------------------------------------ duplicates


@pytest.mark.parametrize(
    ("text", "line", "field", "first"),
    [
        pytest.param(MINIMAL + "name: again\n", 5, "name", 1, id="top-level"),
        pytest.param(
            MINIMAL + "resources:\n  instance_count: 2\n  volume_size_gb: 50\n  instance_count: 4\n",
            8,
            "resources.instance_count",
            6,
            id="nested",
        ),
        pytest.param(
            MINIMAL + "metrics:\n  - name: loss\n    regex: 'loss=(\\S+)'\n    name: acc\n",
            8,
            "metrics.0.name",
            6,
            id="in-a-list-item",
        ),
        pytest.param(MINIMAL + "tags: {a: x, b: y, a: z}\n", 5, "tags.a", 5, id="flow"),
        pytest.param(MINIMAL + "tags:\n  <<: {a: x}\n  <<: {b: y}\n", 7, "tags.<<", 6, id="merge"),
    ],
)
def test_duplicate_keys_at_any_depth(write: Write, text: str, line: int, field: str, first: int) -> None:
    e = error_of(write(text))
    assert_error(e, "job.yaml", line, field, f"duplicate key (first at line {first})")


# -------------------------------------------------------------------------------------- unknown fields


@pytest.mark.parametrize(
    ("extra", "line", "field", "message"),
    [
        pytest.param(
            "resources:\n  instance_cuont: 2\n",
            6,
            "resources.instance_cuont",
            "unknown field (did you mean 'instance_count'?)",
            id="misspelled",
        ),
        pytest.param(
            "hyperparamters:\n  epochs: 3\n", 5, "hyperparamters", "did you mean 'hyperparameters'?", id="top-level"
        ),
        pytest.param(
            "instance_count: 2\n",
            5,
            "instance_count",
            "unknown field here (did you mean 'resources.instance_count'?)",
            id="wrong-level",
        ),
        pytest.param(
            "colour: blue\n", 5, "colour", "unknown field (expected one of: name, backend, code,", id="no-match"
        ),
        pytest.param(
            "image:\n  build:\n    dockerfile: code/train.py\n    buildargs: {}\n",
            8,
            "image.build.buildargs",
            "did you mean 'build_args'?",
            id="deep",
        ),
    ],
)
def test_unknown_fields_name_the_closest_valid_one(
    write: Write, extra: str, line: int, field: str, message: str
) -> None:
    assert_error(error_of(write(MINIMAL + extra)), "job.yaml", line, field, message)


# ----------------------------------------------------------------------------- wrong types and values


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("resources:\n  instance_count: 0\n", "resources.instance_count", "must be >= 1 (got 0)"),
        ("resources:\n  instance_count: 101\n", "resources.instance_count", "must be <= 100 (got 101)"),
        ("resources:\n  instance_count: two\n", "resources.instance_count", "expected a whole number (got 'two')"),
        ("resources:\n  instance_count: 1.5\n", "resources.instance_count", "expected a whole number (got 1.5)"),
        ("resources:\n  instance_type: g5.xlarge\n", "resources.instance_type", "a SageMaker instance type such as"),
        ("image:\n  framework_version: 2.10\n", "image.framework_version", 'got 2.10; put it in quotes: "2.10"'),
        ("backend: cloud\n", "backend", "must be 'local' or 'sagemaker' (got 'cloud')"),
        ("backend: locale\n", "backend", "(got 'locale'); did you mean 'local'?"),
        ("distribution:\n  strategy: multi_worker\n", "distribution.strategy", "did you mean 'multi_worker_mirrored'?"),
        ("hyperparameters:\n  layers: [1, 2]\n", "hyperparameters.layers", "expected a string, a number or true/false"),
        ("hyperparameters:\n  dropout:\n", "hyperparameters.dropout", "(got nothing)"),
        ("environment:\n  1BAD: 'x'\n", "environment.1BAD", "the name '1BAD' is not allowed: use letters, digits"),
        ("environment:\n  DEBUG: yes\n", "environment.DEBUG", 'expected a string (got yes; put it in quotes: "yes")'),
        ("tags: [a, b]\n", "tags", "expected a mapping (got a list)"),
        ("resources: 4\n", "resources", "expected a mapping of fields (got 4)"),
        ("aws:\n  region: Europe\n", "aws.region", "must be a region such as us-east-1 (got 'Europe')"),
        ("aws:\n  vpc:\n    security_group_ids: [sg-1]\n    subnets: []\n", "aws.vpc.subnets", "needs at least 1 item"),
        ("metrics:\n  - name: loss\n    regex: 'loss=\\S+'\n", "metrics.0.regex", "needs one capture group"),
        ("metrics:\n  - name: loss\n    regex: 'loss=(\\S+'\n", "metrics.0.regex", "not a valid regular expression"),
    ],
)
def test_wrong_types_and_values(write: Write, extra: str, field: str, message: str) -> None:
    e = error_of(write(MINIMAL + extra))
    assert_error(e, "job.yaml", 4 + extra.count("\n"), field, message)


def test_a_long_name(write: Write) -> None:
    e = error_of(write(MINIMAL.replace("name: demo", "name: " + "a" * 60)))
    assert_error(e, "job.yaml", 1, "name", "must be at most 50 characters (got 60)")


LONG_ESCAPED = '"' + "\\U00018cd6\\x1f" * 400 + '"'  # 800 characters, each 4-10 once escaped in a message


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (f"resources:\n  max_runtime: {LONG_ESCAPED}\n", "resources.max_runtime"),
        (f"resources:\n  max_runtime: [{LONG_ESCAPED}, {{a: {LONG_ESCAPED}}}]\n", "resources.max_runtime"),
        (f"data:\n  train: {LONG_ESCAPED}\n", "data.train"),
        (f"data:\n  train: s3://{LONG_ESCAPED[1:]}\n", "data.train"),
        (f"backend: {LONG_ESCAPED}\n", "backend"),
        (f"environment:\n  {LONG_ESCAPED}: x\n", None),
    ],
    ids=["duration", "duration-list", "data-folder", "data-s3", "literal", "environment-name"],
)
def test_a_long_value_is_cut_in_the_message(write: Write, extra: str, field: str | None) -> None:
    e = error_of(write(MINIMAL + extra))
    assert len(e.message) < 200, e.message
    assert field is None or e.field == field, str(e)


def test_a_name_with_underscores(write: Write) -> None:
    e = error_of(write(MINIMAL.replace("name: demo", "name: my_job")))
    assert_error(e, "job.yaml", 1, "name", "letters, digits and hyphens")


def test_the_first_error_in_the_file_is_the_one_reported(write: Write) -> None:
    text = "name: demo\ncode:\n  source_dir: code\n  entry_point: train.py\ntags:\n  a: [1]\nbackend: cloud\n"
    assert_error(error_of(write(text.replace("tags:\n  a: [1]\n", ""))), "job.yaml", 5, "backend", "must be")
    assert error_of(write(text)).line == 6


# ------------------------------------------------------------------------------------ missing things


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        pytest.param(MINIMAL.replace("name: demo\n", ""), 1, "name", "is required", id="name"),
        pytest.param(MINIMAL.replace("  entry_point: train.py\n", ""), 2, "code.entry_point", "is required", id="ep"),
        pytest.param(
            MINIMAL.replace("train.py", "trian.py"),
            4,
            "code.entry_point",
            "'trian.py' not found in code/ (did you mean 'train.py'?)",
            id="entry-point-file",
        ),
        pytest.param(
            MINIMAL + "  requirements: requirement.txt\n",
            5,
            "code.requirements",
            "'requirement.txt' not found in code/ (did you mean 'requirements.txt'?)",
            id="requirements-file",
        ),
        pytest.param(
            MINIMAL.replace("entry_point: train.py", "entry_point: ../job.yaml"),
            4,
            "code.entry_point",
            "'../job.yaml' is outside source_dir code/",
            id="entry-point-outside",
        ),
        pytest.param(
            MINIMAL.replace("source_dir: code", "source_dir: src"),
            3,
            "code.source_dir",
            "'src' does not exist",
            id="source-dir",
        ),
        pytest.param(
            MINIMAL.replace("source_dir: code", "source_dir: code/train.py"),
            3,
            "code.source_dir",
            "'code/train.py' is not a folder",
            id="source-dir-file",
        ),
        pytest.param(
            MINIMAL + "data:\n  train: data/trian\n", 6, "data.train", "'data/trian' does not exist", id="data"
        ),
        pytest.param(MINIMAL + "data:\n  train: ''\n", 6, "data.train", "is empty", id="data-empty"),
    ],
)
def test_missing_fields_files_and_folders(write: Write, text: str, line: int, field: str, message: str) -> None:
    assert_error(error_of(write(text)), "job.yaml", line, field, message)


# ---------------------------------------------------------------------------------------------- S3 URIs


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("data:\n  train: s3:/bucket\n", "data.train", "'s3:/bucket' is not an S3 URI of the form s3://bucket/prefix"),
        ("data:\n  train: s3://UPPER/x\n", "data.train", "invalid bucket name 'UPPER'"),
        ("data:\n  train: https://example.com/x\n", "data.train", "only s3:// URIs and local folders"),
        ("checkpoints:\n  s3_uri: s3://UPPER/x\n", "checkpoints.s3_uri", "invalid bucket name 'UPPER'"),
        ("output:\n  s3_uri: bucket/prefix\n", "output.s3_uri", "is not an S3 URI"),
        ("output:\n  s3_uri: 5\n", "output.s3_uri", "expected a string (got 5"),
    ],
)
def test_malformed_s3_uris(write: Write, extra: str, field: str, message: str) -> None:
    assert_error(error_of(write(MINIMAL + extra)), "job.yaml", 4 + extra.count("\n"), field, message)


# ----------------------------------------------------------------------------------- empty, not a mapping


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n  # and another\n", "---\n", "~\n"])
def test_an_empty_spec(write: Write, text: str) -> None:
    assert_error(error_of(write(text)), "job.yaml", 1, None, "the spec is empty")


@pytest.mark.parametrize(("text", "got"), [("- name: demo\n", "a list"), ("\n\njust text\n", "a string")])
def test_the_top_level_must_be_a_mapping(write: Write, text: str, got: str) -> None:
    line = 3 if text.startswith("\n") else 1
    assert_error(
        error_of(write(text)), "job.yaml", line, None, f"the top level must be a mapping of fields (got {got})"
    )


# ---------------------------------------------------------------------------------------- alias bombs


def test_a_billion_laughs_fails_fast(write: Write) -> None:
    """Nine aliases nine levels deep: 387 million values if expanded. Refused while counting, using no memory."""
    lines = ["name: demo", 'lol0: &lol0 ["lol"]']
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, 10)]
    e = error_of(write("\n".join(lines) + "\n"))
    # lol4 is 9**4 = 6561 values; its sixth alias of lol3 passes 10000 (counting what came before).
    assert_error(e, "job.yaml", 6, "lol4.5", "aliases expand the spec to more than 10000 values")


def test_too_many_aliases(write: Write) -> None:
    text = MINIMAL + "environment:\n  A: &a 'x'\n" + "".join(f"  V{i}: *a\n" for i in range(150))
    assert_error(error_of(write(text)), "job.yaml", 107, "environment.V100", "more than 100 aliases")


def test_a_recursive_alias(write: Write) -> None:
    e = error_of(write(MINIMAL + "tags: &t\n  a: *t\n"))
    assert_error(e, "job.yaml", 6, "tags.a", "alias *t refers to a mapping or list that contains it")


def test_an_undefined_alias(write: Write) -> None:
    assert_error(error_of(write(MINIMAL + "tags: *nope\n")), "job.yaml", 5, "tags", "alias *nope is not defined")


def test_an_error_under_an_alias_points_at_the_anchored_text(write: Write) -> None:
    e = error_of(write(MINIMAL + "environment:\n  A: &bad 7\ntags:\n  b: *bad\n"))
    assert_error(e, "job.yaml", 6, "environment.A", 'expected a string (got 7; put it in quotes: "7")')
    e = error_of(write(MINIMAL + "tags: {a: b}\nresources:\n  <<: {instance_count: 0}\n  volume_size_gb: 10\n"))
    assert_error(e, "job.yaml", 7, "resources.instance_count", "must be >= 1 (got 0)")


def test_a_field_at_the_wrong_level(write: Write) -> None:
    e = error_of(write(MINIMAL + "aws:\n  instance_count: 2\n"))
    assert_error(
        e, "job.yaml", 6, "aws.instance_count", "unknown field here (did you mean 'resources.instance_count'?)"
    )


# -------------------------------------------------------------------------------------- the file itself


def test_a_10_mb_file_is_refused_before_it_is_read(write: Write) -> None:
    text = (MINIMAL + "tags:\n" + "".join(f"  key{i}: value\n" for i in range(500_000))).encode()
    assert len(text) < 10 * 2**20
    path = write(text + b"#" * (10 * 2**20 - len(text)))
    assert str(error_of(path)) == "job.yaml: spec file is 10.0 MiB; the limit is 1 MiB"


def test_just_over_the_limit(write: Write) -> None:
    path = write(b"#" * (MAX_SPEC_BYTES + 1))
    assert_error(error_of(path), "job.yaml", None, None, "spec file is 1048577 bytes; the limit is 1 MiB")


def test_bytes_that_are_not_utf8(write: Write) -> None:
    path = write(MINIMAL.encode() + b"tags:\n  owner: Jos\xe9\n")
    assert_error(error_of(path), "job.yaml", 6, None, "not UTF-8 text: byte 0xe9 at column 13")


def test_a_control_character(write: Write) -> None:
    path = write(MINIMAL + "tags:\n  owner: a\x00b\n")
    assert_error(error_of(path), "job.yaml", 6, None, "control character U+0000 at column 11")


def test_a_utf8_byte_order_mark_is_fine(write: Write) -> None:
    assert load_spec(write(b"\xef\xbb\xbf" + MINIMAL.encode())).name == "demo"


def test_no_such_file(write: Write) -> None:
    assert str(error_of("nope.yaml")) == "nope.yaml: no such file"


def test_a_folder(write: Write) -> None:
    assert str(error_of("code")) == "code: is a folder, not a spec file"


def test_a_fifo_does_not_hang(write: Write) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo("pipe.yaml")
    assert str(error_of("pipe.yaml")) == "pipe.yaml: is not a regular file"


def test_an_unreadable_file(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(MINIMAL)

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)  # chmod 000 would not stop root
    assert str(error_of(path)) == "job.yaml: cannot read the file: permission denied"


def test_the_file_is_shown_as_given(write: Write, tmp_path: Path) -> None:
    write(MINIMAL + "resources:\n  instance_count: 0\n", "bad.yaml")
    assert str(error_of("bad.yaml")) == "bad.yaml:6: resources.instance_count: must be >= 1 (got 0)"
    absolute = str(tmp_path / "bad.yaml")
    assert str(error_of(absolute)) == f"{absolute}:6: resources.instance_count: must be >= 1 (got 0)"


def test_errors_carry_no_traceback_chain(write: Write) -> None:
    e = error_of(write(MINIMAL + "resources:\n  instance_count: 0\n"))
    assert e.__cause__ is None and e.__suppress_context__


# ---------------------------------------------------------------------------------------------- --set


def test_set_overrides_fields(write: Write) -> None:
    path = write(MINIMAL + "hyperparameters:\n  epochs: 12\n  lr: 0.1\n")
    spec = load_spec(
        path,
        [
            "hyperparameters.epochs=3",
            "resources.instance_count=4",
            "data.train=s3://bkt/p",
            "resources.max_runtime=2h",
            "image.framework_version=2.10",
            "environment.SEED=42",
            "resources.spot={enabled: true, max_wait: 3d}",
        ],
    )
    assert spec.hyperparameters == {"epochs": 3, "lr": 0.1}
    assert spec.resources.instance_count == 4
    assert {k: c.uri for k, c in spec.data.items()} == {"train": "s3://bkt/p"}
    assert spec.resources.max_runtime == 7200
    assert spec.image.framework_version == "2.10"  # text fields take the text given, not YAML's 2.1
    assert spec.environment == {"SEED": "42"}
    assert spec.resources.spot.enabled and spec.resources.spot.max_wait == 3 * 86400


def test_set_into_a_list_item_and_through_an_alias(write: Write) -> None:
    text = MINIMAL + "metrics:\n  - {name: loss, regex: 'loss=(\\S+)'}\ntags: &t {a: x}\nenvironment: *t\n"
    spec = load_spec(write(text), ["metrics.0.name=train_loss", "tags.a=y"])
    assert spec.metrics[0].name == "train_loss"
    assert spec.tags == {"a": "y"} and spec.environment == {"a": "x"}  # the alias keeps the written value


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ("resources.instance_count=0", "resources.instance_count", "must be >= 1 (got 0)"),
        ("resources.instance_cuont=4", "resources.instance_cuont", "unknown field (did you mean 'instance_count'?)"),
        ("hyperparameters.epochs=[1", "hyperparameters.epochs", "cannot read the value '[1'"),
        ("epochs", "epochs", "expected dotted.path=value (got 'epochs')"),
        ("=3", None, "expected dotted.path=value"),
        ("resources..instance_count=3", "resources..instance_count", "expected dotted.path=value"),
        ("name.first=x", "name", "is a string, so it has no 'first'"),
        ("metrics.5.name=x", "metrics.5", "no such item (metrics has 0)"),
        ("data.train=s3:/bucket", "data.train", "is not an S3 URI"),
        ("resources.max_runtime=0", "resources.max_runtime", "must be > 0 (got 0)"),
    ],
)
def test_a_bad_override_names_set(write: Write, override: str, field: str | None, message: str) -> None:
    path = write(MINIMAL + "metrics: []\n")
    assert_error(error_of(path, (override,)), "--set", None, field, message)


def test_a_problem_an_override_causes_is_blamed_on_it(write: Write) -> None:
    """Spot enabled with --set: the file has no resources section, so the missing max_wait is --set's doing."""
    e = error_of(write(MINIMAL), ("resources.spot.enabled=true",))
    assert_error(e, "--set", None, "resources.spot.max_wait", "is required when spot is enabled")
    e = error_of(write(MINIMAL + "resources:\n  spot: {max_wait: 1h}\n"), ("resources.spot.enabled=true",))
    assert_error(e, "job.yaml", 6, "resources.spot.max_wait", "must be at least max_runtime (1h < 1d)")


# ------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("written", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("3600", 3600), ("'45'", 45)]
)
def test_durations(write: Write, written: str, seconds: int) -> None:
    assert load_spec(write(MINIMAL + f"resources:\n  max_runtime: {written}\n")).resources.max_runtime == seconds


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("0", "must be > 0 (got 0)"),
        ("0s", "must be > 0 (got 0s)"),
        ("'0'", "must be > 0 (got 0)"),
        ("-5", "must be > 0 (got -5)"),
        ("-5m", "'-5m' is not a duration such as 90s, 30m, 2h, 1d or seconds"),
        ("2 hours", "'2 hours' is not a duration"),
        ("1.5h", "'1.5h' is not a duration"),
        ("true", "expected a duration"),
        ("1.5", "1.5 is not a duration"),
        ("[1h, {a: 2h}]", "expected a duration such as 90s, 30m, 2h, 1d or seconds (got a list)"),
        ("30d", "must be <= 28d (got 30d)"),
        ("'30" + " " * 500 + "d'", "must be <= 28d (got 30 d)"),
    ],
)
def test_bad_durations(write: Write, written: str, message: str) -> None:
    e = error_of(write(MINIMAL + f"resources:\n  max_runtime: {written}\n"))
    assert_error(e, "job.yaml", 6, "resources.max_runtime", message)


def test_keep_alive_may_be_zero_but_not_negative(write: Write) -> None:
    assert load_spec(write(MINIMAL + "resources:\n  keep_alive: 0\n")).resources.keep_alive == 0
    e = error_of(write(MINIMAL + "resources:\n  keep_alive: -1\n"))
    assert_error(e, "job.yaml", 6, "resources.keep_alive", "must be >= 0 (got -1)")


def test_durations_are_written_back_in_their_short_form(write: Write) -> None:
    spec = load_spec(write(MINIMAL + "resources:\n  max_runtime: 7200\n"))
    assert spec.model_dump(mode="json")["resources"]["max_runtime"] == "2h"


# -------------------------------------------------------------------------------------------------- spot


def test_spot_max_wait_is_at_least_max_runtime(write: Write) -> None:
    ok = "resources:\n  max_runtime: 2h\n  spot:\n    enabled: true\n    max_wait: 2h\n"
    assert load_spec(write(MINIMAL + ok)).resources.spot.max_wait == 7200
    e = error_of(write(MINIMAL + ok.replace("max_wait: 2h", "max_wait: 1h")))
    assert_error(e, "job.yaml", 9, "resources.spot.max_wait", "must be at least max_runtime (1h < 2h)")


def test_spot_needs_max_wait(write: Write) -> None:
    e = error_of(write(MINIMAL + "resources:\n  spot:\n    enabled: true\n"))
    assert_error(e, "job.yaml", 6, "resources.spot.max_wait", "is required when spot is enabled")


# ------------------------------------------------------------------------------------------------- image


def test_image_takes_one_of_framework_version_uri_build(write: Write) -> None:
    e = error_of(write(MINIMAL + "image:\n  framework_version: '2.19'\n  uri: my/image:1\n"))
    assert_error(
        e, "job.yaml", 5, "image", "give only one of framework_version, uri, build (got framework_version and uri)"
    )
    assert load_spec(write(MINIMAL + "image:\n  uri: my/image:1\n")).image.kind == "uri"
    assert load_spec(write(MINIMAL + "image: {}\n")).image.version == "2.19"


def test_py_version_only_goes_with_framework_version(write: Write) -> None:
    e = error_of(write(MINIMAL + "image:\n  uri: my/image:1\n  py_version: py310\n"))
    assert_error(e, "job.yaml", 7, "image.py_version", "only applies to AWS's stock images, not to uri")


def test_image_build_paths(write: Write, tmp_path: Path) -> None:
    Path("Dockerfile").write_text("FROM scratch\n")
    spec = load_spec(write(MINIMAL + "image:\n  build:\n    dockerfile: Dockerfile\n"))
    assert spec.image.kind == "build" and spec.image.build is not None
    assert spec.image.build.dockerfile == tmp_path / "Dockerfile" and spec.image.build.context == tmp_path
    e = error_of(write(MINIMAL + "image:\n  build:\n    dockerfile: Dockerfil\n"))
    assert_error(e, "job.yaml", 7, "image.build.dockerfile", "'Dockerfil' does not exist")


# ---------------------------------------------------------------------------------- schema and digest


def test_json_schema_checks_the_example() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((REPO / "job_specs" / "digits.yaml").read_text())
    assert list(validator.iter_errors(example)) == []
    for bad in ({"instance_count": 0}, {"max_runtime": "2 hours"}, {"instance_cuont": 2}, {"max_runtime": 0}):
        assert list(validator.iter_errors({**example, "resources": bad})), bad
    for good in ({"max_runtime": "2h"}, {"max_runtime": 60}, {"spot": {"enabled": True, "max_wait": "1d"}}):
        assert list(validator.iter_errors({**example, "resources": good})) == [], good


def test_json_schema_is_plain_json() -> None:
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["required"]) == {"name", "code"}


def test_spec_digest_is_stable_and_tracks_content(write: Write) -> None:
    path = write(MINIMAL + "hyperparameters:\n  epochs: 3\n  lr: 0.1\n")
    digest = spec_digest(load_spec(path))
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert spec_digest(load_spec(path)) == digest
    reordered = write("hyperparameters: {lr: 0.1, epochs: 3}\n" + MINIMAL, "reordered.yaml")
    assert spec_digest(load_spec(reordered)) == digest  # order and formatting do not matter
    assert spec_digest(load_spec(path, ["hyperparameters.epochs=4"])) != digest


def test_models_alone_validate_without_a_spec_file() -> None:
    """Without a base folder (no file), paths are kept as written: for schema tools and other modules' tests."""
    spec = JobSpec.model_validate({"name": "x", "code": {"source_dir": "code", "entry_point": "train.py"}})
    assert spec.code.source_dir == Path("code")


def test_loading_a_spec_imports_nothing_heavy() -> None:
    """Every command reads a spec first; it must not pay for TensorFlow or boto3 to do so."""
    heavy = "('tensorflow', 'boto3', 'botocore')"
    code = f"import sys, cloudtrain.spec.models; print(sorted(m for m in {heavy} if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"

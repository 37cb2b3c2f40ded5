"""Fuzzing the spec loader: whatever a spec file holds, `load_spec` returns a JobSpec or raises one SpecError.

The inputs: random YAML documents (spec-shaped and not), random mutations of the example specs (lines
deleted, duplicated, moved or re-indented, values retyped, anchors and aliases, random bytes, deep
nesting, huge scalars, truncation), random bytes, and random `--set` overrides. The property: a JobSpec, or
exactly one SpecError whose message is one line; never another exception. Time is bounded by hypothesis'
deadline, memory by running a batch of hostile and mutated files in a subprocess under RLIMIT_AS, and the
command line is checked too (`cloudtrain validate`: exit 0 or 2, one line, no traceback) on a few files.

`pytest` runs a moderate number of examples; `pytest --slow` many more.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtrain.errors import SpecError
from cloudtrain.spec.load import load_spec
from cloudtrain.spec.models import JobSpec, json_schema
from tests.clirun import REPO, cloudtrain

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the huge scalars, on purpose
EXAMPLES = sorted((REPO / "job_specs").glob("*.yaml"))

# A spec using every section, next to the examples: the mutations reach every model and validator.
FULL = """\
name: full-spec
backend: sagemaker
code: {source_dir: digits, entry_point: train.py, requirements: requirements.txt}
image:
  build: {dockerfile: Dockerfile, context: ., repository: my-repo, build_args: {PY: "3.11"}}
resources:
  instance_type: ml.p3.2xlarge
  instance_count: 4
  volume_size_gb: 100
  max_runtime: 2h
  spot: {enabled: true, max_wait: 3h}
  keep_alive: 0s  # warm pools cannot be used with spot
  max_retry_attempts: 2
distribution: {strategy: multi_worker_mirrored, communication: nccl}
data:
  train: ../data/digits/train
  eval: s3://my-bucket/digits/eval
hyperparameters: &hp {epochs: 3, lr: 0.001, opt: adam, shuffle: true}
environment: {TF_CPP_MIN_LOG_LEVEL: "2", API_KEY: "k"}
checkpoints: {s3_uri: "s3://my-bucket/ckpt", local_path: /opt/ml/checkpoints}
output: {s3_uri: "s3://my-bucket/out"}
metrics:
  - {name: loss, regex: 'loss=([0-9.]+)'}
  - name: acc
    regex: 'acc=([0-9.]+)'
aws:
  region: eu-west-1
  profile: ml
  role_arn: arn:aws:iam::123456789012:role/SageMakerRole
  endpoint_url: http://127.0.0.1:5000
  kms_key_id: alias/ml
  vpc: {subnets: [subnet-1, subnet-2], security_group_ids: [sg-1]}
tags: {team: ml, project: digits}
"""
URI_IMAGE = FULL.replace(
    '  build: {dockerfile: Dockerfile, context: ., repository: my-repo, build_args: {PY: "3.11"}}',
    "  uri: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/train:1",
)
FIELD_NAMES = sorted(
    {word for text in [FULL, *(p.read_text() for p in EXAMPLES)] for word in yaml.safe_load(text) or {}}
    | {"source_dir", "entry_point", "requirements", "framework_version", "py_version", "uri", "build", "spot"}
    | {"instance_type", "instance_count", "max_runtime", "strategy", "s3_uri", "regex", "region", "role_arn"}
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the examples expect (code at specs/digits, data at data/digits/{train,eval})."""
    root = tmp_path_factory.mktemp("fuzz")
    specs = root / "specs"
    shutil.copytree(REPO / "job_specs", specs)
    for channel in ("train", "eval"):
        (root / "data" / "digits" / channel).mkdir(parents=True)
    (specs / "Dockerfile").write_text("FROM scratch\n")
    (specs / "full.yaml").write_text(FULL)
    (specs / "uri.yaml").write_text(URI_IMAGE)
    return root


def sources(workspace: Path) -> list[Path]:
    specs = workspace / "specs"
    return [specs / p.name for p in EXAMPLES] + [specs / "full.yaml", specs / "uri.yaml"]


MESSAGE_MAX = 500  # characters of a message beyond the file's name: a line of a terminal, not a page of it


def check(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec | SpecError:
    """The property: a JobSpec, or one short SpecError of one line (anything else propagates and fails the test).

    The whole line is checked, the field's name included: a key with line breaks or of 900,000 characters
    must be shown escaped and cut, as every other part of the message is.
    """
    try:
        return load_spec(path, overrides)
    except SpecError as e:
        text = str(e)
        assert text.strip(), "an empty message"
        assert len(text.splitlines()) == 1, f"not one line: {text!r}"
        if e.file != "--set":  # an override's error may repeat the whole override: the user's own typing
            assert len(text) <= len(str(path)) + MESSAGE_MAX, f"{len(text)} characters: {text[:300]!r}"
        return e


def load_or_error(path: Path) -> JobSpec | SpecError:
    try:
        return load_spec(path)
    except SpecError as e:
        return e


@pytest.mark.parametrize(
    "key",
    [
        pytest.param('"extra\\nfield"', id="newline"),
        pytest.param('"A\\u2028B"', id="line-separator"),
        pytest.param('"' + "k" * 5000 + '"', id="5000-characters"),
        pytest.param("x" * 900_000, id="900000-characters"),
    ],
)
def test_a_field_is_shown_on_one_short_line(workspace: Path, key: str) -> None:
    text = (workspace / "specs" / "digits.yaml").read_text()
    for where in (f"{key}: 1\n", f"environment: {{{key}: x}}\n"):
        error = load_or_error(write(workspace / "specs" / "fuzzed.yaml", text + where))
        assert isinstance(error, SpecError), error
        assert len(str(error).splitlines()) == 1 and len(str(error)) < 1000, str(error)[:300]


Place = tuple[str | int, ...]


def _schema_paths(schema: dict, node: dict, prefix: Place = ()) -> list[Place]:
    """Every place in the spec's JSON Schema: fields, an entry of each mapping, the first item of each list."""
    paths: list[Place] = []
    for name, child in _resolve(schema, node).get("properties", {}).items():
        here = (*prefix, name)
        paths.append(here)
        for shape in (child := _resolve(schema, child), *map(lambda n: _resolve(schema, n), child.get("anyOf", []))):
            if "properties" in shape:
                paths += _schema_paths(schema, shape, here)
            if shape.get("additionalProperties", False) is not False or "patternProperties" in shape:
                paths += [(*here, "KEY"), (*here, LONG)]
            if "items" in shape:
                paths += [(*here, 0), *_schema_paths(schema, shape["items"], (*here, 0))]
    return list(dict.fromkeys(paths))


def _has(container: dict | list, key: str | int) -> bool:
    return key in container if isinstance(container, dict) else key < len(container)


def _resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref", "")
    return schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else node


LONG = "\U00018cd6\x1f" * 400  # 800 characters, each four to ten once escaped
HOSTILE = [LONG, [LONG, {LONG: LONG}], {LONG: [LONG]}, 10**40, -(10**40), 1e308, True, None, ""]


def test_every_field_with_every_hostile_value_gives_one_short_line(workspace: Path) -> None:
    """The sweep behind the fuzz: each field of the schema, in turn, given each value built to blow up a message."""
    spec = yaml.safe_load(FULL)
    paths = _schema_paths(json_schema(), json_schema())
    assert len(paths) > 40, paths
    for path in paths:
        for value in HOSTILE:
            document = copy.deepcopy(spec)
            parent = document
            for segment, following in itertools.pairwise(path):
                shape = list if isinstance(following, int) else dict
                if not isinstance(parent[segment] if _has(parent, segment) else None, shape):
                    parent[segment] = shape([{}]) if shape is list else {}
                parent = parent[segment]
            parent[path[-1]] = value
            check(write(workspace / "specs" / "fuzzed.yaml", dump(document, flow=False)))


def test_the_unmutated_specs_load(workspace: Path) -> None:
    for path in sources(workspace):
        assert isinstance(check(path), JobSpec), path.name


# --- random documents ------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["2h", "90s", "0", "-1", "1d", "s3://b/k", "s3:/x", "ml.g5.xlarge", "2.19", "~", "NO", "<<"]),
)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=40,
)
SPEC_SHAPED = st.dictionaries(st.sampled_from(FIELD_NAMES), DOCUMENTS, min_size=1, max_size=10)


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


def dump(document: object, flow: bool) -> str:
    return yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, sort_keys=False)


def random_documents(workspace: Path, document: object, flow: bool, base: str) -> None:
    spec = yaml.safe_load((workspace / "specs" / base).read_text())
    if isinstance(document, dict):
        merged = {**spec, **document}  # most fields valid: the fuzzed ones reach the validators
        check(write(workspace / "specs" / "fuzzed.yaml", dump(merged, flow)))
    check(write(workspace / "specs" / "fuzzed.yaml", dump(document, flow)))


FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
# A longer hunt: CLOUDTRAIN_FUZZ_EXAMPLES=100000 pytest --slow -k many tests/test_fuzz_spec.py
FUZZ_MORE = settings(FUZZ, max_examples=int(os.environ.get("CLOUDTRAIN_FUZZ_EXAMPLES", "3000")))
BASES = st.sampled_from(["digits.yaml", "full.yaml", "uri.yaml"])


@FUZZ
@given(document=st.one_of(SPEC_SHAPED, DOCUMENTS), flow=st.booleans(), base=BASES)
def test_random_documents(workspace: Path, document: object, flow: bool, base: str) -> None:
    random_documents(workspace, document, flow, base)


@pytest.mark.slow
@FUZZ_MORE
@given(document=st.one_of(SPEC_SHAPED, DOCUMENTS), flow=st.booleans(), base=BASES)
def test_random_documents_many(workspace: Path, document: object, flow: bool, base: str) -> None:
    random_documents(workspace, document, flow, base)


@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes(workspace: Path, data: bytes) -> None:
    check(write(workspace / "specs" / "fuzzed.yaml", data))


# --- mutations of the example specs ----------------------------------------------------------------------

VALUES = [
    "",
    "~",
    "0",
    "-5",
    "1e400",
    "0x1F",
    "yes",
    "2024-02-30",
    "[]",
    "{}",
    "[1, [2, [3]]]",
    "{a: 1}",
    "'quoted'",
    '"\\u2028\\x85 line breaks"',
    "!!binary aGVsbG8=",
    "!!python/object/apply:os.system [echo pwned]",
    "!custom x",
    "*nowhere",
    "&anchor value",
    "|\n  block\n  text",
    "s3://Bad_Bucket/x",
    "../../../../etc/passwd",
    "/dev/zero",
    "9" * 5000,
    "x" * 100_000,
    "[" * 200 + "]" * 200,
    "{a: " * 60 + "1" + "}" * 60,
]


def _key_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("#")] or [0]


def _split(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key, value


def mutate(text: str, rng: random.Random, steps: int) -> bytes:
    """`steps` random edits of a spec's text, of the kinds people (and attackers) make."""
    lines = text.splitlines()
    for _ in range(steps):
        if not lines:
            lines = [""]
        i = rng.randrange(len(lines))
        k = min(rng.choice(_key_lines(lines)), len(lines) - 1)
        op = rng.randrange(13)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])  # a duplicate key, or a repeated item
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines[i] = " " * rng.choice([1, 2, 3, 4, 8]) + lines[i]
        elif op == 4:
            lines[i] = lines[i].lstrip()
        elif op == 5:  # retype a value
            key, _ = _split(lines[k])
            lines[k] = f"{key}: {rng.choice(VALUES)}"
        elif op == 6:  # an anchor on one value, aliases to it elsewhere
            key, value = _split(lines[k])
            lines[k] = f"{key}: &a {value.strip() or '{}'}"
            j = rng.choice(_key_lines(lines))
            lines[j] = f"{_split(lines[j])[0]}: {rng.choice(['*a', '[*a, *a, *a]', '{<<: *a}', '{b: *a}'])}"
        elif op == 7:  # a billion laughs
            laughs = ["lol0: &l0 [lol]"] + [f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 8)]
            lines[i:i] = laughs
        elif op == 8:  # deep nesting
            depth = rng.choice([10, 49, 50, 51, 500])
            key, _ = _split(lines[k])
            lines[k] = f"{key}: " + rng.choice(["[" * depth + "]" * depth, "{a: " * depth + "1" + "}" * depth])
        elif op == 9:  # a tab, a control character, a stray quote or bracket
            pos = rng.randrange(len(lines[i]) + 1)
            lines[i] = (
                lines[i][:pos]
                + rng.choice(["\t", "\x00", "\x1b", "'", '"', "[", "{", ":", "- ", "? "])
                + lines[i][pos:]
            )
        elif op == 10:
            lines = lines[: rng.randrange(len(lines) + 1)]
        elif op == 11:
            lines.insert(
                i, rng.choice(["---", "...", "%YAML 1.1", "%TAG ! tag:x,2000:", "- item", "? complex", "<<: {}"])
            )
        else:
            lines.insert(i, f"{rng.choice(FIELD_NAMES)}: {rng.choice(VALUES)}")
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:  # random bytes somewhere
        pos = rng.randrange(len(data) + 1)
        data = data[:pos] + rng.randbytes(rng.randrange(1, 8)) + data[pos:]
    return data


def mutated(workspace: Path, source: int, seed: int, steps: int) -> Path:
    base = sources(workspace)[source % len(sources(workspace))]
    return write(workspace / "specs" / "fuzzed.yaml", mutate(base.read_text(), random.Random(seed), steps))


MUTATIONS = {"source": st.integers(0, 10), "seed": st.integers(0, 2**32 - 1), "steps": st.integers(1, 6)}


@settings(FUZZ, max_examples=300)
@given(**MUTATIONS)
def test_mutated_examples(workspace: Path, source: int, seed: int, steps: int) -> None:
    check(mutated(workspace, source, seed, steps))


@pytest.mark.slow
@FUZZ_MORE
@given(**MUTATIONS)
def test_mutated_examples_many(workspace: Path, source: int, seed: int, steps: int) -> None:
    check(mutated(workspace, source, seed, steps))


OVERRIDE = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda path, value: f"{path}={value}",
        st.lists(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8), st.sampled_from(["0", "9", ""])),
                 min_size=1, max_size=4).map(".".join),
        st.one_of(st.sampled_from(VALUES), st.text(max_size=30)),
    ),
)  # fmt: skip


@FUZZ
@given(overrides=st.lists(OVERRIDE, max_size=4), base=BASES)
def test_random_overrides(workspace: Path, overrides: list[str], base: str) -> None:
    check(workspace / "specs" / base, overrides)


@pytest.mark.slow
@FUZZ_MORE
@given(overrides=st.lists(OVERRIDE, max_size=4), base=BASES)
def test_random_overrides_many(workspace: Path, overrides: list[str], base: str) -> None:
    check(workspace / "specs" / base, overrides)


# --- bounded memory and time, in a process of its own ------------------------------------------------------


def hostile() -> dict[str, str]:
    """Documents built to cost time or memory."""
    laughs = "\n".join(["a0: &a0 [lol]"] + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)])
    return {
        "billion-laughs": laughs + "\n",
        "merge-bomb": "base: &b {x: 1}\n" + "".join(f"m{i}: {{<<: [{', '.join(['*b'] * 50)}]}}\n" for i in range(50)),
        "deep-lists": "name: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep-maps": "name: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n",
        "deep-block": "".join(" " * i + f"k{i}:\n" for i in range(2000)),
        "huge-int": "resources: {instance_count: " + "9" * 900_000 + "}\n",
        "huge-float": "hyperparameters: {lr: 1e" + "9" * 5000 + "}\n",
        "huge-string": "name: " + "x" * 1_000_000 + "\n",
        "just-too-big": "#" * (1 << 20) + "\n",
        "many-keys": "hyperparameters:\n" + "".join(f"  k{i}: {i}\n" for i in range(60_000)),
        "many-documents": "---\na: 1\n" * 20_000,
        "recursive-alias": "a: &a [*a]\n",
        "python-tag": "name: !!python/object/apply:os.system ['echo pwned']\n",
        "huge-binary": "name: !!binary " + "QUFB" * 200_000 + "\n",
        "long-key": "x" * 900_000 + ": 1\n",
        "many-anchors": "".join(f"k{i}: &a{i} {i}\n" for i in range(50_000)),
    }


RUNNER = textwrap.dedent(
    """\
    import json, resource, sys
    from cloudtrain.errors import SpecError
    from cloudtrain.spec.load import load_spec
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for path in sys.argv[2:]:
        try:
            load_spec(path)
            print(json.dumps({"path": path, "result": "ok"}), flush=True)
        except SpecError as e:
            print(json.dumps({"path": path, "result": "SpecError", "message": str(e)}), flush=True)
        except BaseException as e:  # MemoryError, RecursionError ...: reported, then the test fails
            print(json.dumps({"path": path, "result": type(e).__name__, "message": str(e)[:300]}), flush=True)
    """
)
MEMORY_LIMIT = 1 << 30  # virtual memory: the interpreter with pydantic and PyYAML takes a few hundred MiB of it


def in_limited_process(paths: list[Path], timeout: float) -> list[dict[str, str]]:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(MEMORY_LIMIT), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in results] == [str(p) for p in paths]
    return results


def batch(workspace: Path, name: str, documents: dict[str, bytes]) -> list[Path]:
    folder = workspace / "specs" / name
    folder.mkdir(exist_ok=True)
    return [write(folder / f"{key}.yaml", data) for key, data in documents.items()]


def assert_bounded(results: list[dict[str, str]]) -> None:
    bad = [r for r in results if r["result"] not in ("ok", "SpecError") or "\n" in r.get("message", "")]
    assert not bad, bad


def test_hostile_documents_fail_fast_in_bounded_memory(workspace: Path) -> None:
    paths = batch(workspace, "hostile", {k: v.encode() for k, v in hostile().items()})
    results = in_limited_process(paths, timeout=120)
    assert_bounded(results)
    assert all(r["result"] == "SpecError" for r in results), [r for r in results if r["result"] != "SpecError"]


@pytest.mark.parametrize("count", [pytest.param(200, id="200"), pytest.param(5000, id="5000", marks=pytest.mark.slow)])
def test_a_batch_of_mutations_in_bounded_memory(workspace: Path, count: int) -> None:
    rng = random.Random(20240601)
    texts = [p.read_text() for p in sources(workspace)]
    documents = {f"m{i}": mutate(rng.choice(texts), rng, rng.randrange(1, 8)) for i in range(count)}
    assert_bounded(in_limited_process(batch(workspace, f"mutations-{count}", documents), timeout=60 + count / 10))


# --- the command line ---------------------------------------------------------------------------------------


def validate_each(workspace: Path, paths: list[Path]) -> None:
    for path in paths:
        result = cloudtrain("validate", str(path), home=workspace / "home", timeout=60)
        assert result.code in (0, 2), (path.read_bytes()[:300], result.err)
        assert "Traceback" not in result.err
        if result.code == 2:
            assert result.out == "" and len(result.err.strip().splitlines()) == 1, result.err
            assert result.err.startswith("error: "), result.err
        else:
            assert len(result.out.strip().splitlines()) == 1, result.out


@pytest.mark.parametrize("count", [pytest.param(6, id="6"), pytest.param(40, id="40", marks=pytest.mark.slow)])
def test_cloudtrain_validate_on_fuzzed_specs(workspace: Path, count: int) -> None:
    """Each a separate `cloudtrain validate FILE`: exit 2 and one line, or exit 0; never a traceback."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    texts = [p.read_text() for p in sources(workspace)]
    hostile_docs = list(hostile().items())
    documents = {f"cli{i}": mutate(rng.choice(texts), rng, rng.randrange(1, 6)) for i in range(count - 2)}
    documents.update({name: text.encode() for name, text in rng.sample(hostile_docs, 2)})
    validate_each(workspace, batch(workspace, f"cli-{seed}", documents))

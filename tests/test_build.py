"""`cloudtrain build` and the training image, through the real code path.

No Docker engine runs here, so a stand-in `docker` executable (written by the `fake_docker` fixture into
tmp_path and put first on PATH) plays the Docker CLI: it records each call's argv, the sha256 of its stdin
(never the stdin itself, so the records hold no secret), its DOCKER_CONFIG, and a copy of every build
context it is given, and answers `info`, `buildx version`, `build`, `login` and `push` as Docker would
(`push` even puts the image's manifest into moto's ECR). ECR and STS are moto's server on loopback
(`aws_endpoint`). The same on a real engine: tests/test_image.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import jsonschema
import pytest
import yaml

import cloudtrain
from cloudtrain.errors import BackendUnavailable, CloudtrainError, UserError
from cloudtrain.image.build import build_image, ensure_image
from cloudtrain.image.context import BUILD_OUT, DEFAULT_PLATFORM, collect_inputs, image_reference, manifest
from cloudtrain.image.ignore import IgnoreRules
from cloudtrain.output_schemas import output_schema
from cloudtrain.spec.load import load_spec
from cloudtrain.spec.models import JobSpec
from cloudtrain.transfer.code import runtime_files
from tests.clirun import cloudtrain as run_cli

if TYPE_CHECKING:
    from tests.sagemaker_control_plane import ControlPlane

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"  # moto's
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
NO_ENGINE = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"

FAKE_DOCKER = r'''#!{python}
"""Stand-in for the Docker CLI in tests/test_build.py: no Docker engine runs on the test machine.

Records each call (argv, sha256 of stdin, DOCKER_CONFIG) as a JSON line in $FAKE_DOCKER_LOG/calls.jsonl,
copies every build context to $FAKE_DOCKER_LOG/contexts/<n>/, and answers as Docker does.
"""
import base64, hashlib, json, os, shutil, sys
from pathlib import Path

log = Path(os.environ["FAKE_DOCKER_LOG"])
args = sys.argv[1:]
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
config = os.environ.get("DOCKER_CONFIG")
record = {{"argv": args, "stdin_sha256": hashlib.sha256(stdin.encode()).hexdigest() if stdin else None,
          "docker_config": config}}
with open(log / "calls.jsonl", "a") as f:
    f.write(json.dumps(record) + "\n")

def fail(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)

if args[:1] == ["info"]:
    if os.environ.get("FAKE_DOCKER_NO_ENGINE"):
        fail("{no_engine}")
    print("28.2.2")
elif args[:2] == ["buildx", "version"]:
    if os.environ.get("FAKE_DOCKER_NO_BUILDX"):
        fail("docker: unknown command: docker buildx")
    print("github.com/docker/buildx " + os.environ.get("FAKE_DOCKER_BUILDX_VERSION", "v0.24.0") + " d0e5e86")
elif args[:1] == ["build"] or args[:2] == ["buildx", "build"]:
    context = Path(args[-1])
    n = len(list((log / "contexts").glob("*"))) if (log / "contexts").exists() else 0
    shutil.copytree(context, log / "contexts" / str(n), symlinks=True)
    tag = args[args.index("-t") + 1]
    if os.environ.get("FAKE_DOCKER_BUILD_FAILS"):
        print("#7 [4/6] RUN python3 -m pip install -r /opt/cloudtrain/requirements.txt")
        print("#7 ERROR: No matching distribution found for tf-keras==9.9")
        fail('ERROR: failed to solve: process "/bin/sh -c pip install" did not complete successfully: exit code: 1')
    for step in ("[1/6] FROM docker.io/tensorflow/tensorflow", "[3/6] COPY .cloudtrain/requirements.txt",
                 "[6/6] COPY docker/train /usr/local/bin/train", "naming to " + tag + " done"):
        print("#1 " + step, flush=True)
elif args[:1] == ["login"]:
    registry, user = args[-1], args[args.index("--username") + 1]
    if "--password-stdin" not in args or not stdin.strip():
        fail("Error: Cannot perform an interactive login from a non TTY device")
    if os.environ.get("FAKE_DOCKER_ECHO_SECRET"):
        print("debug: got " + stdin.strip())  # a misbehaving tool: cloudtrain must redact this
    auth = base64.b64encode(f"{{user}}:{{stdin.strip()}}".encode()).decode()
    Path(config or Path.home() / ".docker").mkdir(parents=True, exist_ok=True)
    (Path(config) / "config.json").write_text(json.dumps({{"auths": {{registry: {{"auth": auth}}}}}}))
    print("WARNING! Your credentials are stored unencrypted in '" + str(Path(config) / "config.json") + "'.")
    print("Login Succeeded")
elif args[:1] == ["push"]:
    image = args[1]
    registry, _, rest = image.partition("/")
    repository, _, tag = rest.rpartition(":")
    saved = Path(config) / "config.json" if config else None
    auths = json.loads(saved.read_text()).get("auths", {{}}) if saved and saved.exists() else {{}}
    if registry not in auths:
        fail("no basic auth credentials")
    print("The push refers to repository [" + registry + "/" + repository + "]")
    print(tag + ": digest: sha256:" + "ab" * 32 + " size: 1234")
    import boto3
    manifest = {{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {{"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                           "digest": "sha256:" + hashlib.sha256(tag.encode()).hexdigest()}}, "layers": []}}
    boto3.client("ecr").put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
else:
    fail("fake docker: unexpected arguments " + " ".join(args))
'''


@dataclass
class FakeDocker:
    bin: Path
    log: Path
    monkeypatch: pytest.MonkeyPatch

    def calls(self) -> list[dict[str, Any]]:
        path = self.log / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def commands(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls()]

    def context(self, n: int = 0) -> Path:
        return self.log / "contexts" / str(n)

    def reset(self) -> None:
        (self.log / "calls.jsonl").unlink(missing_ok=True)
        shutil.rmtree(self.log / "contexts", ignore_errors=True)

    def set(self, name: str, value: str = "1") -> None:
        self.monkeypatch.setenv(name, value)


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    bin_dir, log = tmp_path / "fake-bin", tmp_path / "fake-docker-log"
    bin_dir.mkdir()
    log.mkdir()
    exe = bin_dir / "docker"
    exe.write_text(FAKE_DOCKER.format(python=sys.executable, no_engine=NO_ENGINE))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    for name in (
        "FAKE_DOCKER_NO_ENGINE",
        "FAKE_DOCKER_NO_BUILDX",
        "FAKE_DOCKER_ECHO_SECRET",
        "FAKE_DOCKER_BUILD_FAILS",
        "FAKE_DOCKER_BUILDX_VERSION",
    ):
        monkeypatch.delenv(name, raising=False)
    return FakeDocker(bin_dir, log, monkeypatch)


# --- projects ---------------------------------------------------------------------------------------------


def digits_repo(root: Path) -> Path:
    """A copy of this repository's digits example and docker/ folder, with empty data folders; returns the spec."""
    shutil.copytree(REPO / "docker", root / "docker")
    shutil.copytree(REPO / "job_specs" / "digits", root / "job_specs" / "digits")
    shutil.copy(REPO / "job_specs" / "digits.yaml", root / "job_specs" / "digits.yaml")
    for channel in ("train", "eval"):
        (root / "data" / "digits" / channel).mkdir(parents=True)
        (root / "data" / "digits" / channel / "x.npy").write_bytes(os.urandom(64))  # never in the image
    (root / "README.md").write_text("a repository\n")
    return root / "job_specs" / "digits.yaml"


DIGITS_BUILD = ["image.framework_version=null", "image.build.dockerfile=../docker/Dockerfile", "image.build.context=.."]


def load_digits(spec_path: Path, *extra: str) -> JobSpec:
    return load_spec(spec_path, [*DIGITS_BUILD, *extra])


def small_project(root: Path, *, build: dict[str, Any] | None = None, ignore: str | None = None) -> Path:
    """A job with its own Dockerfile and a context of a few files; returns the spec file."""
    (root / "code").mkdir(parents=True)
    (root / "code" / "train.py").write_text("print('train')\n")
    (root / "code" / "requirements.txt").write_text("tf-keras==2.19.0\n")
    (root / "image" / "src" / "pkg").mkdir(parents=True)
    (root / "image" / "Dockerfile").write_text(
        "FROM python:3.11-slim\nCOPY .cloudtrain/requirements.txt /r.txt\nRUN pip install -r /r.txt\nCOPY src /src\n"
    )
    (root / "image" / "src" / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "image" / "src" / "notes.md").write_text("notes\n")
    (root / "image" / "scratch").mkdir()
    (root / "image" / "scratch" / "big.bin").write_bytes(b"\0" * 1000)
    if ignore is not None:
        (root / "image" / ".dockerignore").write_text(ignore)
    spec = {
        "name": "small",
        "code": {"source_dir": "code", "entry_point": "train.py", "requirements": "requirements.txt"},
        "image": {"build": {"dockerfile": "image/Dockerfile", "context": "image", **(build or {})}},
        "resources": {"instance_type": "ml.m5.large", "instance_count": 1},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def dry(spec: JobSpec, out: Path, **kwargs: Any) -> Any:
    return build_image(spec, dry_run=True, context_out=out, **kwargs)


def tree(folder: Path) -> dict[str, str]:
    """Every path under folder: file sha256, "dir", or "-> target"."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def ecr_put(repository: str, tag: str) -> None:
    ecr = boto3.client("ecr")
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repository)
    image_manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": "sha256:" + "0" * 64,
        },
        "layers": [],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(image_manifest), imageTag=tag)


def ecr_token_secrets() -> tuple[str, str]:
    """(token, password) moto hands out; both must stay out of every output and file."""
    token = boto3.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return token, base64.b64decode(token).decode().partition(":")[2]


def files_containing(root: Path, needles: tuple[str, ...]) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(n.encode() in data for n in needles):
                found.append(path)
    return found


# --- the Dockerfile ---------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, `\\` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_requirements_before_any_code_and_keeps_the_contract() -> None:
    steps = dockerfile_instructions(REPO / "docker" / "Dockerfile")
    kinds = [k for k, _ in steps]

    def index(pred: Callable[[str, str], bool]) -> int:
        return next(i for i, (k, a) in enumerate(steps) if pred(k, a))

    copy_requirements = index(lambda k, a: k == "COPY" and a.split()[0] == ".cloudtrain/requirements.txt")
    install = index(lambda k, a: k == "RUN" and "pip install -r" in a and "requirements.txt" in a)
    code = [i for i, (k, a) in enumerate(steps) if k in ("COPY", "ADD") and i != copy_requirements]
    assert code, "the runtime and train are copied"
    assert copy_requirements < install < min(code)
    assert {steps[i][1].split()[0] for i in code} == {".cloudtrain/python/", "docker/train"}
    # Nothing before the requirements layer copies from the context (that would invalidate it on code edits).
    assert not [k for k in kinds[:copy_requirements] if k in ("COPY", "ADD")]

    # Base pinned by version, an ARG so the CPU variant is a build arg away; SageMaker's `train` command.
    arg = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert re.fullmatch(r"tensorflow/tensorflow:\d+\.\d+\.\d+-gpu", arg["BASE_IMAGE"])
    assert steps[kinds.index("FROM")] == ("FROM", "${BASE_IMAGE}")
    assert ("CMD", '["train"]') in steps and "ENTRYPOINT" not in kinds
    assert ("ENV", "PYTHONPATH=/opt/cloudtrain/python") in steps
    runtime_check = index(lambda k, a: k == "RUN" and "import cloudtrain.runtime.launcher" in a)
    assert runtime_check > max(code)

    # The ignore file beside it lets only docker/train through.
    rules = IgnoreRules.parse((REPO / "docker" / "Dockerfile.dockerignore").read_text())
    assert not rules.excluded("docker/train")
    for other in (
        ".venv/bin/python",
        "data/digits/train/x.npy",
        "cloudtrain/image/build.py",
        "docker/Dockerfile",
        ".git",
    ):
        assert rules.excluded(other), other


# --- .dockerignore ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # `*` does not cross folders
        ("**/*.md", "docs/deep/README.md", True),
        ("**/*.md", "README.md", True),
        ("docs", "docs/a/b.txt", True),  # a folder excludes what is in it
        ("/docs/", "docs/a.txt", True),  # leading and trailing slashes are cleaned away
        ("./docs/../src", "src/x.py", True),
        ("*\n!keep.txt", "keep.txt", False),
        ("*\n!docker/train", "docker/train", False),
        ("*\n!docker/train", "docker/Dockerfile", True),
        ("data\n!data/keep\ndata/keep/no.txt", "data/keep/no.txt", True),  # the last matching pattern wins
        ("data\n!data/keep", "data/keep/yes.txt", False),
        ("# *.py\n   \n", "x.py", False),  # comments and blank lines
        (" # not a comment", " # not a comment", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[a-c].txt", "b.txt", True),
        ("[a-c].txt", "d.txt", False),
        ("**/foo", "xfoo", False),
        ("**/foo", "foo", True),
        ("foo/**", "foo/x/y", True),
        ("foo/**", "foox", False),
        ("*.p\\[y\\]", "a.p[y]", True),
        ("\ufeff*.log\r\n", "x.log", True),  # a BOM and CRLF line ends
    ],
)
def test_ignore_rules_follow_docker(patterns: str, path: str, excluded: bool) -> None:
    assert IgnoreRules.parse(patterns).excluded(path) is excluded


def test_ignore_rules_reject_what_docker_rejects() -> None:
    with pytest.raises(UserError, match="illegal exclusion pattern"):
        IgnoreRules.parse("*\n!\n", "ctx/.dockerignore")
    with pytest.raises(UserError, match=r"ctx/\.dockerignore:1"):
        IgnoreRules.parse("[a-\n", "ctx/.dockerignore")


# --- content hash and dry run -----------------------------------------------------------------------------


def test_dry_run_of_digits_is_stable_writes_the_exact_context_and_creates_nothing(
    aws_endpoint: str, tmp_path: Path
) -> None:
    spec_path = digits_repo(tmp_path / "repo")
    lines: list[str] = []
    first = dry(load_digits(spec_path), tmp_path / "out", on_line=lines.append)
    second = dry(load_digits(spec_path), tmp_path / "out2")

    assert first.tag == second.tag and re.fullmatch(r"[0-9a-f]{16}", first.tag)
    assert first.content_hash.startswith(first.tag)
    assert first.image == f"{REGISTRY}/cloudtrain-training:{first.tag}"
    assert first.dry_run and not first.built and not first.pushed and first.exists is False
    assert lines and first.context_dir in lines[-1]

    # The folder is exactly the context: docker/train from the repository, and what cloudtrain adds.
    context = Path(first.context_dir or "")
    runtime = {f".cloudtrain/python/{name}" for name, _ in runtime_files()}
    files = {k for k, v in tree(context).items() if v != "dir"}
    assert files == {
        "docker/train",
        ".cloudtrain/Dockerfile",
        ".cloudtrain/requirements.txt",
        ".cloudtrain/python/cloudtrain/__init__.py",
        *runtime,
    }
    assert (context / ".cloudtrain/Dockerfile").read_bytes() == (REPO / "docker/Dockerfile").read_bytes()
    assert (context / ".cloudtrain/requirements.txt").read_bytes() == (
        REPO / "job_specs/digits/requirements.txt"
    ).read_bytes()
    assert (
        f'__version__ = "{cloudtrain.__version__}"'
        in (context / ".cloudtrain/python/cloudtrain/__init__.py").read_text()
    )
    assert os.access(context / "docker/train", os.X_OK)
    assert tree(context) == tree(Path(second.context_dir or ""))

    # The manifest beside it hashes to the tag; the commands are runnable and name that folder.
    document = json.loads(Path(first.manifest_path or "").read_text())
    assert document["content_hash"] == first.content_hash and document["platform"] == DEFAULT_PLATFORM
    build, *rest = first.argv
    assert build[:2] in (("docker", "build"), ("docker", "buildx"))
    assert build[build.index("-f") + 1] == f"{context}/.cloudtrain/Dockerfile" and build[-1] == str(context)
    assert build[build.index("-t") + 1] == first.image and "--platform linux/amd64" in first.commands[0]
    assert [a[:3] for a in rest] == [
        ("aws", "ecr", "create-repository"),
        ("docker", "login", "--username"),
        ("docker", "push", first.image),
    ]
    assert first.commands[2] == (
        f"aws ecr get-login-password --region us-east-1 | docker login --username AWS --password-stdin {REGISTRY}"
    )
    assert first.skipped_reason == "dry run" and len(first.commands) == len(first.argv)
    # --json fits the output schema of `cloudtrain build`.
    data = json.loads(json.dumps(first.to_json()))
    jsonschema.validate(data, output_schema("build"))
    assert data["argv"][0] == list(build) and data["commands"][0] == first.commands[0]

    # Only reads: no repository, no image.
    assert boto3.client("ecr").describe_repositories()["repositories"] == []


def test_tag_changes_with_requirements_but_not_with_files_outside_the_image(aws_endpoint: str, tmp_path: Path) -> None:
    spec_path = digits_repo(tmp_path / "repo")
    root = spec_path.parent.parent
    before = dry(load_digits(spec_path), tmp_path / "out").tag

    # Excluded by docker/Dockerfile.dockerignore: the data, the code, the README.
    (root / "data/digits/train/x.npy").write_bytes(b"other data")
    (root / "job_specs/digits/train.py").write_text("print('edited')\n")
    (root / "README.md").write_text("edited\n")
    assert dry(load_digits(spec_path), tmp_path / "out").tag == before

    # In the image: the requirements, the entry point, the Dockerfile, build args, the platform.
    reqs = root / "job_specs/digits/requirements.txt"
    reqs.write_text(reqs.read_text() + "tf-keras==2.19.0\n")
    after_requirements = dry(load_digits(spec_path), tmp_path / "out").tag
    assert after_requirements != before
    (root / "docker/train").write_text((root / "docker/train").read_text() + "# edited\n")
    after_train = dry(load_digits(spec_path), tmp_path / "out").tag
    assert after_train != after_requirements
    cpu = load_digits(spec_path, "image.build.build_args.BASE_IMAGE=tensorflow/tensorflow:2.19.0")
    assert dry(cpu, tmp_path / "out").tag != after_train
    arm = dry(load_digits(spec_path), tmp_path / "out", platform="linux/arm64")
    assert arm.tag != after_train and "--platform linux/arm64" in arm.commands[0]


def test_context_rules_for_a_dockerfile_of_ones_own(aws_endpoint: str, tmp_path: Path) -> None:
    spec_path = small_project(tmp_path / "p", ignore="scratch\n**/*.md\n")
    root = spec_path.parent
    result = dry(load_spec(spec_path), tmp_path / "out")
    context = Path(result.context_dir or "")
    assert set(tree(context)) == {
        "Dockerfile",  # the context's own copy: it is in the context and not excluded
        "src",
        "src/pkg",
        "src/pkg/mod.py",
        ".cloudtrain",
        ".cloudtrain/Dockerfile",
        ".cloudtrain/requirements.txt",
        ".cloudtrain/python",
        ".cloudtrain/python/cloudtrain",
        ".cloudtrain/python/cloudtrain/__init__.py",
        ".cloudtrain/python/cloudtrain/runtime",
        *(f".cloudtrain/python/{name}" for name, _ in runtime_files()),
    }  # no scratch/, no notes.md, and the applied .dockerignore itself is not sent
    assert (context / ".cloudtrain/requirements.txt").read_text() == "tf-keras==2.19.0\n"
    tag = result.tag

    def again() -> str:
        return dry(load_spec(spec_path), tmp_path / "out").tag

    (root / "image/scratch/big.bin").write_bytes(b"\1" * 1000)
    (root / "image/scratch/new.bin").write_bytes(b"new")
    (root / "image/src/notes.md").write_text("changed notes\n")
    (root / "code/train.py").write_text("print('the code travels in sourcedir.tar.gz, not in the image')\n")
    assert again() == tag
    (root / "image/src/pkg/mod.py").write_text("X = 2\n")
    changed = again()
    assert changed != tag
    (root / "image/src/pkg/mod.py").chmod(0o755)
    assert again() != changed
    (root / "image/src/pkg/mod.py").chmod(0o644)
    assert again() == changed
    (root / "image/src/empty").mkdir()
    assert again() != changed  # COPY src would create it
    (root / "image/src/empty").rmdir()
    (root / "image/src/link").symlink_to("pkg/mod.py")
    assert again() != changed
    (root / "image/src/link").unlink()
    (root / "image/.dockerignore").write_text("scratch\n")  # notes.md is in now
    assert again() != changed


def test_no_ignore_file_means_everything_but_cloudtrain_build_output(aws_endpoint: str, tmp_path: Path) -> None:
    spec_path = small_project(tmp_path / "p")
    context = spec_path.parent / "image"
    inside = dry(load_spec(spec_path), context / BUILD_OUT)  # a dry run's output inside the context ...
    again = dry(load_spec(spec_path), context / BUILD_OUT)
    assert inside.tag == again.tag  # ... is never part of it
    assert {"scratch/big.bin", "src/notes.md"} <= set(tree(Path(inside.context_dir or "")))
    with pytest.raises(UserError, match="inside the build context"):
        dry(load_spec(spec_path), context / "elsewhere")


def test_dry_run_without_aws_or_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, no region, no docker on PATH: the context and the commands still come out."""
    spec_path = small_project(tmp_path / "p")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = dry(load_spec(spec_path), tmp_path / "out")
    assert result.exists is None and result.image.startswith("ACCOUNT-ID.dkr.ecr.REGION.")
    assert any("AWS not reached" in n for n in result.notes)
    assert Path(result.context_dir or "").is_dir()


def test_image_reference_matches_the_dry_run_and_needs_no_aws(aws_endpoint: str, tmp_path: Path) -> None:
    spec = load_spec(small_project(tmp_path / "p"))
    result = dry(spec, tmp_path / "out")
    assert image_reference(spec, ACCOUNT, "us-east-1") == result.image
    assert manifest(collect_inputs(spec)).tag == result.tag
    cn = image_reference(spec, ACCOUNT, "cn-north-1")
    assert cn.startswith(f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/")


def test_spec_without_image_build_and_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    spec_path = small_project(tmp_path / "p")
    with pytest.raises(UserError, match=r"no image\.build"):
        build_image(load_spec(spec_path, ["image.build=null", "image.framework_version=2.19"]), dry_run=True)
    with pytest.raises(UserError, match="--platform"):
        collect_inputs(load_spec(spec_path), platform="amd64")
    with pytest.raises(UserError, match="repository"):
        collect_inputs(load_spec(spec_path, ["image.build.repository=My_Repo"]))
    (spec_path.parent / "image" / ".cloudtrain").mkdir()
    with pytest.raises(UserError, match=r"own \.cloudtrain/"):
        collect_inputs(load_spec(spec_path))


# --- building and pushing ---------------------------------------------------------------------------------


def test_existing_tag_skips_build_and_push(aws_endpoint: str, tmp_path: Path, fake_docker: FakeDocker) -> None:
    spec = load_digits(digits_repo(tmp_path / "repo"))
    tag = dry(spec, tmp_path / "out").tag
    ecr_put("cloudtrain-training", tag)
    fake_docker.set("FAKE_DOCKER_NO_ENGINE")  # no engine needed when there is nothing to build
    fake_docker.reset()  # the dry run asked `docker buildx version`, to print the command it would run

    lines: list[str] = []
    result = build_image(spec, push=True, on_line=lines.append)
    assert result.exists is True and not result.built and not result.pushed
    assert result.skipped_reason == "ECR holds the tag already" and result.commands == ()
    jsonschema.validate(result.to_json(), output_schema("build"))
    assert result.image == f"{REGISTRY}/cloudtrain-training:{tag}"
    assert any("in ECR already" in line for line in lines)
    assert fake_docker.calls() == []
    assert ensure_image(spec) == result.image and fake_docker.calls() == []


def test_missing_tag_builds_creates_the_repository_logs_in_by_stdin_and_pushes(
    aws_endpoint: str, tmp_path: Path, fake_docker: FakeDocker
) -> None:
    spec_path = digits_repo(tmp_path / "repo")
    spec = load_digits(spec_path, "image.build.build_args.BASE_IMAGE=tensorflow/tensorflow:2.19.0")
    planned = dry(spec, tmp_path / "out")
    fake_docker.reset()
    token, password = ecr_token_secrets()
    fake_docker.set("FAKE_DOCKER_ECHO_SECRET")  # the stand-in prints the password it gets: it must be redacted
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    tmp_before = set(os.listdir(tempfile.gettempdir()))

    lines: list[str] = []
    result = build_image(spec, push=True, on_line=lines.append)

    assert result.built and result.pushed and result.repository_created and result.exists is False
    assert result.skipped_reason is None
    assert [a[:2] for a in result.argv] == [
        ("docker", "buildx"),
        ("aws", "ecr"),
        ("docker", "login"),
        ("docker", "push"),
    ]
    jsonschema.validate(result.to_json(), output_schema("build"))
    assert result.tag == planned.tag and result.image == planned.image
    repos = boto3.client("ecr").describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos] == ["cloudtrain-training"]

    calls = fake_docker.calls()
    assert [c["argv"][:2] for c in calls] == [
        ["info", "--format"],
        ["buildx", "version"],
        ["buildx", "build"],
        ["login", "--username"],
        ["push", result.image],
    ]
    build = calls[2]["argv"]
    assert build[:5] == ["buildx", "build", "--load", "--provenance=false", "--progress=plain"]
    assert build[build.index("--platform") + 1] == "linux/amd64"
    assert build[build.index("-t") + 1] == result.image
    assert build[build.index("--build-arg") + 1] == "BASE_IMAGE=tensorflow/tensorflow:2.19.0"
    assert build[build.index("-f") + 1] == f"{build[-1]}/.cloudtrain/Dockerfile"
    assert not Path(build[-1]).exists()  # the staged context is gone
    # Docker was given exactly what the dry run wrote.
    assert tree(fake_docker.context(0)) == tree(Path(planned.context_dir or ""))

    login, push = calls[3], calls[4]
    assert login["argv"] == ["login", "--username", "AWS", "--password-stdin", REGISTRY]
    assert login["stdin_sha256"] == hashlib.sha256(password.encode()).hexdigest()  # the password came by stdin
    assert login["docker_config"] and login["docker_config"] == push["docker_config"]
    assert not Path(login["docker_config"]).exists()  # the temporary DOCKER_CONFIG is deleted
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        assert Path(login["docker_config"]).parent == Path("/dev/shm")  # in memory, never on disk
    assert calls[2]["docker_config"] is None  # the build runs with the user's own Docker config

    # The token and the password appear nowhere: argv, output, result, files left behind.
    secrets = (token, password)
    assert not any(s in arg for c in calls for arg in c["argv"] for s in secrets)
    assert any("***" in line for line in lines) and not any(s in line for line in lines for s in secrets)
    assert any("Login Succeeded" in line for line in lines) and any("digest: sha256:" in line for line in lines)
    assert not any(s in json.dumps(result.to_json()) for s in secrets)
    assert files_containing(tmp_path, secrets) == []
    for folder, before in ((Path("/dev/shm"), shm_before), (Path(tempfile.gettempdir()), tmp_before)):
        if folder.is_dir():
            left = {
                n for n in set(os.listdir(folder)) - before if n.startswith(("cloudtrain-docker-", "cloudtrain-build-"))
            }
            assert left == set(), folder

    # The push put the tag in ECR: the next build or submit finds it and does nothing.
    assert ensure_image(spec) == result.image
    assert len(fake_docker.calls()) == len(calls)


def test_build_without_buildx_uses_docker_build_and_without_push_only_builds(
    aws_endpoint: str, tmp_path: Path, fake_docker: FakeDocker
) -> None:
    fake_docker.set("FAKE_DOCKER_NO_BUILDX")
    result = build_image(load_spec(small_project(tmp_path / "p")))
    assert result.built and not result.pushed and result.builder == "docker build"
    argv = fake_docker.commands()
    assert argv[2][:1] == ["build"] and "--load" not in argv[2]
    assert [a[0] for a in argv] == ["info", "buildx", "build"]  # no login, no push
    assert boto3.client("ecr").describe_repositories()["repositories"] == []
    assert any("--push" in n for n in result.notes)


def test_old_buildx_gets_no_provenance_flag(aws_endpoint: str, tmp_path: Path, fake_docker: FakeDocker) -> None:
    fake_docker.set("FAKE_DOCKER_BUILDX_VERSION", "v0.9.1")
    result = build_image(load_spec(small_project(tmp_path / "p")))
    build = fake_docker.commands()[2]
    assert build[:3] == ["buildx", "build", "--load"] and "--provenance=false" not in build
    assert result.builder == "docker buildx build"


@pytest.mark.parametrize("how", ["engine down", "no docker on PATH"])
def test_no_docker_engine_is_one_line_backend_unavailable(
    aws_endpoint: str, tmp_path: Path, fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    spec = load_spec(small_project(tmp_path / "p"))
    if how == "engine down":
        fake_docker.set("FAKE_DOCKER_NO_ENGINE")
    else:
        (tmp_path / "empty-bin").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(BackendUnavailable) as caught:
        build_image(spec, push=True)
    message = str(caught.value)
    assert caught.value.exit_code == 3 and "\n" not in message
    assert message.startswith("no Docker engine reachable: ") and message.endswith(
        "use --dry-run to see the build context"
    )
    assert (NO_ENGINE in message) if how == "engine down" else ("not on PATH" in message)
    assert boto3.client("ecr").describe_repositories()["repositories"] == []  # nothing created
    with pytest.raises(BackendUnavailable):
        ensure_image(spec)


def test_failed_build_reports_its_last_line(aws_endpoint: str, tmp_path: Path, fake_docker: FakeDocker) -> None:
    fake_docker.set("FAKE_DOCKER_BUILD_FAILS")
    lines: list[str] = []
    with pytest.raises(
        CloudtrainError, match=r"^docker buildx build failed \(exit 1\): ERROR: failed to solve: "
    ) as caught:
        build_image(load_spec(small_project(tmp_path / "p")), push=True, on_line=lines.append)
    assert caught.value.exit_code == 1 and "\n" not in str(caught.value)
    assert any("No matching distribution" in line for line in lines)  # the build's output was streamed
    assert [argv[0] for argv in fake_docker.commands()] == ["info", "buildx", "buildx"]  # no login, no push
    assert boto3.client("ecr").describe_repositories()["repositories"] == []


# --- the image's entry point ------------------------------------------------------------------------------


def test_train_fetches_the_code_from_s3_and_runs_the_launcher(aws_endpoint: str, tmp_path: Path) -> None:
    """docker/train as SageMaker runs it (minus the container): code from S3, then the launcher runs the script."""
    root = tmp_path / "opt-ml"
    (root / "input/config").mkdir(parents=True)
    script = (
        "import os, sys\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'done'), 'w').write(' '.join(sys.argv[1:]))\n"
    )
    buf = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(buf, "w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(script)
        tar.addfile(info, io.BytesIO(script.encode()))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="code-bucket")
    s3.upload_file(str(buf), "code-bucket", "jobs/j/sourcedir.tar.gz")
    hps = {
        "epochs": "3",
        "sagemaker_program": json.dumps("train.py"),
        "sagemaker_submit_directory": json.dumps("s3://code-bucket/jobs/j/sourcedir.tar.gz"),
        "sagemaker_region": json.dumps("us-east-1"),
    }
    (root / "input/config/hyperparameters.json").write_text(json.dumps(hps))
    (root / "input/config/resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (root / "model").mkdir()
    env = {**os.environ, "CLOUDTRAIN_OPT_ML": str(root), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "docker/train")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "unpacked the code" in done.stdout
    assert (root / "code/train.py").read_text() == script
    assert (root / "model/done").read_text() == "--epochs 3"

    # A code tarball that is not there: a one-line failure reason, as SageMaker shows it.
    shutil.rmtree(root / "code")
    hps["sagemaker_submit_directory"] = json.dumps("s3://code-bucket/missing.tar.gz")
    (root / "input/config/hyperparameters.json").write_text(json.dumps(hps))
    failed = subprocess.run(
        [sys.executable, str(REPO / "docker/train")], env=env, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1
    reason = (root / "output/failure").read_text()
    assert reason.startswith("AlgorithmError: train: cannot fetch the code") and reason.count("\n") == 1
    assert not (root / "code").exists() and not list(root.glob(".code.*"))


def test_submit_builds_and_pushes_a_missing_image_first_then_trains_with_it(
    sagemaker_endpoint: ControlPlane, tmp_path: Path, fake_docker: FakeDocker
) -> None:
    sagemaker_endpoint.run_jobs = False  # only the request matters here
    spec = small_project(tmp_path / "project")
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "CLOUDTRAIN_ROLE_ARN"}

    first = run_cli("submit", str(spec), "--backend", "sagemaker", "--json", home=tmp_path / "home", env=aws)
    assert first.code == 0, first.err
    assert [c["argv"][0] for c in fake_docker.calls()][-3:] == ["buildx", "login", "push"]
    pushed = fake_docker.calls()[-1]["argv"][1]
    (request,) = [r.json() for r in sagemaker_endpoint.calls("CreateTrainingJob")]
    assert request["AlgorithmSpecification"]["TrainingImage"] == pushed

    fake_docker.reset()  # the tag is in ECR now: a second submit builds nothing
    again = run_cli("submit", str(spec), "--backend", "sagemaker", "--json", home=tmp_path / "home", env=aws)
    assert again.code == 0, again.err
    assert [c["argv"][0] for c in fake_docker.calls()] == []
    assert sagemaker_endpoint.calls("CreateTrainingJob")[-1].json()["AlgorithmSpecification"]["TrainingImage"] == pushed

"""`cloudtrain build`: a spec's `image.build`, content-addressed, built with the Docker CLI and pushed to ECR.

The tag is a hash of everything that goes into the image, so an image is built and pushed once and a job
names exactly the image its inputs make; what the context holds: docs/architecture.md, "Images".
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cloudtrain.aws import AwsSession, error_code, translate_errors
from cloudtrain.errors import BackendUnavailable, CloudtrainError, UserError, one_line
from cloudtrain.files import atomic_path, writing_to
from cloudtrain.settings import Settings

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

from cloudtrain.image.context import (
    BUILD_OUT,
    DEFAULT_PLATFORM,
    BuildInputs,
    Manifest,
    collect_inputs,
    image_reference,
    manifest,
    registry_host,
)
from cloudtrain.image.ignore import IgnoreRules

LABEL = "cloudtrain.content-hash"
OFFLINE_ACCOUNT = "ACCOUNT-ID"  # as the SageMaker backend's dry-run shows an account it could not look up
OFFLINE_REGION = "REGION"
DOCKER_PROBE_TIMEOUT_S = 30.0
LARGE_CONTEXT = 1 << 30
_NO_ENGINE_HINT = "use --dry-run to see the build context"
LineCallback = Callable[[str], None]

# ----------------------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True)
class Command:
    """A command as argv (what runs) and as a shell line to paste; neither ever holds a secret."""

    argv: tuple[str, ...]
    shell: str

    @classmethod
    def of(cls, *argv: str) -> Command:
        return cls(tuple(argv), shlex.join(argv))

    @classmethod
    def login(cls, docker: str, region: str, registry: str) -> Command:
        """`docker login` with the password on stdin; as a shell line, fed by the AWS CLI."""
        argv = (docker, "login", "--username", "AWS", "--password-stdin", registry)
        return cls(argv, f"aws ecr get-login-password --region {shlex.quote(region)} | {shlex.join(argv)}")


@dataclass(frozen=True)
class BuildResult:
    """What `build_image` did (or, dry, would do). `to_json` fits `cloudtrain schema --output-of build`.

    `commands` are shell lines to paste (the login fed by `aws ecr get-login-password`), `argv` the same
    commands as argument lists; neither ever holds a secret.
    """

    image: str
    repository: str
    tag: str
    content_hash: str
    platform: str
    dry_run: bool
    exists: bool | None  # ECR held the tag before this call (None: not known, AWS not reached)
    built: bool
    pushed: bool
    repository_created: bool
    builder: str | None
    context_dir: str | None  # dry run: the folder holding exactly the context the build would send
    manifest_path: str | None
    files: int
    context_bytes: int
    commands: tuple[str, ...] = ()  # run, or on a dry run to run, in order
    notes: tuple[str, ...] = ()
    skipped_reason: str | None = None  # why nothing was built or pushed
    argv: tuple[tuple[str, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["commands"], data["notes"] = list(self.commands), list(self.notes)
        data["argv"] = [list(a) for a in self.argv]
        return data


# ----------------------------------------------------------------------------------------------------------
# Docker and ECR


@dataclass
class _Secrets:
    """Values that must never reach an output line (registry password and token); per call, not global."""

    values: set[str] = field(default_factory=set)

    def add(self, value: str) -> None:
        if value:
            self.values.add(value)

    def redact(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


@dataclass(frozen=True)
class DockerCli:
    """The Docker CLI found on PATH, with the environment its commands run in."""

    exe: str
    env: Mapping[str, str]

    @classmethod
    def find(cls, docker: str, env: Mapping[str, str]) -> DockerCli | None:
        exe = shutil.which(docker, path=env.get("PATH", os.defpath))
        return cls(exe, env) if exe else None

    def probe(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.exe, *args],
            capture_output=True,
            text=True,
            errors="replace",
            env=dict(self.env),
            timeout=DOCKER_PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def require_engine(self) -> None:
        """`docker info`: the engine answers, or one BackendUnavailable line saying why not."""
        try:
            done = self.probe("info", "--format", "{{.ServerVersion}}")
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(
                f"no Docker engine reachable: `docker info` did not answer in {DOCKER_PROBE_TIMEOUT_S:.0f}s; "
                + _NO_ENGINE_HINT
            ) from None
        except OSError as e:
            raise BackendUnavailable(f"no Docker engine reachable: {e.strerror or e}; {_NO_ENGINE_HINT}") from None
        if done.returncode != 0:
            lines = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
            reason = lines[0] if lines else f"`docker info` exited with {done.returncode}"
            raise BackendUnavailable(f"no Docker engine reachable: {one_line(reason, 200)}; {_NO_ENGINE_HINT}")

    def buildx(self) -> tuple[int, ...] | None:
        """The buildx plugin's version ((0,) when unreadable), or None without the plugin."""
        try:
            done = self.probe("buildx", "version")
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        found = re.search(r"\bv?(\d+)\.(\d+)", done.stdout)
        return tuple(int(x) for x in found.groups()) if found else (0,)

    def run(
        self,
        args: list[str],
        *,
        what: str,
        on_line: LineCallback,
        secrets: _Secrets,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Run a docker command, streaming its merged output line by line (redacted); fail with its last line."""
        try:
            proc = subprocess.Popen(
                [self.exe, *args],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env if env is not None else self.env),
            )
        except OSError as e:
            raise BackendUnavailable(f"cannot run docker: {e.strerror or e}; {_NO_ENGINE_HINT}") from None
        assert proc.stdout is not None
        if stdin is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(stdin.encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass  # it exited early; its output says why
        last = ""
        try:
            with proc.stdout:
                for raw in proc.stdout:
                    line = secrets.redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
                    on_line(line)
                    last = line.strip() or last
            code = proc.wait()
        except BaseException:  # Ctrl-C, or on_line failed: never leave docker running behind us
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            raise CloudtrainError(one_line(f"{what} failed (exit {code}): {last or 'no output'}"))


@dataclass(frozen=True)
class Builder:
    """Which build command: BuildKit through the buildx plugin, or the classic `docker build`."""

    kind: Literal["buildx", "build"]
    provenance_flag: bool = True

    @property
    def label(self) -> str:
        return "docker buildx build" if self.kind == "buildx" else "docker build"


def _builder(docker: DockerCli | None) -> Builder:
    """buildx when its plugin answers (`--provenance=false` from 0.10, where attestations came), else classic."""
    version = docker.buildx() if docker is not None else None
    if version is None:
        return Builder("build", provenance_flag=False)
    return Builder("buildx", provenance_flag=version >= (0, 10))


def _build_args(builder: Builder, context: Path, inputs: BuildInputs, image: str, digest: str) -> list[str]:
    """The build command's arguments after `docker` (the context is sent from the staged folder only).

    `--provenance=false`: SageMaker cannot run an image whose manifest list carries BuildKit's attestations.
    """
    head: list[str] = ["build"]
    if builder.kind == "buildx":
        head = ["buildx", "build", "--load", *(["--provenance=false"] if builder.provenance_flag else [])]
        head.append("--progress=plain")
    args = [*head, "--platform", inputs.platform, "-f", str(context / inputs.dockerfile), "-t", image]
    for name, value in inputs.build_args:
        args += ["--build-arg", f"{name}={value}"]
    return [*args, "--label", f"{LABEL}={digest}", str(context)]


def _ecr_has_tag(ecr: Any, repository: str, tag: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        return True
    except ClientError as e:
        if error_code(e) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return False
        raise


def _repository_exists(ecr: Any, repository: str) -> bool:
    return _repository_uri(ecr, repository) is not None


def _repository_uri(ecr: Any, repository: str) -> str | None:
    """The repository's URI as ECR gives it (its registry is where images go), or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        found = ecr.describe_repositories(repositoryNames=[repository])["repositories"]
    except ClientError as e:
        if error_code(e) == "RepositoryNotFoundException":
            return None
        raise
    return str(found[0]["repositoryUri"]) if found else None


def _ensure_repository(ecr: Any, repository: str) -> tuple[bool, str | None]:
    """Create the repository if missing (scan on push): (whether this call created it, its URI)."""
    from botocore.exceptions import ClientError

    uri = _repository_uri(ecr, repository)
    if uri is not None:
        return False, uri
    try:
        made = ecr.create_repository(repositoryName=repository, imageScanningConfiguration={"scanOnPush": True})
        return True, str(made["repository"]["repositoryUri"])
    except ClientError as e:
        if error_code(e) == "RepositoryAlreadyExistsException":  # created meanwhile by someone else
            return False, _repository_uri(ecr, repository)
        raise


def _registry_password(ecr: Any, secrets: _Secrets) -> tuple[str, str]:
    """(user, password) from GetAuthorizationToken; both the token and the password join the secrets first."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    token = str(data["authorizationToken"])
    secrets.add(token)
    user, _, password = base64.b64decode(token).decode("utf-8", "replace").partition(":")
    secrets.add(password)
    return user or "AWS", password


def _private_tmp() -> str | None:
    """A folder for the short-lived registry credentials: memory-backed /dev/shm where there is one."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _session_for(settings: Settings | None, session: AwsSession | None) -> AwsSession:
    return session if session is not None else AwsSession(settings if settings is not None else Settings())


# ----------------------------------------------------------------------------------------------------------
# The entry points


def build_image(
    spec: JobSpec,
    *,
    push: bool = False,
    dry_run: bool = False,
    platform: str = DEFAULT_PLATFORM,
    context_out: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    session: AwsSession | None = None,
    on_line: LineCallback | None = None,
    docker: str = "docker",
    env: Mapping[str, str] | None = None,
) -> BuildResult:
    """`cloudtrain build`: build (and with `push`, push) the spec's image unless ECR holds its tag already.

    `dry_run` writes the exact context to `<context_out or ./.cloudtrain-build>/<tag>/` (its manifest beside
    it, `<tag>.json`) and returns the commands a build would run; it only reads AWS (STS, ECR DescribeImages),
    and works without AWS or Docker. Without `push`, an AWS that cannot be reached only costs the ECR check:
    the image is then built under the local name `<repository>:<tag>`. Progress lines go to `on_line`.
    Raises UserError (bad spec or context), BackendUnavailable (no Docker engine, AWS unreachable when
    needed) or CloudtrainError (a docker command failed).
    """
    say: LineCallback = on_line or (lambda _line: None)
    environ: Mapping[str, str] = os.environ if env is None else env
    inputs = collect_inputs(spec, platform)
    sess = _session_for(settings, session)
    if dry_run:
        return _dry_run(
            inputs, sess, Path(context_out) if context_out is not None else Path(BUILD_OUT), docker, environ, say
        )
    return _build(inputs, sess, push=push, docker=docker, environ=environ, say=say)


def ensure_image(
    spec: JobSpec,
    *,
    session: AwsSession | None = None,
    settings: Settings | None = None,
    platform: str = DEFAULT_PLATFORM,
    on_line: LineCallback | None = None,
    docker: str = "docker",
    env: Mapping[str, str] | None = None,
) -> str:
    """The ECR URI of the spec's built image for `submit`: built and pushed first when ECR lacks its tag."""
    result = build_image(
        spec, push=True, platform=platform, settings=settings, session=session, on_line=on_line, docker=docker, env=env
    )
    return result.image


def _dry_run(
    inputs: BuildInputs, session: AwsSession, out: Path, docker: str, environ: Mapping[str, str], say: LineCallback
) -> BuildResult:
    context_root = Path(inputs.build.context).resolve()
    out = out.absolute()
    inside = out.resolve()
    if inside.is_relative_to(context_root) and BUILD_OUT not in inside.relative_to(context_root).parts:
        raise UserError(
            f"--context-out {out} is inside the build context: name it {BUILD_OUT} (never sent) or put it elsewhere"
        )
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".context.", suffix=".part", dir=out))
    try:
        found = manifest(inputs, stage=tmp)
        final = out / found.tag
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)  # an earlier dry run's copy of the same tag
        elif final.exists() or final.is_symlink():
            final.unlink()
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notes: list[str] = []
    repository = inputs.build.repository
    exists: bool | None = None
    repo_exists: bool | None = None
    account, region = OFFLINE_ACCOUNT, OFFLINE_REGION
    try:  # only reads: STS GetCallerIdentity, ECR DescribeImages and DescribeRepositories
        with translate_errors(session.where, "STS GetCallerIdentity"):
            account, region = session.account_id(), session.region
        with translate_errors(session.where, "ECR DescribeImages"):
            ecr = session.client("ecr")
            exists = _ecr_has_tag(ecr, repository, found.tag)
            repo_exists = True if exists else _repository_exists(ecr, repository)
    except BackendUnavailable as e:
        notes.append(f"AWS not reached ({e}): whether ECR holds the tag is unknown; account shown as {account}")
    except CloudtrainError as e:
        notes.append(f"could not check ECR: {e}")
    registry = registry_host(account, region)
    image = f"{registry}/{repository}:{found.tag}"
    builder = _builder(DockerCli.find(docker, environ))
    commands = [Command.of(docker, *_build_args(builder, final, inputs, image, found.digest))]
    if repo_exists is not True:
        create = ("aws", "ecr", "create-repository", "--repository-name", repository, "--region", region)
        commands.append(Command.of(*create))
        notes.append(
            f"the ECR repository {repository} does not exist: --push creates it"
            if repo_exists is False
            else f"--push creates the ECR repository {repository} if it is missing"
        )
    commands += [Command.login(docker, region, registry), Command.of(docker, "push", image)]
    if exists:
        notes.append(f"ECR holds {image} already: a build would skip building and pushing")
    manifest_path = out / f"{found.tag}.json"
    shell = [c.shell for c in commands]
    document = {"image": image, "content_hash": found.digest, **found.document, "commands": shell}
    with writing_to(manifest_path), atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    say(f"wrote the build context ({found.files} files, {_size(found.size)}) to {final}")
    return _result(
        inputs,
        found,
        image,
        exists=exists,
        built=False,
        pushed=False,
        builder=builder,
        skipped_reason="dry run",
        commands=commands,
        notes=notes,
        context_dir=final,
        manifest_path=manifest_path,
    )


def _build(
    inputs: BuildInputs,
    session: AwsSession,
    *,
    push: bool,
    docker: str,
    environ: Mapping[str, str],
    say: LineCallback,
) -> BuildResult:
    planned = manifest(inputs)  # read-only: enough to ask ECR before copying anything
    repository = inputs.build.repository
    notes: list[str] = []
    account = region = registry = None
    exists: bool | None = None
    try:
        with translate_errors(session.where, "ECR DescribeImages"):
            account, region = session.account_id(), session.region
            ecr = session.client("ecr")
            uri = _repository_uri(ecr, repository)
            exists = uri is not None and _ecr_has_tag(ecr, repository, planned.tag)
            registry = uri.partition("/")[0] if uri else registry_host(account, region)
    except BackendUnavailable as e:
        if push:
            raise
        notes.append(f"AWS not reached ({e}): built as a local image only; --push needs AWS")

    def name(tag: str) -> str:
        return f"{registry}/{repository}:{tag}" if registry else f"{repository}:{tag}"

    if exists:
        say(f"{name(planned.tag)} is in ECR already: nothing to build or push")
        return _result(
            inputs,
            planned,
            name(planned.tag),
            exists=True,
            built=False,
            pushed=False,
            skipped_reason="ECR holds the tag already",
            notes=notes,
        )

    found = engine(docker, environ)
    secrets = _Secrets()
    commands: list[Command] = []
    created = pushed = False
    staged, image, builder = _stage_and_build(inputs, planned, found, name, commands, notes, say)
    if push:
        assert registry is not None and region is not None
        with translate_errors(session.where, "ECR"):
            ecr = session.client("ecr")
            created, uri = _ensure_repository(ecr, repository)
            if created:
                commands.append(
                    Command.of("aws", "ecr", "create-repository", "--repository-name", repository, "--region", region)
                )
                say(f"created the ECR repository {repository}")
            user, password = _registry_password(ecr, secrets)
        if uri and uri.partition("/")[0] != registry:  # a new repository in a registry of another name
            registry, built_as, image = uri.partition("/")[0], image, f"{uri}:{staged.tag}"
            found.run(["tag", built_as, image], what="docker tag", on_line=say, secrets=secrets)
            commands.append(Command.of(docker, "tag", built_as, image))
        _login_and_push(found, registry, user, password, image, secrets, say)
        commands += [Command.login(docker, region, registry), Command.of(docker, "push", image)]
        pushed = True
    else:
        notes.append("not pushed: use --push to push it to ECR")
    return _result(
        inputs,
        staged,
        image,
        exists=exists,
        built=True,
        pushed=pushed,
        created=created,
        builder=builder,
        commands=commands,
        notes=notes,
    )


def engine(docker: str = "docker", env: Mapping[str, str] | None = None) -> DockerCli:
    """The Docker CLI `docker` (a name on PATH or a path) with an engine that answers, else BackendUnavailable."""
    environ: Mapping[str, str] = os.environ if env is None else env
    found = DockerCli.find(docker, environ)
    if found is None:
        raise BackendUnavailable(f"no Docker engine reachable: `{docker}` is not on PATH; {_NO_ENGINE_HINT}")
    found.require_engine()
    return found


def _stage_and_build(
    inputs: BuildInputs,
    planned: Manifest,
    docker: DockerCli,
    name: Callable[[str], str],
    commands: list[Command],
    notes: list[str],
    say: LineCallback,
) -> tuple[Manifest, str, Builder]:
    """Copy the context into a private folder and build it there: (what was staged, the image's name, builder)."""
    builder = _builder(docker)
    stage = Path(tempfile.mkdtemp(prefix="cloudtrain-build-"))
    try:
        staged = manifest(inputs, stage=stage)
        if staged.digest != planned.digest:
            notes.append("the build context changed while it was read: built what was copied")
        image = name(staged.tag)
        if staged.size > LARGE_CONTEXT:
            notes.append(f"the build context is {_size(staged.size)}: exclude what the image does not need")
        say(f"building {image} ({staged.files} files, {_size(staged.size)} of context, {inputs.platform})")
        args = _build_args(builder, stage, inputs, image, staged.digest)
        commands.append(Command.of(Path(docker.exe).name, *args))
        # The classic builder whatever DOCKER_BUILDKIT says: Docker's CLI without buildx refuses to build with =1.
        classic = {**docker.env, "DOCKER_BUILDKIT": "0"} if builder.kind == "build" else None
        docker.run(args, what=builder.label, on_line=say, secrets=_Secrets(), env=classic)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return staged, image, builder


def build_local(
    spec: JobSpec,
    *,
    platform: str = DEFAULT_PLATFORM,
    on_line: LineCallback | None = None,
    docker: str = "docker",
    env: Mapping[str, str] | None = None,
) -> BuildResult:
    """The spec's image in the local engine only, as `<repository>:<tag>`: built unless the engine has it.

    For local jobs inside the image (`submit --backend local --container`): same inputs, same tag as
    `build_image`, and neither AWS nor a registry is asked.
    """
    say: LineCallback = on_line or (lambda _line: None)
    inputs = collect_inputs(spec, platform)
    planned = manifest(inputs)
    found = engine(docker, os.environ if env is None else env)

    def name(tag: str) -> str:
        return f"{inputs.build.repository}:{tag}"

    if found.probe("image", "inspect", "--format", "{{.Id}}", name(planned.tag)).returncode == 0:
        say(f"{name(planned.tag)} is in the Docker engine already: nothing to build")
        held = "the Docker engine holds the tag already"
        return _result(inputs, planned, name(planned.tag), exists=None, built=False, pushed=False, skipped_reason=held)
    commands: list[Command] = []
    notes: list[str] = []
    staged, image, builder = _stage_and_build(inputs, planned, found, name, commands, notes, say)
    return _result(
        inputs, staged, image, exists=None, built=True, pushed=False, builder=builder, commands=commands, notes=notes
    )


def _login_and_push(
    docker: DockerCli, registry: str, user: str, password: str, image: str, secrets: _Secrets, say: LineCallback
) -> None:
    """`docker login` (password on stdin) and `docker push` under a private, temporary DOCKER_CONFIG.

    The user's own Docker config is never touched; the credentials `docker login` writes live in a 0700
    folder (in memory under /dev/shm where available) that is deleted as soon as the push ends.
    """
    config = tempfile.mkdtemp(prefix="cloudtrain-docker-", dir=_private_tmp())
    env = {**docker.env, "DOCKER_CONFIG": config}
    try:
        docker.run(
            ["login", "--username", user, "--password-stdin", registry],
            what="docker login",
            on_line=say,
            secrets=secrets,
            stdin=password,
            env=env,
        )
        docker.run(["push", image], what="docker push", on_line=say, secrets=secrets, env=env)
    finally:
        shutil.rmtree(config, ignore_errors=True)


def _result(
    inputs: BuildInputs,
    found: Manifest,
    image: str,
    *,
    exists: bool | None,
    built: bool,
    pushed: bool,
    created: bool = False,
    builder: Builder | None = None,
    skipped_reason: str | None = None,
    commands: list[Command] | None = None,
    notes: list[str] | None = None,
    context_dir: Path | None = None,
    manifest_path: Path | None = None,
) -> BuildResult:
    """The one place a BuildResult is made; a dry run gives the folders it wrote."""
    return BuildResult(
        image=image,
        repository=inputs.build.repository,
        tag=found.tag,
        content_hash=found.digest,
        platform=inputs.platform,
        dry_run=context_dir is not None,
        exists=exists,
        built=built,
        pushed=pushed,
        repository_created=created,
        builder=None if builder is None else builder.label,
        context_dir=None if context_dir is None else str(context_dir),
        manifest_path=None if manifest_path is None else str(manifest_path),
        files=found.files,
        context_bytes=found.size,
        commands=tuple(c.shell for c in commands or ()),
        notes=tuple(notes or ()),
        skipped_reason=skipped_reason,
        argv=tuple(c.argv for c in commands or ()),
    )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


__all__ = [
    "DEFAULT_PLATFORM",
    "BuildInputs",
    "BuildResult",
    "Command",
    "IgnoreRules",
    "Manifest",
    "build_image",
    "build_local",
    "collect_inputs",
    "engine",
    "ensure_image",
    "image_reference",
    "manifest",
]

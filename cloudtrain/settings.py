"""Where each setting comes from (one `Layer` per source), resolved once into the `Settings` that backends receive
and never merge again.

The first that gives a setting wins: the command line (`Options`), `CLOUDTRAIN_*`, the job spec (or the spec a
job was submitted with), the config file (with its chosen profile); AWS's own chain fills what is still unset.
docs/architecture.md shows the order with examples.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import SpecError, UserError, quoted

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

CONFIG_NAME = Path("cloudtrain") / "config.yaml"
HOME_ENV = "CLOUDTRAIN_HOME"
PROFILE_ENV = "CLOUDTRAIN_PROFILE"
BACKENDS = ("local", "sagemaker")
# Each setting: its environment variable and where it sits in a job spec.
ENV_VARS = {
    "backend": "CLOUDTRAIN_BACKEND",
    "region": "CLOUDTRAIN_REGION",
    "role_arn": "CLOUDTRAIN_ROLE_ARN",
    "output_s3_uri": "CLOUDTRAIN_OUTPUT_S3_URI",
    "endpoint_url": "CLOUDTRAIN_ENDPOINT_URL",
}
SPEC_FIELDS = {
    "backend": ("backend",),
    "region": ("aws", "region"),
    "role_arn": ("aws", "role_arn"),
    "output_s3_uri": ("output", "s3_uri"),
    "endpoint_url": ("aws", "endpoint_url"),
}


class ConfigError(SpecError):
    """The config file is invalid: names the file, the line and the key. Exit code 2."""


@dataclass(frozen=True)
class Layer:
    """What one source (command line, environment, spec, config file) says; None: "this one does not say"."""

    backend: str | None = None
    region: str | None = None
    role_arn: str | None = None
    output_s3_uri: str | None = None
    endpoint_url: str | None = None

    def over(self, weaker: Layer) -> Layer:
        """These settings, with the gaps filled from a weaker layer."""
        return Layer(**{f.name: getattr(self, f.name) or getattr(weaker, f.name) for f in fields(self)})

    def items(self) -> list[tuple[str, str | None]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def check_value(name: str, value: Any) -> str | None:
    """Why `value` is not a valid setting `name`, or None when it is."""
    from cloudtrain.spec.patterns import PATTERN_HELP, REGION_PATTERN, ROLE_ARN_PATTERN, S3_URI, URL_PATTERN

    if not isinstance(value, str) or not value:
        return "expected a non-empty string"
    if name == "backend":
        return None if value in BACKENDS else f"must be one of {', '.join(BACKENDS)} (got {value!r})"
    if name == "output_s3_uri":
        return None if S3_URI.match(value) else f"must be an S3 URI such as s3://bucket/prefix (got {value!r})"
    pattern = {"region": REGION_PATTERN, "role_arn": ROLE_ARN_PATTERN, "endpoint_url": URL_PATTERN}[name]
    return None if re.match(pattern, value) else f"must be {PATTERN_HELP[pattern]} (got {value!r})"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/cloudtrain/config.yaml`, or `~/.config/cloudtrain/config.yaml`."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"  # the XDG spec ignores relative paths
    return root / CONFIG_NAME


def env_settings(environ: Mapping[str, str] | None = None) -> Layer:
    """The CLOUDTRAIN_* variables that are set (empty counts as unset); a bad value is a one-line error."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name, var in ENV_VARS.items():
        value = environ.get(var, "").strip()
        if not value:
            continue
        if (problem := check_value(name, value)) is not None:
            raise UserError(f"{var}: {problem}")
        values[name] = value
    return Layer(**values)


def read_config_file(path: Path, profile: str | None = None) -> tuple[Layer, Layer]:
    """The file's top-level settings and `profile`'s; every problem is one ConfigError with its line."""
    from cloudtrain.spec.source import SpecLoader, read_text

    shown = str(path)
    try:
        text = read_text(path, shown)
        loader = SpecLoader(text, shown)
        data = loader.load()
    except SpecError as e:
        raise ConfigError(e.file, e.line, e.field, e.message) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(shown, loader.source.root_line, None, "the top level must be a mapping of settings")

    def fail(loc: tuple[str, ...], message: str) -> ConfigError:
        line, _, _ = loader.source.locate(data, loc)
        return ConfigError(shown, line, ".".join(loc), message)

    def layer(section: dict[str, Any], prefix: tuple[str, ...], allowed: Sequence[str]) -> Layer:
        for key, value in section.items():
            loc = (*prefix, str(key))
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
                raise fail(loc, f"unknown setting ({hint})")
            if key != "profiles" and (problem := check_value(key, value)) is not None:
                raise fail(loc, problem)
        return Layer(**{k: v for k, v in section.items() if k in ENV_VARS})

    settings = layer(data, (), [*ENV_VARS, "profiles"])
    profiles = data.get("profiles", {})
    if profiles is None:
        profiles = {}
    if not isinstance(profiles, dict):
        raise fail(("profiles",), "must be a mapping of profile names to settings")
    named: dict[str, Layer] = {}
    for name, section in profiles.items():  # every profile is checked, not only the one chosen
        if not isinstance(section, dict):
            raise fail(("profiles", str(name)), "must be a mapping of settings")
        named[str(name)] = layer(section, ("profiles", str(name)), list(ENV_VARS))
    if profile is None:
        return settings, Layer()
    if profile not in named:
        have = ", ".join(named) or "none"
        raise fail(("profiles",) if "profiles" in data else (), f"no profile {profile!r} (profiles: {have})")
    return settings, named[profile]


@dataclass(frozen=True)
class Config:
    """The environment's and the config file's settings; the command line and the spec are the caller's."""

    env: Layer = Layer()
    file: Layer = Layer()  # the file's top level
    profile_settings: Layer = Layer()  # the chosen profile's, over the top level
    path: Path | None = None  # the config file that was read, None when there is none
    profile: str | None = None

    @property
    def from_file(self) -> Layer:
        return self.profile_settings.over(self.file)

    @classmethod
    def load(cls, profile: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
        """Read CLOUDTRAIN_* and the config file (with `profile`, else $CLOUDTRAIN_PROFILE)."""
        environ = os.environ if environ is None else environ
        profile = profile or environ.get(PROFILE_ENV) or None
        path = config_path(environ)
        if not path.exists():
            if profile:
                raise UserError(f"profile {quoted(profile)}: there is no config file ({path})")
            return cls(env_settings(environ))
        top, chosen = read_config_file(path, profile)
        return cls(env_settings(environ), top, chosen, path, profile)

    def ranked(self, name: str, cli: Layer, middle: tuple[str | None, str]) -> list[tuple[str | None, str]]:
        """What each source says of one setting, strongest first, with where it says it: the command line,
        CLOUDTRAIN_*, `middle` (the spec, or the spec a job was submitted with), the chosen profile of the config
        file, its top level. The one place the order is written."""
        return [
            (getattr(cli, name), "command line"),
            (getattr(self.env, name), ENV_VARS[name]),
            middle,
            (getattr(self.profile_settings, name), f"{self.path} (profile {self.profile})"),
            (getattr(self.file, name), str(self.path)),
        ]

    def defaults(self, cli: Layer = Layer(), recorded: Layer = Layer()) -> Layer:
        """Without a spec: the command line, the environment, the spec a job was submitted with, the config file."""
        values = {name: self.sources_of(name, cli, (getattr(recorded, name), "submitted spec"))[0] for name in ENV_VARS}
        return Layer(**values)

    def sources_of(self, name: str, cli: Layer, middle: tuple[str | None, str]) -> tuple[str | None, str]:
        """The setting's value and where it came from: the strongest source that gives one."""
        return next(((v, where) for v, where in self.ranked(name, cli, middle) if v), (None, "not set"))

    def sources(self, spec: JobSpec | None = None, cli: Layer = Layer()) -> dict[str, tuple[str | None, str]]:
        """Each setting's value and where it came from (for `cloudtrain config` and for messages)."""
        return {
            name: self.sources_of(name, cli, (_spec_value(spec, name) if spec is not None else None, "spec"))
            for name in ENV_VARS
        }

    def apply_to_spec(self, spec: JobSpec, cli: Layer = Layer(), overrides: Sequence[str] = ()) -> JobSpec:
        """The spec with each setting taken from the strongest source that gives it (`ranked`).

        `overrides` are the `--set` strings the spec was loaded with: a field they set counts as the command
        line's, so the environment does not replace it.
        """
        for name in ENV_VARS:
            current = _spec_value(spec, name)
            if not getattr(cli, name) and _overridden(overrides, SPEC_FIELDS[name]):
                continue
            value, _ = self.sources_of(name, cli, (current, "spec"))
            if value is not None and value != current:
                spec = _with(spec, SPEC_FIELDS[name], value)
        return spec


def _spec_value(spec: JobSpec, name: str) -> str | None:
    obj: Any = spec
    for part in SPEC_FIELDS[name]:
        obj = getattr(obj, part)
    return obj


def _with(model: Any, path: tuple[str, ...], value: Any) -> Any:
    """A copy of the (frozen) model with the field at `path` replaced; values were checked by `check_value`."""
    head, *rest = path
    new = _with(getattr(model, head), tuple(rest), value) if rest else value
    return model.model_copy(update={head: new})


def _overridden(overrides: Sequence[str], path: tuple[str, ...]) -> bool:
    """Whether a `--set` sets this field or a section holding it (`--set aws={region: ...}`)."""
    for override in overrides:
        key = tuple(part.strip() for part in override.partition("=")[0].split("."))
        if key == path[: len(key)]:
            return True
    return False


def cloudtrain_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where job folders and the job record database live: $CLOUDTRAIN_HOME, else ~/.cloudtrain."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(HOME_ENV) or Path.home() / ".cloudtrain").expanduser()


@dataclass(frozen=True)
class Options:
    """What the command line (or a caller of `cloudtrain.api`) says; None: the next source decides.

    `profile` picks a profile of cloudtrain's config file (not an AWS profile); `config` replaces reading the
    environment and the config file (tests, or a program that has its own).
    """

    backend: str | None = None
    region: str | None = None
    role_arn: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    container: bool = False
    config: Config | None = None

    def __post_init__(self) -> None:
        choose_backend(self.backend)  # an unknown --backend is said as such, before anything else

    @property
    def layer(self) -> Layer:
        return Layer(backend=self.backend, region=self.region, role_arn=self.role_arn, endpoint_url=self.endpoint_url)

    def read_config(self) -> Config:
        """The environment's and the config file's settings: `config` if given, else read now."""
        return self.config if self.config is not None else Config.load(self.profile)


@dataclass(frozen=True)
class Settings:
    """Where and how a command runs, resolved once (`for_spec`; `records.for_job` for a command about a job);
    backends take it as it is.

    None leaves a setting to AWS's own chain (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ~/.aws/config).
    `aws_profile` is the spec's `aws.profile`, a profile of ~/.aws/config.
    """

    backend: str = "local"
    region: str | None = None
    role_arn: str | None = None
    output_s3_uri: str | None = None
    endpoint_url: str | None = None
    aws_profile: str | None = None
    home: Path = field(default_factory=cloudtrain_home)
    container: bool = False


def aws_configured(environ: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """Whether AWS looks configured here (credentials or profile in env, or AWS config files); no network."""
    return aws_source(environ, home) is not None


_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def aws_source(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """Where AWS's configuration was found (what makes sagemaker the default backend), or None; no network.

    Cheap on purpose: it only chooses the default backend, so it must not import boto3.
    """
    env = os.environ if environ is None else environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return "AWS_ACCESS_KEY_ID in the environment"
    if found := next((name for name in _AWS_ENV if env.get(name)), None):
        return f"{found} in the environment"
    for path in _aws_files(env, home):
        if path.is_file() and path.stat().st_size > 0:
            return _shown(path, env, home)
    return None


def _aws_files(env: Mapping[str, str], home: Path | None) -> list[Path]:
    """~/.aws/credentials and ~/.aws/config, or where AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE say."""
    base = home if home is not None else Path(env.get("HOME") or Path.home())
    return [
        Path(env["AWS_SHARED_CREDENTIALS_FILE"])
        if env.get("AWS_SHARED_CREDENTIALS_FILE")
        else base / ".aws/credentials",
        Path(env["AWS_CONFIG_FILE"]) if env.get("AWS_CONFIG_FILE") else base / ".aws/config",
    ]


def _shown(path: Path, env: Mapping[str, str], home: Path | None) -> str:
    """`~/.aws/config` rather than the home folder's full path."""
    base = home if home is not None else Path(env.get("HOME") or Path.home())
    return f"~/{path.relative_to(base)}" if path.is_relative_to(base) else str(path)


def aws_region(environ: Mapping[str, str] | None = None, home: Path | None = None) -> tuple[str, str] | None:
    """The region AWS's own chain gives when no cloudtrain setting does, and where it came from: AWS_REGION,
    AWS_DEFAULT_REGION, then the profile's `region` in ~/.aws/config (AWS_PROFILE's, else default). No boto3."""
    import configparser

    env = os.environ if environ is None else environ
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if value := env.get(var, "").strip():
            return value, var
    path = _aws_files(env, home)[1]
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None
    section = "default" if profile == "default" else f"profile {profile}"
    if parser.has_option(section, "region") and (value := parser.get(section, "region").strip()):
        return value, f"{_shown(path, env, home)} [{section}]"
    return None


def default_backend_reason() -> str:
    """Why the backend is what it is when nothing names one: `sagemaker (AWS is configured: ~/.aws/credentials)`."""
    found = aws_source()
    if found is not None:
        return f"sagemaker, since AWS is configured ({found}); --backend local trains on this machine"
    return "local, since no AWS configuration was found (environment, ~/.aws); --backend sagemaker to use AWS"


def choose_backend(*candidates: str | None) -> str:
    """The first backend given, strongest first; else sagemaker where AWS is configured, else local."""
    for name in candidates:
        if name:
            if name not in BACKENDS:
                raise UserError(f"--backend: {quoted(name)} is not one of {', '.join(BACKENDS)}")
            return name
    return "sagemaker" if aws_configured() else "local"


def for_spec(options: Options, spec: JobSpec, overrides: Sequence[str] = ()) -> tuple[Settings, JobSpec]:
    """The settings of a submit or a build, and the spec with each setting taken from the strongest source
    (what is submitted and recorded). `overrides` are the `--set`s the spec was loaded with: they count as
    the command line."""
    spec = options.read_config().apply_to_spec(spec, options.layer, overrides)
    settings = Settings(
        backend=choose_backend(spec.backend),
        region=spec.aws.region,
        role_arn=spec.aws.role_arn,
        output_s3_uri=spec.output.s3_uri,
        endpoint_url=spec.aws.endpoint_url,
        aws_profile=spec.aws.profile,
        container=options.container,
    )
    return settings, spec

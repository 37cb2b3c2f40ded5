"""Defaults from the environment and the config file, and the order in which they apply.

Five settings can come from four places; the first that gives one wins:

    command line  (--backend, --region, --role-arn, --endpoint-url, --set output.s3_uri=...)
    environment   (CLOUDTRAIN_BACKEND, CLOUDTRAIN_REGION, CLOUDTRAIN_ROLE_ARN, CLOUDTRAIN_OUTPUT_S3_URI,
                   CLOUDTRAIN_ENDPOINT_URL)
    the job spec  (backend, aws.region, aws.role_arn, output.s3_uri, aws.endpoint_url)
    config file   ($XDG_CONFIG_HOME/cloudtrain/config.yaml, default ~/.config/cloudtrain/config.yaml)

then botocore's own chain (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ~/.aws/config) for the AWS ones. A command about
an existing job (status, logs, stop, fetch-model, compare) has no spec; its backend is the command line's, else
the one the job was recorded with, else the environment's, else the config file's.

The config file holds top-level defaults and named profiles that override them, picked with `--profile` or
`CLOUDTRAIN_PROFILE`:

    backend: sagemaker
    region: eu-west-1
    role_arn: arn:aws:iam::123456789012:role/SageMakerRole
    output_s3_uri: s3://my-bucket/cloudtrain
    profiles:
      dev: {backend: local}
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import SpecError, UserError, quoted

if TYPE_CHECKING:
    from cloudtrain.backends import AwsOptions
    from cloudtrain.spec import JobSpec

CONFIG_NAME = Path("cloudtrain") / "config.yaml"
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
class Settings:
    """One layer of settings; None means "this layer does not say"."""

    backend: str | None = None
    region: str | None = None
    role_arn: str | None = None
    output_s3_uri: str | None = None
    endpoint_url: str | None = None

    def over(self, weaker: Settings) -> Settings:
        """These settings, with the gaps filled from a weaker layer."""
        return Settings(**{f.name: getattr(self, f.name) or getattr(weaker, f.name) for f in fields(self)})

    def items(self) -> list[tuple[str, str | None]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def check_value(name: str, value: Any) -> str | None:
    """Why `value` is not a valid setting `name`, or None when it is."""
    from cloudtrain.patterns import PATTERN_HELP, REGION_PATTERN, ROLE_ARN_PATTERN, S3_URI, URL_PATTERN

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


def env_settings(environ: Mapping[str, str] | None = None) -> Settings:
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
    return Settings(**values)


def read_config_file(path: Path, profile: str | None = None) -> tuple[Settings, Settings]:
    """The file's top-level settings and `profile`'s; every problem is one ConfigError with its line."""
    from cloudtrain.spec_source import SpecLoader, read_text

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

    def layer(section: dict[str, Any], prefix: tuple[str, ...], allowed: Sequence[str]) -> Settings:
        for key, value in section.items():
            loc = (*prefix, str(key))
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
                raise fail(loc, f"unknown setting ({hint})")
            if key != "profiles" and (problem := check_value(key, value)) is not None:
                raise fail(loc, problem)
        return Settings(**{k: v for k, v in section.items() if k in ENV_VARS})

    settings = layer(data, (), [*ENV_VARS, "profiles"])
    profiles = data.get("profiles", {})
    if profiles is None:
        profiles = {}
    if not isinstance(profiles, dict):
        raise fail(("profiles",), "must be a mapping of profile names to settings")
    named: dict[str, Settings] = {}
    for name, section in profiles.items():  # every profile is checked, not only the one chosen
        if not isinstance(section, dict):
            raise fail(("profiles", str(name)), "must be a mapping of settings")
        named[str(name)] = layer(section, ("profiles", str(name)), list(ENV_VARS))
    if profile is None:
        return settings, Settings()
    if profile not in named:
        have = ", ".join(named) or "none"
        raise fail(("profiles",) if "profiles" in data else (), f"no profile {profile!r} (profiles: {have})")
    return settings, named[profile]


@dataclass(frozen=True)
class Config:
    """The environment's and the config file's settings; the command line and the spec are the caller's."""

    env: Settings = Settings()
    file: Settings = Settings()  # the file's top level
    profile_settings: Settings = Settings()  # the chosen profile's, over the top level
    path: Path | None = None  # the config file that was read, None when there is none
    profile: str | None = None

    @property
    def from_file(self) -> Settings:
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

    def defaults(self, cli: Settings = Settings()) -> Settings:
        """Without a spec: the command line, then the environment, then the config file."""
        return cli.over(self.env).over(self.from_file)

    def aws_options(self, cli: AwsOptions, recorded: Settings = Settings()) -> AwsOptions:
        """AWS options for a command without a spec; `recorded` is the job's spec as submitted, if known."""
        given = Settings(region=cli.region, role_arn=cli.role_arn, endpoint_url=cli.endpoint_url)
        merged = given.over(self.env).over(recorded).over(self.from_file)
        return replace(cli, region=merged.region, role_arn=merged.role_arn, endpoint_url=merged.endpoint_url)

    def fallback_backend(self) -> str | None:
        """The backend of a job cloudtrain has no record of: the environment's, else the config file's."""
        return self.env.backend or self.from_file.backend

    def sources(self, spec: JobSpec | None = None, cli: Settings = Settings()) -> dict[str, tuple[str | None, str]]:
        """Each setting's value and where it came from (for `cloudtrain config` and for messages)."""
        out: dict[str, tuple[str | None, str]] = {}
        for name, var in ENV_VARS.items():
            spec_value = _spec_value(spec, name) if spec is not None else None
            layers = (
                (getattr(cli, name), "command line"),
                (getattr(self.env, name), var),
                (spec_value, "spec"),
                (getattr(self.profile_settings, name), f"{self.path} (profile {self.profile})"),
                (getattr(self.file, name), str(self.path)),
            )
            out[name] = next(((v, where) for v, where in layers if v), (None, "not set"))
        return out

    def apply_to_spec(self, spec: JobSpec, cli: Settings = Settings(), overrides: Sequence[str] = ()) -> JobSpec:
        """The spec with each setting taken from the strongest layer that gives it.

        `overrides` are the `--set` strings the spec was loaded with: a field they set counts as the command
        line's, so the environment does not replace it.
        """
        for name in ENV_VARS:
            path = SPEC_FIELDS[name]
            current = _spec_value(spec, name)
            if getattr(cli, name):
                value = getattr(cli, name)
            elif _overridden(overrides, path):
                continue
            elif getattr(self.env, name):
                value = getattr(self.env, name)
            elif current is None and getattr(self.from_file, name):
                value = getattr(self.from_file, name)
            else:
                continue
            if value != current:
                spec = _with(spec, path, value)
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

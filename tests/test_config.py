"""Defaults from CLOUDTRAIN_* variables and the config file: precedence, profiles, one-line errors (fast)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cloudtrain.errors import UserError
from cloudtrain.records import for_job
from cloudtrain.settings import (
    ENV_VARS,
    Config,
    ConfigError,
    Options,
    config_path,
    env_settings,
    read_config_file,
)
from cloudtrain.settings import Layer as Settings  # one source's say
from cloudtrain.spec.load import load_spec
from tests.clirun import cloudtrain

# One value per layer and setting, each different, so the winner can be told from the result.
VALUES = {
    "backend": {"cli": "local", "env": "sagemaker", "spec": "local", "file": "sagemaker"},
    "region": {"cli": "us-east-1", "env": "us-west-2", "spec": "eu-west-1", "file": "ap-south-1"},
    "role_arn": {layer: f"arn:aws:iam::123456789012:role/{layer}" for layer in ("cli", "env", "spec", "file")},
    "output_s3_uri": {layer: f"s3://{layer}-bucket/out" for layer in ("cli", "env", "spec", "file")},
    "endpoint_url": {layer: f"http://{layer}.example:5000" for layer in ("cli", "env", "spec", "file")},
}
SPEC_YAML = {
    "backend": "backend: {v}",
    "region": "aws: {{region: {v}}}",
    "role_arn": "aws: {{role_arn: '{v}'}}",
    "output_s3_uri": "output: {{s3_uri: '{v}'}}",
    "endpoint_url": "aws: {{endpoint_url: '{v}'}}",
}

# (layers that give the setting) -> the layer whose value is used: command line, environment, spec, file.
PRECEDENCE = [
    (("cli", "env", "spec", "file"), "cli"),
    (("env", "spec", "file"), "env"),
    (("spec", "file"), "spec"),
    (("file",), "file"),
    (("cli", "file"), "cli"),
    (("env", "file"), "env"),
    (("cli", "spec"), "cli"),
    ((), None),
]


def spec_file(folder: Path, extra: str = "") -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "train.py").write_text("print('hi')\n")
    path = folder / "job.yaml"
    path.write_text(f"name: tiny\ncode: {{source_dir: code, entry_point: train.py}}\n{extra}")
    return path


def spec_value(spec, name: str):  # the effective value where submit reads it
    return {
        "backend": spec.backend,
        "region": spec.aws.region,
        "role_arn": spec.aws.role_arn,
        "output_s3_uri": spec.output.s3_uri,
        "endpoint_url": spec.aws.endpoint_url,
    }[name]


@pytest.mark.parametrize("name", list(VALUES))
@pytest.mark.parametrize(("given", "winner"), PRECEDENCE)
def test_precedence_with_a_spec(tmp_path: Path, name: str, given: tuple[str, ...], winner: str | None) -> None:
    values = VALUES[name]
    extra = SPEC_YAML[name].format(v=values["spec"]) + "\n" if "spec" in given else ""
    spec = load_spec(spec_file(tmp_path, extra))
    layer = {layer: Settings(**{name: values[layer]}) if layer in given else Settings() for layer in values}
    config = Config(env=layer["env"], file=layer["file"], path=tmp_path / "config.yaml")

    effective = config.apply_to_spec(spec, layer["cli"])

    assert spec_value(effective, name) == (values[winner] if winner else None)
    value, source = config.sources(spec, layer["cli"])[name]
    assert value == (values[winner] if winner else None)
    assert (
        source
        == {
            "cli": "command line",
            "env": ENV_VARS[name],
            "spec": "spec",
            "file": str(tmp_path / "config.yaml"),
            None: "not set",
        }[winner]
    )


@pytest.mark.parametrize(
    ("override", "env", "expected"),
    [
        ("aws.region=eu-central-1", "us-west-2", "eu-central-1"),  # --set is the command line: beats the env
        ("aws={region: eu-central-1}", "us-west-2", "eu-central-1"),  # so does a --set of the whole section
        ("hyperparameters.epochs=3", "us-west-2", "us-west-2"),  # another field's --set changes nothing
    ],
)
def test_set_override_counts_as_the_command_line(tmp_path: Path, override: str, env: str, expected: str) -> None:
    spec = load_spec(spec_file(tmp_path), [override])
    config = Config(env=Settings(region=env))
    assert config.apply_to_spec(spec, Settings(), [override]).aws.region == expected


@pytest.mark.parametrize(
    ("cli", "recorded", "env", "file", "expected"),
    [
        ("sagemaker", "local", "local", "local", "sagemaker"),  # the command line first
        (None, "local", "sagemaker", "sagemaker", "local"),  # then the job's own record
        (None, None, "sagemaker", "local", "sagemaker"),  # then the environment
        (None, None, None, "sagemaker", "sagemaker"),  # then the config file
        (None, None, None, None, "local"),  # then sagemaker only where AWS is configured: not here
    ],
)
def test_backend_of_a_job_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, recorded, env, file, expected
) -> None:
    from cloudtrain.store import JobStore

    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path / "home"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    if recorded:
        JobStore(tmp_path / "home").remember("job-1", recorded, load_spec(spec_file(tmp_path)))
    config = Config(env=Settings(backend=env), file=Settings(backend=file))
    assert for_job(Options(backend=cli, config=config), "job-1").backend == expected


def test_aws_options_without_a_spec() -> None:
    config = Config(
        env=Settings(region="us-west-2"),
        file=Settings(region="eu-west-1", endpoint_url="http://file.example", role_arn=VALUES["role_arn"]["file"]),
    )
    merged = for_job(Options(endpoint_url="http://cli.example", config=config))
    assert (merged.region, merged.endpoint_url, merged.role_arn) == (
        "us-west-2",
        "http://cli.example",
        VALUES["role_arn"]["file"],
    )


# --- the config file ----------------------------------------------------------------------------------


def write_config(root: Path, text: str) -> Path:
    path = root / "cloudtrain" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_config_path_respects_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "cloudtrain" / "config.yaml"
    assert config_path({}) == tmp_path / "me" / ".config" / "cloudtrain" / "config.yaml"
    assert config_path({"XDG_CONFIG_HOME": "relative"}) == tmp_path / "me" / ".config" / "cloudtrain" / "config.yaml"


def test_profiles_override_the_top_level(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        """\
        backend: sagemaker
        region: eu-west-1
        profiles:
          dev: {backend: local}
          ci:
            region: us-east-1
        """,
    )
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert Config.load(None, environ).defaults() == Settings(backend="sagemaker", region="eu-west-1")
    assert Config.load("dev", environ).defaults() == Settings(backend="local", region="eu-west-1")
    by_env = Config.load(None, {**environ, "CLOUDTRAIN_PROFILE": "ci"})
    assert by_env.defaults() == Settings(backend="sagemaker", region="us-east-1")
    assert by_env.sources()["region"][1].endswith("config.yaml (profile ci)")
    assert by_env.sources()["backend"][1].endswith("config.yaml")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("backend: local\nregoin: eu-west-1\n", 2, "regoin: unknown setting (did you mean 'region'?)"),
        ("region: europe\n", 1, "region: must be a region such as us-east-1 (got 'europe')"),
        ("backend: cloud\n", 1, "backend: must be one of local, sagemaker (got 'cloud')"),
        ("output_s3_uri: my-bucket\n", 1, "output_s3_uri: must be an S3 URI such as s3://bucket/prefix"),
        ("profiles:\n  dev:\n    role_arn: nope\n", 3, "profiles.dev.role_arn: must be a role ARN"),
        ("profiles:\n  dev: local\n", 2, "profiles.dev: must be a mapping of settings"),
        ("backend: local\nregion: eu-west-1: x\n", 2, "invalid YAML"),
        ("- backend: local\n", 1, "the top level must be a mapping of settings"),
        ("backend: local\nbackend: sagemaker\n", 2, "duplicate key"),
    ],
)
def test_bad_config_file_is_one_error_with_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        read_config_file(path)
    assert str(raised.value).startswith(f"{path}:{line}: "), str(raised.value)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_unknown_profile_names_the_ones_there_are(tmp_path: Path) -> None:
    path = write_config(tmp_path, "backend: local\nprofiles:\n  dev: {}\n  ci: {backend: local}\n")
    with pytest.raises(ConfigError, match=r":2: profiles: no profile 'prod' \(profiles: dev, ci\)"):
        read_config_file(path, "prod")
    with pytest.raises(UserError, match="there is no config file"):
        Config.load("prod", {"XDG_CONFIG_HOME": str(tmp_path / "elsewhere")})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(UserError, match=r"^CLOUDTRAIN_REGION: must be a region such as us-east-1 \(got 'mars'\)$"):
        env_settings({"CLOUDTRAIN_REGION": "mars"})
    assert env_settings({"CLOUDTRAIN_BACKEND": " local ", "CLOUDTRAIN_REGION": ""}) == Settings(backend="local")


# --- through the command line ------------------------------------------------------------------------


def test_cli_uses_config_file_and_env_with_sources(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    write_config(
        xdg,
        """\
        backend: sagemaker
        role_arn: arn:aws:iam::123456789012:role/FromFile
        output_s3_uri: s3://file-bucket/prefix
        profiles:
          dev: {backend: local}
        """,
    )
    spec = spec_file(tmp_path)
    env = {
        "XDG_CONFIG_HOME": str(xdg),
        "CLOUDTRAIN_REGION": "eu-west-1",
        "CLOUDTRAIN_ROLE_ARN": "arn:aws:iam::123456789012:role/FromEnv",
        "CLOUDTRAIN_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: the dry run plans offline
    }
    home = tmp_path / "home"
    plan = cloudtrain("submit", str(spec), "--dry-run", "--json", home=home, env=env)
    assert plan.code == 0, plan.err
    request = plan.json()["plan"]["request"]
    assert plan.json()["job"]["backend"] == "sagemaker"  # the file's backend
    assert request["RoleArn"].endswith("role/FromEnv")  # the environment beats the file
    assert request["OutputDataConfig"]["S3OutputPath"] == "s3://file-bucket/prefix"  # the file fills a gap

    flag = cloudtrain(
        "submit", str(spec), "--dry-run", "--json", "--role-arn", VALUES["role_arn"]["cli"], home=home, env=env
    )
    assert flag.json()["plan"]["request"]["RoleArn"] == VALUES["role_arn"]["cli"]  # the command line beats all

    shown = cloudtrain("config", "--json", "--profile", "dev", home=home, env=env)
    assert shown.code == 0, shown.err
    settings = shown.json()["settings"]
    assert settings["backend"] == {"value": "local", "source": f"{xdg}/cloudtrain/config.yaml (profile dev)"}
    assert settings["region"] == {"value": "eu-west-1", "source": "CLOUDTRAIN_REGION"}
    table = cloudtrain("status", home=home, env={**env, "CLOUDTRAIN_PROFILE": "dev"})  # dev: local, no AWS
    assert table.code == 0 and "no jobs yet" in table.out, table.err


def test_cli_bad_config_file_is_one_line_exit_2(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    path = write_config(xdg, "backend: local\nregion: mars\n")
    result = cloudtrain("status", home=tmp_path / "home", env={"XDG_CONFIG_HOME": str(xdg)})
    assert result.code == 2
    assert result.err == f"error: {path}:2: region: must be a region such as us-east-1 (got 'mars')\n"
    shown = cloudtrain("config", "--json", home=tmp_path / "home", env={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert shown.code == 0 and json.loads(shown.out)["exists"] is False

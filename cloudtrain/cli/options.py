"""The options several commands share, declared once; `command_options` turns them into one `api.Options`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cloudtrain.api import Options

BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        help="local or sagemaker. Default: CLOUDTRAIN_BACKEND, the spec's, the config file's, else sagemaker where "
        "AWS is configured (keys or a profile in the environment, ~/.aws files), else local (cloudtrain config).",
    ),
]
JobBackendOpt = Annotated[
    str | None,
    typer.Option("--backend", "-b", help="local or sagemaker. Default: the backend the job was submitted to."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (cloudtrain schema --output-of).")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="AWS API endpoint. Default: CLOUDTRAIN_ENDPOINT_URL, config, AWS's."),
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS region. Default: CLOUDTRAIN_REGION, config.")]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        envvar="CLOUDTRAIN_PROFILE",
        help="A profile of cloudtrain's config file (not an AWS profile).",
        show_envvar=True,
    ),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a spec field: --set hyperparameters.epochs=3.")
]


def command_options(
    profile: str | None,
    *,
    backend: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    role_arn: str | None = None,
    container: bool = False,
) -> Options:
    """What the command line says, for `cloudtrain.api` to resolve with the environment, spec and config file
    (read now: a broken config file is said before anything else)."""
    from cloudtrain.api import Config, Options

    return Options(
        backend=backend,
        region=region,
        role_arn=role_arn,
        endpoint_url=endpoint_url,
        profile=profile,
        container=container,
        config=Config.load(profile),
    )

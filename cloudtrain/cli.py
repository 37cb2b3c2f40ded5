"""The `cloudtrain` command: parse arguments, call `cloudtrain.api`, render the result.

Exit codes: 0 success; 1 the job failed or was stopped (when waited for); 2 bad input;
3 the backend could not be reached; 4 `--timeout` passed while waiting; 130 interrupted.
Every user mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cloudtrain import __version__
from cloudtrain.errors import CloudtrainError, JobFailed

app = typer.Typer(
    help="Launch multi-worker TensorFlow training jobs on AWS SageMaker, or locally under the same contract.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

BackendOpt = Annotated[
    str | None,
    typer.Option("--backend", "-b", help="local or sagemaker. Default: the spec's, else sagemaker if AWS is set up."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document and nothing else.")]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="AWS API endpoint (default: AWS_ENDPOINT_URL or AWS's).")
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS region.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a spec field: --set hyperparameters.epochs=3.")
]


def _aws(endpoint_url: str | None, region: str | None):  # -> AwsOptions, imported lazily
    from cloudtrain.backends import AwsOptions

    return AwsOptions(region=region, endpoint_url=endpoint_url)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cloudtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Launch multi-worker TensorFlow training jobs on AWS SageMaker, or locally under the same contract."""


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="The job spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Stream status and logs until the job ends.")] = False,
    backend: BackendOpt = None,
    set_: SetOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Base job name (overrides the spec's).")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            envvar="CLOUDTRAIN_IDEMPOTENCY_KEY",
            help="Same key, same job: a retried submit reports the existing job instead of starting another.",
        ),
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Continue from this earlier job's last checkpoint.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the request and cost estimate; create nothing.")
    ] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="With --wait: give up after seconds.")] = None,
    stop_on_interrupt: Annotated[
        bool, typer.Option("--stop-on-interrupt", help="With --wait: Ctrl-C stops the job instead of detaching.")
    ] = False,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    json: JsonOpt = False,
) -> None:
    """Validate SPEC, package the code and start the training job."""
    from cloudtrain import api, render

    aws = _aws(endpoint_url, region)
    result = api.submit(
        spec,
        backend=backend,
        overrides=set_ or [],
        name=name,
        idempotency_key=idempotency_key,
        resume=resume,
        aws=aws,
        dry_run=dry_run,
    )
    job = result.job
    if dry_run:
        if json:
            render.print_json(result.to_json())
        else:
            render.plan(result.plan or {})
        return
    if not json:
        verb = "submitted" if result.created else "exists already (idempotency key)"
        render.console(stderr=True).print(f"job [bold]{job.name}[/] {verb} on {job.backend}")
    if wait:
        job = _follow(job.name, job.backend, aws, timeout, stop_on_interrupt, quiet=json)
    if json:
        render.print_json({**result.to_json(), "job": job.to_json()})
    elif wait:
        render.job_detail(job)
    else:
        render.console().print(f"follow it: cloudtrain logs {job.name} --follow")
    if wait and job.status != "Completed":
        raise JobFailed(f"job {job.name} ended {job.status}: {job.failure_reason or 'no reason given'}")


def _follow(job: str, backend: str, aws, timeout: float | None, stop_on_interrupt: bool, quiet: bool):
    from cloudtrain import api, render
    from cloudtrain.backends.base import LogEvent

    err = render.console(stderr=True)
    final = None
    try:
        for item in api.watch(job, backend=backend, aws=aws, timeout=timeout, with_logs=not quiet):
            if isinstance(item, LogEvent):
                render.log_line(item, err)
            else:
                final = item
                if not quiet:
                    err.print(f"status {render.styled_status(item)}")
    except KeyboardInterrupt:
        if stop_on_interrupt:
            api.stop(job, backend=backend, aws=aws)
            err.print(f"interrupted: stopping job {job}")
        else:
            err.print(f"detached: job {job} keeps running (cloudtrain status {job})")
        raise
    return final


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="A job name; without it, a table of recent jobs.")] = None,
    backend: BackendOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many recent jobs to list.")] = 20,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show one job in detail, or the recent jobs."""
    from cloudtrain import api, render

    aws = _aws(endpoint_url, region)
    if job is None:
        jobs = api.list_jobs(backend=backend, limit=limit, aws=aws)
        render.print_json([j.to_json() for j in jobs]) if json else render.job_table(jobs)
        return
    info = api.status(job, backend=backend, aws=aws)
    render.print_json(info.to_json()) if json else render.job_detail(info)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="The job name.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Only this host, e.g. algo-2.")] = None,
    backend: BackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print every host's log lines, merged in time order and tagged with the host."""
    import json as jsonlib

    from cloudtrain import api, render

    out = render.console()
    for event in api.logs(job, backend=backend, host=host, follow=follow, aws=_aws(endpoint_url, region)):
        if json:
            line = {"timestamp": event.timestamp, "host": event.host, "message": event.message}
            sys.stdout.write(jsonlib.dumps(line) + "\n")
            sys.stdout.flush()
        else:
            render.log_line(event, out)


@app.command()
def stop(
    job: Annotated[str, typer.Argument(help="The job name.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until the job has stopped.")] = False,
    backend: BackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    json: JsonOpt = False,
) -> None:
    """Stop a running job (its model so far is still saved)."""
    from cloudtrain import api, render

    aws = _aws(endpoint_url, region)
    info = api.stop(job, backend=backend, aws=aws)
    if wait:
        info = api.wait(job, backend=backend, aws=aws)
    render.print_json(info.to_json()) if json else render.console().print(f"{job}: {render.styled_status(info)}")


@app.command("fetch-model")
def fetch_model(
    job: Annotated[str, typer.Argument(help="The job name.")],
    to: Annotated[Path | None, typer.Option("--to", help="Destination folder (default ./JOB).")] = None,
    backend: BackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    json: JsonOpt = False,
) -> None:
    """Download the model, checkpoints and evaluation report, extracted safely."""
    from cloudtrain import api, render

    found = api.fetch_model(job, to=to, backend=backend, aws=_aws(endpoint_url, region))
    if json:
        render.print_json({k: str(v) if v else None for k, v in vars(found).items()})
        return
    render.console().print(f"fetched {job}:")
    render.artifacts(found)
    render.eval_summary(found)


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Job spec files.")],
    set_: SetOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check job specs; the first bad one is reported with its file, line and field."""
    from cloudtrain import api, render

    loaded = api.validate(specs, set_ or [])
    if json:
        render.print_json([{"file": str(p), "name": s.name, "valid": True} for p, s in zip(specs, loaded, strict=True)])
    else:
        for path, spec in zip(specs, loaded, strict=True):
            render.console().print(f"{path}: ok ({spec.name}, {spec.resources.instance_count} instance(s))")


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the job spec's JSON Schema, for editors (yaml-language-server) and CI checks."""
    import json as jsonlib

    from cloudtrain import api
    from cloudtrain.archive import atomic_path

    text = jsonlib.dumps(api.schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    with atomic_path(out) as tmp:
        tmp.write_text(text)


def main() -> None:
    """Run the CLI, turning every CloudtrainError into one line and its exit code."""
    from typer.exceptions import TyperException

    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="cloudtrain", standalone_mode=False)
    except CloudtrainError as e:
        _fail(str(e), e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except TyperException as e:  # usage errors: unknown option, missing argument, bad value
        _fail(e.format_message(), 2)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)

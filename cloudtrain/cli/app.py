"""The `cloudtrain` command: parse arguments, call `cloudtrain.api`, render the result.

Exit codes: 0 success; 1 the job failed or was stopped (when waited for); 2 bad input;
3 the backend could not be reached; 4 `--timeout` passed while waiting; 5 AWS refused a request;
130 interrupted (143 after SIGTERM, 129 after SIGHUP: a closed terminal).
Every user mistake is one line on stderr, never a traceback. Nothing heavy is imported until a
command runs, so `cloudtrain --help` and shell completion stay fast.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudtrain import __version__
from cloudtrain.cli.options import (
    BackendOpt,
    EndpointOpt,
    JobBackendOpt,
    JsonOpt,
    ProfileOpt,
    RegionOpt,
    SetOpt,
    command_options,
)
from cloudtrain.cli.output import OUTPUT_ERRNOS, finish_output
from cloudtrain.errors import (
    AwsRefused,
    BackendUnavailable,
    CloudtrainError,
    ExitCode,
    JobFailed,
    UserError,
    WaitTimeout,
)

if TYPE_CHECKING:
    from rich.console import Console

    from cloudtrain.api import Options, Submitted
    from cloudtrain.jobs import JobInfo

STOP_WAIT_S = 120.0  # how long Ctrl-C with --stop-on-interrupt waits for the job to reach Stopped
INTERRUPTED = ExitCode.INTERRUPTED
TERMINATED = ExitCode.TERMINATED
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # unwound as Ctrl-C is, exit 128 + the signal's number

app = typer.Typer(
    help="Launch multi-worker TensorFlow training jobs on AWS SageMaker, or locally under the same contract.",
    epilog=(
        "\b\nNew here? From nothing to a trained model on this machine:\n"
        "  cloudtrain init my-job                                    a spec, a training script, sample data\n"
        "  cloudtrain submit my-job/job.yaml --backend local --wait  train; prints the job's name\n"
        "  cloudtrain fetch-model JOB --to fetched                   the model and its evaluation report\n"
        "\nEach command's --help says more. Defaults (backend, region, role, output bucket) can live in\n"
        "CLOUDTRAIN_* variables or a config file: cloudtrain config --help."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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


@app.command(
    epilog=(
        "\b\nThen (init prints them too):\n"
        "  cloudtrain validate FOLDER/job.yaml\n"
        "  cloudtrain submit FOLDER/job.yaml --backend local --wait"
    )
)
def init(
    folder: Annotated[Path, typer.Argument(help="Where to write the project (created if missing).")] = Path("."),
    name: Annotated[str | None, typer.Option("--name", help="The job's name (default: the folder's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace files that exist already.")] = False,
) -> None:
    """Start a project that trains as it is.

    Writes a job spec, two TensorFlow training scripts (train.py with cloudtrain.runtime, train_keras.py with
    plain Keras model.fit) and a small synthetic data set under FOLDER, then prints the commands that take it
    to a trained model.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    done = api.init(folder, name=name, force=force)
    api.validate([done.spec])  # what init writes must pass validate
    render.initialized(done)


@app.command(epilog="\b\nThen: cloudtrain submit SPEC --wait")
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Job spec files.")],
    set_: SetOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check job specs.

    Each bad spec is one line on stderr with its file, line and field, and the exit code is 2.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    checks = api.check_specs(specs, set_ or [])
    render.spec_checks(checks, json=json)
    if any(c.error is not None for c in checks):
        raise typer.Exit(ExitCode.USER_ERROR)


@app.command(
    epilog=(
        "\b\nWithout --wait it returns once the job has started; then:\n"
        "  cloudtrain logs JOB --follow     watch it (every host's lines)\n"
        "  cloudtrain status JOB            where it is\n"
        "  cloudtrain fetch-model JOB       the model and evaluation report, once Completed\n"
        "\nWith --wait: exit code 0 if the job Completed, 1 if it Failed or was Stopped, 4 when --timeout\n"
        "passes (the job keeps running), 130 on Ctrl-C and 143 on SIGTERM (the job keeps running unless\n"
        "--stop-on-interrupt).\n"
        "With --json the document is printed once the job exists, whatever the exit code."
    )
)
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
        str | None,
        typer.Option("--resume", help="Start from this earlier job's checkpoints (copied into this job's own)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the request and cost estimate; create nothing.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="With --wait: stop waiting after this many seconds (exit 4).")
    ] = None,
    stop_on_interrupt: Annotated[
        bool,
        typer.Option("--stop-on-interrupt", help="With --wait: Ctrl-C or SIGTERM stops the job instead of detaching."),
    ] = False,
    role_arn: Annotated[
        str | None, typer.Option("--role-arn", help="SageMaker's IAM role. Default: CLOUDTRAIN_ROLE_ARN, spec, config.")
    ] = None,
    container: Annotated[
        bool,
        typer.Option(
            "--container",
            help="Local backend: run each host in a container of the job's image (image.build or image.uri), "
            "as SageMaker does. Needs a Docker engine.",
        ),
    ] = False,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Validate SPEC, package the code and start the training job."""
    from cloudtrain import api
    from cloudtrain.cli import render

    if (timeout is not None or stop_on_interrupt) and not wait:
        raise UserError("--timeout and --stop-on-interrupt apply to --wait; add --wait")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UserError(f"--timeout: give a number of seconds above 0 (got {timeout:g})")
    if resume is not None and not resume.strip():
        raise UserError("--resume: give the name of the job whose checkpoints to start from")
    options = command_options(
        profile, backend=backend, endpoint_url=endpoint_url, region=region, role_arn=role_arn, container=container
    )
    err = render.console(stderr=True)
    with render.transfer_progress(err, "data", quiet=json) as on_progress:
        result = api.submit(
            spec,
            options=options,
            overrides=set_ or [],
            name=name,
            idempotency_key=idempotency_key,
            resume=resume,
            dry_run=dry_run,
            on_note=lambda note: err.print(f"note: {render.neutralised(note)}", markup=False),
            on_progress=on_progress,
        )
    job = result.job
    for warning in result.warnings:
        render.warn(spec, warning)
    if result.sweep is not None or job.kind == "sweep":
        _submitted_sweep(result, options, wait=wait, timeout=timeout, json=json, dry_run=dry_run)
        return
    if dry_run:
        render.print_json(result.to_json()) if json else render.plan(result.plan or {})
        return
    verb = "submitted" if result.created else "exists already (same idempotency key)"
    err.print(f"job [bold]{job.name}[/] {verb} on {job.backend}")
    if not wait:
        render.print_json(result.to_json()) if json else render.next_steps(job)
        return
    final = _wait(result, options, timeout, stop_on_interrupt, json, err)
    if json:
        render.print_json({**result.to_json(), "job": final.to_json()})
    else:
        render.job_detail(final, api.metrics_note(final, options=replace(options, backend=final.backend)))
        render.next_steps(final)
    if final.status != "Completed":
        raise JobFailed(f"job {final.name} ended {final.status}: {final.failure_reason or 'no reason given'}")


def _submitted_sweep(
    result: Submitted, options: Options, *, wait: bool, timeout: float | None, json: bool, dry_run: bool
) -> None:
    """A sweep submitted (or planned): with --wait, a line per trial started or ended, then the sweep's table.

    Exit code 0 once the sweep ends Completed with a best trial, else 1.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    err = render.console(stderr=True)
    if dry_run:
        render.print_json(result.to_json()) if json else render.sweep_plan(result.plan or {})
        return
    name = result.job.name
    verb = "submitted" if result.created else "exists already (same idempotency key)"
    err.print(f"sweep [bold]{name}[/] {verb} on {result.job.backend}")
    info = result.sweep
    if wait:
        options = replace(options, backend=result.job.backend)
        seen: dict[str, str] = {}
        try:
            for info in api.watch_sweep(name, options=options, timeout=timeout):
                for number, trial in enumerate(info.trials, start=1):
                    if seen.get(trial.name) != trial.status:
                        seen[trial.name] = trial.status
                        objective = "" if trial.objective is None else f" {info.metric}={trial.objective:g}"
                        reason = f" ({trial.failure_reason})" if trial.failure_reason else ""
                        err.print(f"trial {number} {trial.name} {trial.status}{objective}{reason}", markup=False)
        except KeyboardInterrupt as interrupt:
            err.print(f"detached: sweep {name} keeps running; stop it: cloudtrain stop {name}", markup=False)
            raise typer.Exit(TERMINATED if isinstance(interrupt, _Terminated) else INTERRUPTED) from None
    if info is None:
        info = api.sweep_status(name, options=options)
    if json:
        render.print_json({**result.to_json(), "sweep": info.to_json(), "job": info.job.to_json()})
    else:
        render.sweep_detail(info)
        render.sweep_next_steps(info)
    if wait and (info.status != "Completed" or info.best is None):
        raise JobFailed(f"sweep {name} ended {info.status}: {info.failure_reason or 'no trial reached its objective'}")


def _wait(
    result: Submitted,
    options: Options,
    timeout: float | None,
    stop_on_interrupt: bool,
    json: bool,
    err: Console,
) -> JobInfo:
    """Follow the job to its end; a timeout, Ctrl-C or SIGTERM leaves it running (or stops it): exit 4, 130, 143.

    SIGTERM is what most CI systems (GitLab, Jenkins, Kubernetes, `timeout`) send a cancelled run, where
    GitHub Actions sends SIGINT: both mean the same here.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    job = result.job.name
    options = replace(options, backend=result.job.backend)
    try:
        return _follow(job, options, timeout, err)
    except (BackendUnavailable, AwsRefused) as e:  # credentials expired mid-wait, AWS unreachable or refusing
        raise type(e)(
            f"{e} while waiting; job {job} keeps running: cloudtrain status {job} (or logs {job} --follow) "
            "once AWS answers again"
        ) from None
    except WaitTimeout as e:
        if json:
            current = api.status(job, options=options)
            render.print_json({**result.to_json(), "job": current.to_json()})
        raise WaitTimeout(f"{e}; it keeps running: cloudtrain logs {job} --follow, or cloudtrain stop {job}") from None
    except KeyboardInterrupt as interrupt:
        final = _interrupted(job, options, stop_on_interrupt, err)
        if json:
            render.print_json({**result.to_json(), "job": final.to_json()})
        raise typer.Exit(_interrupted_code(interrupt)) from None


def _follow(job: str, options: Options, timeout: float | None, err: Console) -> JobInfo:
    """The job's status changes and log lines on stderr until it ends; its final state."""
    from cloudtrain import api
    from cloudtrain.cli import render
    from cloudtrain.cli.log_noise import StartupFolder
    from cloudtrain.jobs import LogEvent, LogsStopped

    final, shown = None, ""
    startup = StartupFolder(job)
    for item in api.watch(job, options=options, timeout=timeout):
        if isinstance(item, LogEvent):
            for line in startup.feed(item):
                render.log_line(line, err)
            continue
        for line in startup.flush() if isinstance(item, LogsStopped) or item.done else []:
            render.log_line(line, err)
        if isinstance(item, LogsStopped):
            err.print(f"logs stopped: {item.reason}; still waiting for the job's status", markup=False)
            continue
        final = item
        if (state := render.styled_status(item)) != shown:
            err.print(f"status {state}")
            shown = state
    assert final is not None  # watch always ends with the final JobInfo
    return final


def _interrupted(job: str, options: Options, stop_on_interrupt: bool, err: Console) -> JobInfo:
    """Stop the job and wait (a while) for it to be Stopped, or leave it running; either way say so."""
    from cloudtrain import api

    if not stop_on_interrupt:
        err.print(
            f"detached: job {job} keeps running. Follow it: cloudtrain logs {job} --follow; "
            f"stop it: cloudtrain stop {job}",
            markup=False,
        )
        return api.status(job, options=options)
    err.print(f"interrupted: stopping job {job}", markup=False)
    try:
        api.stop(job, options=options)
        final = api.wait(job, options=options, timeout=STOP_WAIT_S)
        err.print(f"job {job} {final.status}", markup=False)
        return final
    except (KeyboardInterrupt, WaitTimeout):  # a second signal, or a job slow to stop
        err.print(f"job {job} may still be stopping: cloudtrain status {job}", markup=False)
        return api.status(job, options=options)


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread by `main`'s one handler and handled as Ctrl-C is (a wait
    detaches or stops its job; exit code 128 + the signal rather than 130)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupted_code(interrupt: KeyboardInterrupt) -> int:
    return 128 + interrupt.signum if isinstance(interrupt, _Terminated) else INTERRUPTED


@app.command(epilog="\b\nThen: cloudtrain submit SPEC (it uses the image, and builds it first if ECR lacks the tag)")
def build(
    spec: Annotated[Path, typer.Argument(help="A job spec with image.build.")],
    push: Annotated[bool, typer.Option("--push", help="Push to ECR (creating the repository if missing).")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the exact build context and show the commands; run nothing.")
    ] = False,
    platform: Annotated[str, typer.Option("--platform", help="Target platform of the image.")] = "linux/amd64",
    context_out: Annotated[
        Path | None, typer.Option("--context-out", help="With --dry-run: where to write the context.")
    ] = None,
    set_: SetOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Build the spec's training image, tagged by a hash of everything in it; skip it if ECR has that tag."""
    from cloudtrain import api
    from cloudtrain.cli import render

    err = render.console(stderr=True)
    result = api.build(
        spec,
        options=command_options(profile, endpoint_url=endpoint_url, region=region),
        overrides=set_ or [],
        push=push,
        dry_run=dry_run,
        platform=platform,
        context_out=context_out,
        on_line=lambda line: err.print(line, markup=False, highlight=False),
    )
    render.print_json(result.to_json()) if json else render.build_result(result)


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="A job name; without it, a table of recent jobs.")] = None,
    backend: JobBackendOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many recent jobs to list.")] = 20,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show a job or a sweep (and what to run next), or the recent jobs.

    A sweep shows its counters, its best trial and every trial sorted by the objective.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    options = command_options(profile, backend=backend, endpoint_url=endpoint_url, region=region)
    if job is None:
        jobs = api.list_jobs(options=options, limit=limit)
        render.print_json([j.to_json() for j in jobs]) if json else render.job_table(jobs)
        return
    if api.is_sweep(job, options=options):
        sweep = api.sweep_status(job, options=options)
        render.print_json(sweep.to_json()) if json else (render.sweep_detail(sweep), render.sweep_next_steps(sweep))
        return
    info = api.status(job, options=options)
    if json:
        render.print_json(info.to_json())
        return
    render.job_detail(info, api.metrics_note(info, options=options))
    render.next_steps(info)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="The job name.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Only this host, e.g. algo-2.")] = None,
    trial: Annotated[
        str | None, typer.Option("--trial", help="Of a sweep: this trial (its number or job name; default the best).")
    ] = None,
    backend: JobBackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line (schema: logs).")] = False,
    all_lines: Annotated[
        bool, typer.Option("--all", help="Every line as written: TensorFlow's start-up lines, whole progress bars.")
    ] = False,
) -> None:
    """Print a job's log lines.

    Every host's lines, merged in time order and tagged with the host, each printed as it arrives. Unless --all
    (or --json): TensorFlow's start-up notices (oneDNN, absl, CPU instructions, CUDA plug-ins), harmless and
    printed by every worker, are folded into one line per host, and a progress bar (Keras's verbose=1) shows
    its last state.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    options = command_options(profile, backend=backend, endpoint_url=endpoint_url, region=region)
    out = render.console()
    events = api.logs(job, options=options, host=host, follow=follow, trial=trial)
    try:
        if json:
            for event in events:
                render.log_json(event)
            return
        if not all_lines:
            from cloudtrain.cli.log_noise import fold_startup

            events = fold_startup(events, job)
        for event in events:
            render.log_line(event, out)
    except (BackendUnavailable, AwsRefused) as e:
        if not follow:
            raise
        raise type(e)(f"{e}; job {job} keeps running: cloudtrain logs {job} --follow once AWS answers again") from None


@app.command()
def stop(
    job: Annotated[str, typer.Argument(help="The job name.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until the job has stopped.")] = False,
    backend: JobBackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Stop a running job (its model so far is still saved), or a sweep (its running trials, likewise)."""
    from cloudtrain import api
    from cloudtrain.cli import render

    options = command_options(profile, backend=backend, endpoint_url=endpoint_url, region=region)
    if api.is_sweep(job, options=options):
        sweep = api.stop_sweep(job, options=options)
        if wait:
            *_, sweep = api.watch_sweep(job, options=options)
        render.print_json(sweep.to_json()) if json else render.console().print(f"{job}: {sweep.status}", markup=False)
        return
    info = api.stop(job, options=options)
    if wait:
        info = api.wait(job, options=options)
    render.print_json(info.to_json()) if json else render.console().print(f"{job}: {render.styled_status(info)}")


@app.command("fetch-model", epilog="\b\nThen, to see how it did against another run: cloudtrain compare JOB OTHER_JOB")
def fetch_model(
    job: Annotated[str, typer.Argument(help="The job name.")],
    to: Annotated[Path | None, typer.Option("--to", help="Destination folder (default ./JOB).")] = None,
    trial: Annotated[
        str | None, typer.Option("--trial", help="Of a sweep: this trial (its number or job name; default the best).")
    ] = None,
    backend: JobBackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Download a job's model, output, checkpoints and TensorBoard files.

    Extracts (safely) under --to: model/ (what the script saved in SM_MODEL_DIR, e.g. model.keras; 1/ is a
    SavedModel for TF Serving, from cloudtrain.runtime), output/ (eval_report.json, plots), checkpoints/ and
    tensorboard/. Load the model with tf.keras.models.load_model('DIR/model/model.keras'). Of a sweep: the best
    trial's (or --trial's), plus sweep_report.html (Optuna's figures) and sweep_trials.csv.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    options = command_options(profile, backend=backend, endpoint_url=endpoint_url, region=region)
    found = api.fetch_model(job, to=to, options=options, trial=trial)
    if json:
        render.print_json(render.fetched_json(job, found))
        return
    render.console().print(f"fetched {job}:", markup=False)
    render.artifacts(found)
    render.eval_summary(found)


@app.command(
    epilog=(
        "\b\nEach job is a run named after it. While a job runs its new event files are fetched every few seconds\n"
        "(from S3 for SageMaker jobs). The files come from cloudtrain.runtime's fit, or from any script that writes\n"
        "to /opt/ml/output/tensorboard, e.g. tf.keras.callbacks.TensorBoard(log_dir=...). Needs tensorboard\n"
        "(pip install tensorboard). Ctrl-C stops it (exit code 130) and leaves nothing running."
    )
)
def tensorboard(
    jobs: Annotated[list[str], typer.Argument(help="One or more job names.")],
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port on 127.0.0.1 (default 6006, or a free one)."),
    ] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Do not open a browser; just print the URL.")
    ] = False,
    backend: JobBackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Watch jobs' learning curves in TensorBoard.

    Serves TensorBoard on 127.0.0.1 with the jobs' event files, updated while they run.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    options = command_options(profile, backend=backend, endpoint_url=endpoint_url, region=region)
    err = render.console(stderr=True)

    def ready(url: str) -> None:
        render.console().print(f"TensorBoard at {url}  (Ctrl-C to stop)", markup=False)
        if not no_browser:
            api.open_browser(url)

    try:
        api.tensorboard(
            jobs,
            port=port,
            options=options,
            on_ready=ready,
            on_note=lambda line: err.print(f"note: {line}", markup=False),
        )
    except KeyboardInterrupt as interrupt:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            err.print("TensorBoard stopped", markup=False)
        raise typer.Exit(_interrupted_code(interrupt)) from None


@app.command()
def compare(
    jobs: Annotated[list[str], typer.Argument(help="Two (or more) job names.")],
    backend: JobBackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Compare jobs side by side.

    The spec fields that differ, the code hashes, the final metrics and the evaluation accuracy and loss.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    options = command_options(profile, backend=backend, endpoint_url=endpoint_url, region=region)
    result = api.compare(jobs, options=options)
    render.print_json(result.to_json()) if json else render.comparison(result)


@app.command(
    epilog=(
        "\b\nThe file ($XDG_CONFIG_HOME/cloudtrain/config.yaml, default ~/.config/cloudtrain/config.yaml):\n"
        "  backend: sagemaker\n"
        "  region: eu-west-1\n"
        "  role_arn: arn:aws:iam::123456789012:role/SageMakerRole\n"
        "  output_s3_uri: s3://my-bucket/cloudtrain\n"
        "  endpoint_url: http://localhost:5000      # rarely: a stand-in for AWS\n"
        "  profiles:\n"
        "    dev: {backend: local}                  # --profile dev or CLOUDTRAIN_PROFILE=dev\n"
        "\nThe first that gives a setting wins: the command line, CLOUDTRAIN_BACKEND / CLOUDTRAIN_REGION /\n"
        "CLOUDTRAIN_ROLE_ARN / CLOUDTRAIN_OUTPUT_S3_URI / CLOUDTRAIN_ENDPOINT_URL, the job spec, the file."
    )
)
def config(
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Also show what this spec sets, as submit would see it.")
    ] = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show the default settings and where each comes from.

    backend, region, role_arn, output_s3_uri and endpoint_url, from the environment and the config file.
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    report = api.config(options=command_options(profile), spec=spec)
    render.print_json(report.to_json()) if json else render.settings(report)


@app.command(
    epilog="\b\nThe permissions cloudtrain needs: docs/iam-policy.json (yours), docs/iam-job-role-policy.json."
)
def doctor(
    role_arn: Annotated[
        str | None, typer.Option("--role-arn", help="SageMaker's IAM role. Default: CLOUDTRAIN_ROLE_ARN, config.")
    ] = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check the AWS set-up: region, credentials, SageMaker's role, the output bucket.

    Reads only. Exit code 0 when nothing failed, 3 when AWS cannot be reached as configured, 5 when a
    submit would be refused (a role SageMaker cannot assume, a bucket of another account or region).
    """
    from cloudtrain import api
    from cloudtrain.cli import render

    options = command_options(profile, endpoint_url=endpoint_url, region=region, role_arn=role_arn)
    result = api.doctor(options=options)
    render.print_json(result.to_json()) if json else render.diagnosis(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command(
    epilog="\b\nEvery field with its type, default, allowed values, what AWS does with it and an example, from the\n"
    "same models: docs/spec-reference.md (scripts/spec-reference writes it)."
)
def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    output_of: Annotated[
        str | None,
        typer.Option(
            "--output-of",
            help="Instead, the schema of a command's --json output: submit, status, status-sweep, status-list, "
            "stop, fetch-model, validate, logs, compare, config, build, doctor.",
        ),
    ] = None,
) -> None:
    """Print the job spec's JSON Schema, or an output's.

    For editors (yaml-language-server) and CI checks; every field has a description. --output-of gives a
    command's --json shape.
    """
    import json

    from cloudtrain import api

    document = api.schema(output_of=output_of, out=out)
    if out is None:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")


def main() -> None:
    """Run the CLI, turning every CloudtrainError into one line and its exit code."""
    from typer.exceptions import TyperException

    command = typer.main.get_command(app)
    # SIGTERM and SIGHUP (a closed terminal) unwind as Ctrl-C does, so every command cleans up after itself
    # (temporary files, a half-made job folder) before it exits 128 + the signal, rather than dying where it stands.
    terminated: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        terminated.append(signum)  # typer turns the interrupt into exit code 130: this says which signal it was
        raise _Terminated(signum)

    for sig in ENDING_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        code = command.main(prog_name="cloudtrain", standalone_mode=False)
        if terminated and code == INTERRUPTED:
            code = 128 + terminated[0]
        finish_output()
    except CloudtrainError as e:
        _fail(str(e), e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except TyperException as e:  # usage errors: unknown option, missing argument, bad value
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `cloudtrain` (narrow terminal): the help itself
            sys.stderr.write(e.format_message() + "\n")
            sys.exit(ExitCode.USER_ERROR)
        _fail(e.format_message(), ExitCode.USER_ERROR)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(128 + terminated[0] if terminated else INTERRUPTED)
    except BrokenPipeError:
        finish_output()
        sys.exit(0)
    except OSError as e:
        if e.errno not in OUTPUT_ERRNOS:
            raise
        finish_output()
        _fail(f"cannot write the output: {e.strerror}", ExitCode.USER_ERROR)
    except SystemExit as e:  # typer exits 1 on EPIPE; a reader that has what it wanted (`| head`) is no error
        if isinstance(e.__context__, BrokenPipeError):
            finish_output()
            sys.exit(0)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    from cloudtrain.cli.render import neutralised

    sys.stderr.write(f"error: {neutralised(message)}\n")  # a failure reason comes from the job
    sys.exit(code)

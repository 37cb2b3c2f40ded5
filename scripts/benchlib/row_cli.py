"""Rows `help`, `startup`, `status` and `status-finished`: start-up cost of the CLI against the AWS CLI's (the one
scripts/setup installs)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchlib.aws import CountingProxy
from benchlib.context import Context, write_spec
from benchlib.core import AWS, CLOUDTRAIN, Row, Stats, interleave, ratio_text

HELP_TARGET = 0.25


def _commands(ctx: Context) -> list[str]:
    """The commands `cloudtrain --help` lists (its Commands: section), so a new command is measured too."""
    out = ctx.processes.run([str(CLOUDTRAIN), "--help"], env=ctx.base_env).check("cloudtrain --help").out
    section = out.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]
    if not commands:
        raise RuntimeError("cloudtrain --help lists no commands")
    return commands


def help_row(ctx: Context) -> Row:
    """`--help`, `--version` and every command's `--help`, each against the real `aws --version`."""
    env = ctx.base_env
    variants = [["--help"], ["--version"], *([c, "--help"] for c in _commands(ctx))]
    runs = ctx.runs(15, 3)
    ctx.log(f"help: {runs} rounds of {len(variants)} cloudtrain invocations and `aws --version`, interleaved")
    for args in variants:
        first = ctx.processes.run([str(CLOUDTRAIN), *args], env=env).check(f"cloudtrain {' '.join(args)}")
        if not first.out.strip():
            raise RuntimeError(f"cloudtrain {' '.join(args)} printed nothing")

    def timed(cmd: list[str]) -> Callable[[], float]:
        return lambda: ctx.processes.run(cmd, env=env).check(" ".join(cmd[-2:])).wall

    labels = [" ".join(args) for args in variants]
    results = interleave(
        [
            *((label, timed([str(CLOUDTRAIN), *args])) for label, args in zip(labels, variants, strict=True)),
            ("aws", timed([AWS, "--version"])),
        ],
        runs,
    )
    ratios = {label: ratio_text(results[label], results["aws"]) for label in labels}
    worst = max(labels, key=lambda label: ratios[label][0])
    return Row(
        name="help",
        title="`cloudtrain --help`, `--version` and every command's `--help`: wall time",
        figure=f"slowest, `cloudtrain {worst}`: {Stats.of(results[worst]).fmt()}",
        against=f"`aws --version` {Stats.of(results['aws']).fmt()}",
        ratio=f"{ratios[worst][1]} (slowest of {len(labels)})",
        target=f"≤ {HELP_TARGET}x each",
        met=all(r <= HELP_TARGET for r, _ in ratios.values()),
        commands=[f"{CLOUDTRAIN} {label}" for label in labels] + [f"{AWS} --version"],
        details=[
            "None reads AWS configuration or makes a request; this is interpreter start plus imports. "
            f"`aws` is the AWS CLI scripts/setup installs ({AWS}), never a shim.",
            "Each, median and ratio to `aws --version` (pairs are rounds): "
            + "; ".join(f"`{label}` {Stats.of(results[label]).median:.4f} s, {ratios[label][1]}" for label in labels),
        ],
        data={
            "aws_s": results["aws"],
            "cloudtrain_s": {label: results[label] for label in labels},
            "ratio": {label: ratios[label][0] for label in labels},
        },
    )


def startup_row(ctx: Context) -> Row:
    """A real command through the whole command-line path (`validate` of a spec: options, settings, the spec's
    models, the rendering), where `help` times text printed before anything is imported."""
    code = ctx.folder("startup-code")
    (code / "train.py").write_text("print('bench')\n")
    spec = write_spec(code.parent / "startup-spec.json", name="bench-startup", source_dir=code, backend="sagemaker")
    env = ctx.base_env
    ct = [str(CLOUDTRAIN), "validate", str(spec)]
    aws = [AWS, "--version"]
    ctx.processes.run(ct, env=env).check("cloudtrain validate")
    runs = ctx.runs(15, 3)
    ctx.log(f"startup: {runs} interleaved runs of `cloudtrain validate SPEC` and `aws --version`")
    results = interleave(
        [
            ("cloudtrain", lambda: ctx.processes.run(ct, env=env).check("cloudtrain validate").wall),
            ("aws", lambda: ctx.processes.run(aws, env=env).check("aws --version").wall),
        ],
        runs,
    )
    ratio, text = ratio_text(results["cloudtrain"], results["aws"])
    return Row(
        name="startup",
        title="`cloudtrain validate SPEC`: a real command's start-up, wall time",
        figure=Stats.of(results["cloudtrain"]).fmt(),
        against=f"`aws --version` {Stats.of(results['aws']).fmt()}",
        ratio=text,
        target="≤ 1.0x",
        met=ratio <= 1.0,
        commands=[" ".join(ct), " ".join(aws)],
        details=[
            "The whole command-line path of a command that does work: typer's parsing, settings, the spec's "
            "pydantic models and their checks, the rendering; no AWS request (row status: one that asks AWS). "
            "`aws --version` is the AWS CLI's own start-up, the least any `aws` command costs."
        ],
        data={"cloudtrain_s": results["cloudtrain"], "aws_s": results["aws"], "ratio": ratio},
    )


def _status_job(ctx: Context, row: str, job_name: str) -> tuple[str, Path, dict[str, str], list[str], list[str]]:
    """A SageMaker job on moto made with `cloudtrain submit`: (moto's URL, the home, its environment, the
    `cloudtrain status` and `aws sagemaker describe-training-job` command lines)."""
    moto_url = ctx.moto().url
    home = ctx.folder(f"{row}-home")
    code = ctx.folder(f"{row}-code")
    (code / "train.py").write_text("print('bench')\n")
    spec = write_spec(code.parent / f"{row}-spec.json", name=job_name, source_dir=code, backend="sagemaker")
    env = ctx.aws_env(moto_url, home)
    job = ctx.submit(spec, env)
    ct = [str(CLOUDTRAIN), "status", job, "--json"]
    aws = [AWS, "sagemaker", "describe-training-job", "--training-job-name", job]
    return moto_url, home, env, ct, aws


def status_row(ctx: Context) -> Row:
    moto_url, _, env, ct, aws = _status_job(ctx, "status", "bench-status")

    def unseen_env() -> dict[str, str]:
        """A home that has not seen the job end (moto's jobs end at once): status asks AWS, as for a running job."""
        return ctx.aws_env(moto_url, ctx.folder("status-home"))

    for cmd in (ct, aws):
        out = ctx.processes.run(cmd, env=unseen_env()).check(" ".join(cmd[:3]))
        json.loads(out.out)  # both print one JSON document
    calls = {
        name: _calls(ctx, cmd, ctx.folder("status-home"), moto_url) for name, cmd in (("cloudtrain", ct), ("aws", aws))
    }
    return _status_row(
        ctx,
        name="status",
        title="`cloudtrain status JOB --json` wall time",
        target=1.0,
        commands=(ct, aws),
        envs=(unseen_env, lambda: env),
        moto_url=moto_url,
        calls=calls,
        notes=[
            "Endpoint: moto's server on loopback, started by the bench; the job was made with `cloudtrain submit`.",
            "Each cloudtrain run has a home that has not seen the job end, so it asks AWS as for a running job "
            "(row status-finished: a job it has seen end).",
        ],
    )


def status_finished_row(ctx: Context) -> Row:
    """A finished job's status, answered from the job store, against AWS's CLI describing it."""
    moto_url, home, env, ct, aws = _status_job(ctx, "status-finished", "bench-done")
    seen = json.loads(ctx.processes.run(ct, env=env).check("cloudtrain status").out)  # sees it end: recorded
    if seen["status"] != "Completed":
        raise RuntimeError(f"moto's job is {seen['status']}, not Completed")
    json.loads(ctx.processes.run(aws, env=env).check("aws describe-training-job").out)
    calls = {name: _calls(ctx, cmd, home, moto_url) for name, cmd in (("cloudtrain", ct), ("aws", aws))}
    return _status_row(
        ctx,
        name="status-finished",
        title="`cloudtrain status JOB --json` of a finished job (a cache hit: the job store, no AWS call), wall time",
        target=0.2,
        commands=(ct, aws),
        envs=(lambda: env, lambda: env),
        moto_url=moto_url,
        calls=calls,
        notes=[
            "A cache hit: a job cloudtrain has seen end (one earlier `status`) is answered from the job store, "
            "without any AWS request (a finished SageMaker job does not change); `aws` describes it every time. "
            "Row status: a job cloudtrain has not seen end."
        ],
    )


def _status_row(
    ctx: Context,
    *,
    name: str,
    title: str,
    target: float,
    commands: tuple[list[str], list[str]],
    envs: tuple[Callable[[], dict[str, str]], Callable[[], dict[str, str]]],
    moto_url: str,
    calls: dict[str, dict[str, int]],
    notes: list[str],
) -> Row:
    """`cloudtrain status` against `aws sagemaker describe-training-job`, interleaved, as one row."""
    (ct, aws), (ct_env, aws_env) = commands, envs
    runs = ctx.runs(11, 3)
    ctx.log(f"{name}: {runs} interleaved runs of `cloudtrain status` and `aws sagemaker describe-training-job`")
    results = interleave(
        [
            ("cloudtrain", lambda: ctx.processes.run(ct, env=ct_env()).check("cloudtrain status").wall),
            ("aws", lambda: ctx.processes.run(aws, env=aws_env()).check("aws describe-training-job").wall),
        ],
        runs,
    )
    a, b = Stats.of(results["cloudtrain"]), Stats.of(results["aws"])
    ratio, text = ratio_text(results["cloudtrain"], results["aws"])
    return Row(
        name=name,
        title=title,
        figure=a.fmt(),
        against=f"`aws sagemaker describe-training-job` {b.fmt()}",
        ratio=text,
        target=f"≤ {target:.1f}x",
        met=ratio <= target,
        commands=[f"AWS_ENDPOINT_URL={moto_url} {' '.join(ct)}", f"AWS_ENDPOINT_URL={moto_url} {' '.join(aws)}"],
        details=[
            *notes,
            f"Requests per call (through a counting proxy, untimed): cloudtrain {_fmt_calls(calls['cloudtrain'])}; "
            f"aws {_fmt_calls(calls['aws'])}.",
        ],
        data={"cloudtrain_s": results["cloudtrain"], "aws_s": results["aws"], "ratio": ratio, "calls": calls},
    )


def _calls(ctx: Context, cmd: list[str], home: Path, upstream: str) -> dict[str, int]:
    """Which AWS requests one run of cmd makes (an extra, untimed run through a counting proxy)."""
    proxy = CountingProxy(upstream)
    try:
        env = ctx.aws_env(proxy.url, home)
        ctx.processes.run(cmd, env=env).check(" ".join(cmd[:3]))
        return dict(Counter(s.operation for s in proxy.seen))
    finally:
        proxy.close()


def _fmt_calls(calls: dict[str, int]) -> str:
    return ", ".join(f"{op}x{n}" if n > 1 else op for op, n in sorted(calls.items())) or "none"

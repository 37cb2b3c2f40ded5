"""Secrets stay secret: no command's output, no job record and no file under CLOUDTRAIN_HOME shows them.

The secrets are the values of a spec's `environment` entries whose names look secret (`*_KEY`, `*_SECRET`,
`*_TOKEN`, `*PASSWORD*`) and the AWS credentials in the environment. Outputs show `***` in their place;
what is sent (the CreateTrainingJob request, the local workers' environment) still carries the real values.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import boto3

from tests.clirun import Result, cloudtrain
from tests.faultproxy import Fault, FaultProxy
from tests.test_faults import aws_env

SECRET_ENV = {
    "WANDB_API_KEY": "wandb-5ecret-0001",
    "DB_PASSWORD": "db-5ecret-0002",
    "HF_TOKEN": "hf-5ecret-0003",
    "OAUTH_CLIENT_SECRET": "oauth-5ecret-0004",
}
PLAIN_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAFAULTTEST5ECRET1", "AWS_SECRET_ACCESS_KEY": "aws-5ecret-key-0005/abc+def"}
SECRETS = [*SECRET_ENV.values(), *AWS_CREDENTIALS.values()]

# The job prints a digest of each value it received: proof it got the real thing, without printing it.
SCRIPT = f"""\
    import hashlib, json, os
    names = {sorted(SECRET_ENV)!r}
    got = {{k: hashlib.sha256(os.environ[k].encode()).hexdigest()[:16] for k in names}}
    print("received " + json.dumps(got, sort_keys=True), flush=True)
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
        open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "w").write("w")
    """


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def project(root: Path) -> Path:
    """A small job whose spec has secret-looking environment entries and one plain one."""
    (root / "code").mkdir(parents=True)
    (root / "code" / "train.py").write_text(textwrap.dedent(SCRIPT))
    (root / "data").mkdir()
    (root / "data" / "x.csv").write_text("1,2\n")
    environment = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in {**SECRET_ENV, **PLAIN_ENV}.items())
    spec = root / "job.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            name: secretive
            code: {source_dir: code, entry_point: train.py}
            resources: {instance_type: ml.m5.xlarge, instance_count: 2}
            data: {train: data}
            aws: {region: us-east-1}
            environment:
            """
        )
        + environment
        + "\n"
    )
    return spec


def leaked(*results: Result) -> list[str]:
    """The secrets that appear in any of these outputs."""
    text = "\n".join(r.out + r.err for r in results)
    return [s for s in SECRETS if s in text]


def leaked_in_files(home: Path) -> dict[str, list[str]]:
    """Files under home that hold a secret (as bytes: SQLite pages, WAL, logs, JSON, tarballs)."""
    found = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits = [s for s in SECRETS if s.encode() in data]
            if hits:
                found[str(path.relative_to(home))] = hits
    return found


def shown_environment(text: str) -> dict[str, str]:
    """The spec's environment entries as a dry run shows them (JSON), secret names only and the plain one."""
    wanted = {*SECRET_ENV, *PLAIN_ENV}
    found: dict[str, str] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in wanted and isinstance(value, str):
                    found[key] = value
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(text))
    return found


EXPECTED_SHOWN = {**dict.fromkeys(SECRET_ENV, "***"), **PLAIN_ENV}


def test_sagemaker_commands_never_show_secrets(aws_endpoint: str, tmp_path: Path) -> None:
    spec, home = project(tmp_path), tmp_path / "home"
    env = {**aws_env(aws_endpoint), **AWS_CREDENTIALS}

    def run(*args: str) -> Result:
        return cloudtrain(*args, home=home, env=env)

    dry = run("submit", str(spec), "--backend", "sagemaker", "--dry-run")
    dry_json = run("submit", str(spec), "--backend", "sagemaker", "--dry-run", "--json")
    assert dry.code == 0 and dry_json.code == 0, dry.err + dry_json.err
    assert dry_json.json()["plan"]["request"]["Environment"] == {
        **EXPECTED_SHOWN,
        "TF_USE_LEGACY_KERAS": "1",  # distribution.keras: auto, MWMS on 2 instances
        **{k: v for k, v in dry_json.json()["plan"]["request"]["Environment"].items() if k.startswith("CLOUDTRAIN_")},
    }
    assert '"DB_PASSWORD": "***"' in dry.out and '"TF_CPP_MIN_LOG_LEVEL": "2"' in dry.out

    with FaultProxy(aws_endpoint) as wire:  # no faults: it only records what is sent
        submitted = cloudtrain(
            "submit",
            str(spec),
            "--backend",
            "sagemaker",
            "--json",
            home=home,
            env={**env, "AWS_ENDPOINT_URL": wire.url},
        )
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]
    (create,) = wire.seen("CreateTrainingJob")
    sent = create.json()["Environment"]
    assert {k: sent[k] for k in SECRET_ENV} == SECRET_ENV, "only the output is redacted, not the request"

    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{job}/algo-1-1700000000")
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=f"{job}/algo-1-1700000000",
        logEvents=[{"timestamp": 1_700_000_000_000, "message": "epoch=1 loss=0.5"}],
    )
    outputs = [
        dry,
        dry_json,
        submitted,
        run("submit", str(spec), "--backend", "sagemaker"),
        run("status", job),
        run("status", job, "--json"),
        run("status", "--backend", "sagemaker"),
        run("logs", job),
        run("fetch-model", job, "--to", str(tmp_path / "model")),
    ]
    assert all(r.code == 0 for r in outputs), [r.err for r in outputs if r.code]
    assert leaked(*outputs) == []
    assert leaked_in_files(home) == {}


def test_local_commands_and_job_files_never_show_secrets(tmp_path: Path) -> None:
    spec, home = project(tmp_path), tmp_path / "home"
    env = AWS_CREDENTIALS  # configured, but the local backend is chosen: they must not surface either

    def run(*args: str) -> Result:
        return cloudtrain(*args, home=home, env=env)

    dry_json = run("submit", str(spec), "--backend", "local", "--dry-run", "--json")
    assert dry_json.code == 0, dry_json.err
    assert shown_environment(json.dumps(dry_json.json()["plan"])) == EXPECTED_SHOWN

    submitted = run("submit", str(spec), "--backend", "local", "--wait", "--json")
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["name"]
    logs = run("logs", job)
    received = {line.split("received ", 1)[1] for line in logs.out.splitlines() if "received " in line}
    assert received == {json.dumps({k: digest(v) for k, v in sorted(SECRET_ENV.items())}, sort_keys=True)}, (
        "both workers got the real values"
    )
    outputs = [
        dry_json,
        run("submit", str(spec), "--backend", "local", "--dry-run"),
        submitted,
        logs,
        run("status", job),
        run("status", job, "--json"),
        run("status", "--backend", "local"),
        run("fetch-model", job, "--to", str(tmp_path / "model")),
    ]
    assert all(r.code == 0 for r in outputs), [r.err for r in outputs if r.code]
    assert leaked(*outputs) == []
    assert leaked_in_files(home) == {}, "not in jobs.db, runner.json, host folders or log streams"


def test_an_error_that_echoes_the_credentials_does_not_show_them(aws_endpoint: str, tmp_path: Path) -> None:
    """An endpoint (a proxy, a misconfigured gateway) whose error message repeats the request's credentials."""
    spec = project(tmp_path)
    echo = Fault(
        "error",
        service="sagemaker",
        operation="CreateTrainingJob",
        status=400,
        code="AccessDeniedException",
        message=(
            f"User with access key {AWS_CREDENTIALS['AWS_ACCESS_KEY_ID']} and secret "
            f"{AWS_CREDENTIALS['AWS_SECRET_ACCESS_KEY']} is not authorized to perform: sagemaker:CreateTrainingJob"
        ),
    )
    with FaultProxy(aws_endpoint, [echo]) as proxy:
        failed = cloudtrain(
            "submit",
            str(spec),
            "--backend",
            "sagemaker",
            home=tmp_path / "home",
            env={**aws_env(proxy.url), **AWS_CREDENTIALS},
        )
    assert echo.hits == 1
    assert failed.code == 5 and "not authorized" in failed.err, failed.err  # AWS refused the request
    assert leaked(failed) == []


def test_a_secret_of_the_wrong_type_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    """`DB_PASSWORD: 86753091` (unquoted: a number) is an error that says so without repeating the value."""
    spec = project(tmp_path)
    spec.write_text(spec.read_text().replace('DB_PASSWORD: "db-5ecret-0002"', "DB_PASSWORD: 86753091"))
    checked = cloudtrain("validate", str(spec), home=tmp_path / "home")
    assert checked.code == 2 and "environment.DB_PASSWORD" in checked.err, checked.err
    assert "86753091" not in checked.err, checked.err

"""The in-container entry point: the contract's config files in, the user's script run under SM_* variables.

What `docker run IMAGE train` runs in cloudtrain's own image, and what the local backend runs once per
host, so a script sees the same environment as under the sagemaker-training toolkit (see
docs/container-contract.md). Stdlib only, and only cloudtrain.runtime imports: it ships inside the
code tarball to AWS's images, where cloudtrain itself is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from cloudtrain.runtime import contract
from cloudtrain.runtime.buckets import expected_owner, location_region
from cloudtrain.runtime.env import (
    CHECKPOINT_DIR_VARIABLE,
    HOST_ADDRESSES_VARIABLE,
    LOCAL_VARIABLE,
    _decode_hyperparameter,
    build_tf_config,
    failure_file,
    opt_ml_root,
    write_failure,
)
from cloudtrain.runtime.failures import explain
from cloudtrain.runtime.reaper import become_subreaper, end_leftovers

REQUIREMENTS = "requirements.txt"
_REQUIREMENT_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
STDERR_DRAIN_S = 5.0


class LauncherError(Exception):
    """The contract's files or the code are not usable; the message becomes the job's FailureReason."""


@dataclass(frozen=True)
class ContainerConfig:
    """The three files under `<root>/input/config`, hyperparameters already JSON-decoded."""

    root: Path
    hyperparameters: dict[str, Any]
    resource_config: dict[str, Any]
    input_data_config: dict[str, Any]

    @classmethod
    def read(cls, root: Path) -> ContainerConfig:
        config = root / "input" / "config"
        hps = _read_json(config / "hyperparameters.json", default={})
        resources = _read_json(config / "resourceconfig.json", default=None)
        if not isinstance(resources, dict) or resources.get("current_host") not in (resources.get("hosts") or []):
            raise LauncherError(f"{config / 'resourceconfig.json'} must name the hosts and the current host among them")
        return cls(
            root=root,
            hyperparameters={k: _decode_hyperparameter(v) for k, v in hps.items()},
            resource_config=resources,
            input_data_config=_read_json(config / "inputdataconfig.json", default={}),
        )

    @property
    def hosts(self) -> list[str]:
        return list(self.resource_config["hosts"])

    @property
    def current_host(self) -> str:
        return str(self.resource_config["current_host"])

    @property
    def entry_point(self) -> str:
        program = self.hyperparameters.get("sagemaker_program")
        if not program:
            raise LauncherError("hyperparameters.json has no sagemaker_program (the entry point)")
        return str(program)

    @property
    def mwms(self) -> bool:
        return bool(contract.framework_parameters(self.hyperparameters).get(contract.MWMS_HYPERPARAMETER, False))

    @property
    def region(self) -> str:
        return str(self.hyperparameters.get("sagemaker_region") or "")


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        if default is None:
            raise LauncherError(f"{path} is missing")
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LauncherError(f"{path} is not valid JSON: {e}") from None


def script_environment(cfg: ContainerConfig, code_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The script's environment as AWS's TF image hands it over: the container's own variables, then
    `s3_utils.configure`'s, the Environment's (SAGEMAKER_JOB_NAME, CURRENT_HOST, SAGEMAKER_REGION), PYTHONPATH and
    every SM_* variable of `to_env_vars`, and TF_CONFIG for MultiWorkerMirroredStrategy."""
    hps = contract.user_hyperparameters(cfg.hyperparameters, environ.get("TRAINING_JOB_NAME"))
    training_env = contract.training_env(
        cfg.root, cfg.hyperparameters, cfg.resource_config, cfg.input_data_config, environ
    )
    env = {k: v for k, v in environ.items() if not k.startswith("SM_") and k != "TF_CONFIG"}
    model_dir = hps.get("model_dir")
    bucket_region = None if environ.get(LOCAL_VARIABLE) else _bucket_region(model_dir, cfg.region)
    env.update(contract.s3_variables(model_dir, cfg.region, bucket_region))
    env["SAGEMAKER_JOB_NAME"] = str(cfg.hyperparameters.get("sagemaker_job_name") or "")
    env["CURRENT_HOST"] = cfg.current_host
    env["SAGEMAKER_REGION"] = cfg.region
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(contract.sm_variables(training_env, hps))
    env.setdefault(CHECKPOINT_DIR_VARIABLE, str(cfg.root / "checkpoints"))
    config = tf_config(cfg, environ)
    if config is not None:
        env["TF_CONFIG"] = json.dumps(config)
    return env


def _bucket_region(model_dir: Any, region: str) -> str | None:
    """The region of an S3 model_dir's bucket (GetBucketLocation, as the TF toolkit asks); None if unknown."""
    if not (isinstance(model_dir, str) and model_dir.startswith("s3://")):
        return None
    try:
        import boto3  # in cloudtrain's image (docker/train needs it); never on the local backend's path
        from botocore.config import Config
    except ImportError:
        return None
    bucket = model_dir[len("s3://") :].split("/", 1)[0]
    try:
        quick = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1})
        s3 = boto3.client("s3", region_name=region or None, config=quick)
        location = s3.get_bucket_location(Bucket=bucket, **expected_owner(bucket))
    except Exception:  # no credentials, no such bucket, another account's: the job's region it is
        return None
    return location_region(location.get("LocationConstraint"))


def tf_config(cfg: ContainerConfig, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """TF_CONFIG when MultiWorkerMirroredStrategy is enabled; local workers get their loopback addresses."""
    if not cfg.mwms:
        return None
    raw = environ.get(HOST_ADDRESSES_VARIABLE)
    addresses = json.loads(raw) if raw else None
    return build_tf_config(cfg.hosts, cfg.current_host, addresses)


def code_directory(cfg: ContainerConfig) -> Path:
    """`<root>/code`, unpacked from a local sourcedir.tar.gz (sagemaker_submit_directory) when not there yet."""
    code = cfg.root / "code"
    if code.is_dir():
        return code
    source = Path(str(cfg.hyperparameters.get("sagemaker_submit_directory", "")))
    if not source.is_file():
        raise LauncherError(f"no code at {code} and sagemaker_submit_directory is not a local tarball")
    with tarfile.open(source, "r:*") as tar:
        tar.extractall(code, filter="data")
    return code


def missing_requirements(path: Path) -> list[str]:
    """Requirements in a requirements.txt that this Python does not have (with a version that fits)."""
    missing = []
    for line in _requirement_lines(path.read_text()):
        problem = _check_requirement(line)
        if problem:
            missing.append(problem)
    return missing


def _requirement_lines(text: str) -> list[str]:
    """The requirement lines, without comments, options (-r, --index-url …), paths and URLs."""
    lines = (re.sub(r"(^|\s)#.*$", "", raw).strip() for raw in text.splitlines())
    return [ln for ln in lines if ln and not ln.startswith(("-", ".", "/")) and "://" not in ln]


def _check_requirement(line: str) -> str | None:
    """None when installed; else the line, with the version found when it is the wrong one."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # packaging is not stdlib: fall back to a presence check
        if ";" in line:
            return None  # an environment marker we cannot evaluate
        match = _REQUIREMENT_NAME.match(line)
        return line if match and _installed_version(match.group(1)) is None else None
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return None  # pip would report it; the check is about what is installed
    if req.marker is not None and not req.marker.evaluate():
        return None
    version = _installed_version(req.name)
    if version is None:
        return line
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return f"{line} (found {version})"
    return None


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_requirements(code_dir: Path) -> None:
    """The local backend never pip-installs into the user's Python: requirements.txt must be satisfied already."""
    path = code_dir / REQUIREMENTS
    if not path.is_file():
        return
    missing = missing_requirements(path)
    if missing:
        raise LauncherError(
            f"{REQUIREMENTS}: not installed in {sys.executable} (the local backend never pip-installs into "
            f"your environment): {', '.join(missing)}; install them with: "
            f"{sys.executable} -m pip install -r {path}"
        )


def install(kind: contract.EntryPointType, code_dir: Path, entry: str, environ: Mapping[str, str]) -> Path | None:
    """`entry_point.install`: requirements.txt (programs) or `pip install . -r requirements.txt` (packages), and
    exec permission for a command.

    In a container that is what runs. On the local backend requirements are only checked, and a package is
    installed without its dependencies into a folder of its own (returned, for PYTHONPATH), never into the
    user's Python.
    """
    if kind == "command":
        (code_dir / entry).chmod(0o777)
        return None
    local = bool(environ.get(LOCAL_VARIABLE))
    has_requirements = (code_dir / REQUIREMENTS).is_file()
    if local and (kind == "package" or has_requirements):
        check_requirements(code_dir)
    if kind == "program":
        if has_requirements and not local:
            _pip(["install", "-r", REQUIREMENTS], code_dir, "InstallRequirementsError")
        return None
    if not local:
        _pip(["install", ".", *(["-r", REQUIREMENTS] if has_requirements else [])], code_dir, "InstallModuleError")
        return None
    site = Path(tempfile.mkdtemp(prefix="cloudtrain-package-"))
    args = ["install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation", "--target", str(site), "."]
    _pip(args, code_dir, "InstallModuleError")
    return site


def _pip(args: list[str], cwd: Path, error: str) -> None:
    print(f"pip {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, check=False)
    if done.returncode != 0:
        raise LauncherError(f"{error}: pip {' '.join(args)} exited with {done.returncode}")


def script_command(code_dir: Path, entry: str, args: list[str]) -> tuple[contract.EntryPointType, list[str]]:
    if not (code_dir / entry).is_file():
        raise LauncherError(f"entry point {entry!r} not found in {code_dir}")
    kind = contract.entry_point_type(code_dir, entry)
    return kind, contract.command(kind, sys.executable, entry, args)


def run_script(command: list[str], env: Mapping[str, str], cwd: Path) -> tuple[int, str, str | None]:
    """Run the script, passing stderr through; returns its exit code (128+N for signal N), its last stderr line,
    and the one-line reason of a known failure seen in its stderr.

    SIGTERM and SIGINT are forwarded, so a stop reaches the script as `docker stop` reaches PID 1. The script's
    end is the job's end: processes it leaves behind (which may hold its stderr open for ever) are ended
    (`end_leftovers`), and stderr is read in a thread that is not waited for past them.
    """
    become_subreaper()
    proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stderr=subprocess.PIPE)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    seen: dict[str, str | None] = {"last": "", "known": None}
    assert proc.stderr is not None
    reader = threading.Thread(target=_pass_stderr, args=(proc.stderr, seen), daemon=True)
    reader.start()
    code = proc.wait()
    end_leftovers()
    reader.join(STDERR_DRAIN_S)  # leftovers outside our reach (no subreaper) may still hold the pipe
    return (128 - code if code < 0 else code), seen["last"] or "", seen["known"]


def _pass_stderr(stream: IO[bytes], seen: dict[str, str | None]) -> None:
    for raw in stream:
        sys.stderr.buffer.write(raw)
        sys.stderr.buffer.flush()
        line = raw.decode("utf-8", "replace").strip()
        seen["last"] = line or seen["last"]
        seen["known"] = seen["known"] or explain(line)


@dataclass(frozen=True)
class Prepared:
    """Everything the script needs before it runs."""

    command: list[str]
    env: dict[str, str]
    code_dir: Path
    host: str
    package_site: Path | None = None
    chief: str = ""


def prepare(root: Path, environ: Mapping[str, str]) -> Prepared:
    """Read the contract's files, install the code as the toolkit does, build the command and environment."""
    cfg = ContainerConfig.read(root)
    code_dir = code_directory(cfg)
    env = script_environment(cfg, code_dir, environ)
    if "TF_CONFIG" in env:
        print(f"TF_CONFIG={env['TF_CONFIG']}", flush=True)
    user = contract.user_hyperparameters(cfg.hyperparameters, environ.get("TRAINING_JOB_NAME"))
    kind, command = script_command(code_dir, cfg.entry_point, contract.cmd_args(user))
    site = install(kind, code_dir, cfg.entry_point, environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join((str(code_dir), str(site), *env["PYTHONPATH"].split(os.pathsep)[1:]))
    return Prepared(command, env, code_dir, cfg.current_host, site, cfg.hosts[0])


def _is_empty(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:
        return True


def main() -> int:
    environ = dict(os.environ)
    root = opt_ml_root(environ)
    output = {"SM_OUTPUT_DIR": str(root / "output")}
    try:
        job = prepare(root, environ)
    except (LauncherError, OSError, ValueError, tarfile.TarError) as e:
        reason = f"AlgorithmError: launcher: {e}"
        print(reason, file=sys.stderr, flush=True)
        write_failure(reason, output)
        return 1
    print(f"running {' '.join(job.command)} in {job.code_dir}", flush=True)
    try:
        code, last, known = run_script(job.command, job.env, job.code_dir)
    finally:
        if job.package_site is not None:
            shutil.rmtree(job.package_site, ignore_errors=True)
    if code == 0:
        with suppress(OSError):  # an empty `success`, as the toolkit's trainer writes it
            (root / "output").mkdir(parents=True, exist_ok=True)
            (root / "output" / "success").write_text("")
        if job.host == job.chief and _is_empty(root / "model"):  # the chief's model is the job's
            print("cloudtrain: note: the script saved nothing to SM_MODEL_DIR: the job has no model", flush=True)
        return 0
    written = failure_file(output)
    own = written.read_text(errors="replace") if written.is_file() else ""
    if not own.strip() or explain(own):  # the script's own reason wins, unless it is a known failure's dump
        write_failure(known or f"AlgorithmError: {job.host} exited with code {code}: {last}", output)
    return code


if __name__ == "__main__":
    sys.exit(main())

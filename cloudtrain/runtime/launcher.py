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
import signal
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cloudtrain.runtime.env import (
    _cpu_count,
    _decode_hyperparameter,
    build_tf_config,
    failure_file,
    opt_ml_root,
    write_failure,
)

SCRIPT_MODE = frozenset(
    {"sagemaker_program", "sagemaker_submit_directory", "sagemaker_region", "sagemaker_container_log_level"}
)
MWMS_FLAG = "sagemaker_multi_worker_mirrored_strategy_enabled"
REQUIREMENTS = "requirements.txt"
_REQUIREMENT_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
# SM_TRAINING_ENV keys whose variable has another name (SM_HPS, SM_FRAMEWORK_PARAMS, SM_CHANNEL_<NAME>).
_RENAMED_IN_ENV = frozenset({"hyperparameters", "additional_framework_parameters", "channel_input_dirs"})


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
    def user_hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.hyperparameters.items() if not k.startswith("sagemaker_")}

    @property
    def framework_params(self) -> dict[str, Any]:
        """The toolkit's additional_framework_parameters: sagemaker_* settings other than the script-mode ones."""
        return {k: v for k, v in self.hyperparameters.items() if k.startswith("sagemaker_") and k not in SCRIPT_MODE}

    @property
    def entry_point(self) -> str:
        program = self.hyperparameters.get("sagemaker_program")
        if not program:
            raise LauncherError("hyperparameters.json has no sagemaker_program (the entry point)")
        return str(program)

    @property
    def mwms(self) -> bool:
        return str(self.hyperparameters.get(MWMS_FLAG, "")).lower() == "true"


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        if default is None:
            raise LauncherError(f"{path} is missing")
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LauncherError(f"{path} is not valid JSON: {e}") from None


def user_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """`--name value` per hyperparameter, sorted, formatted as the toolkit's `to_cmd_args` formats them."""
    args: list[str] = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{name}" if len(name) > 1 else f"-{name}", str(value)]
    return args


def _num_gpus(environ: Mapping[str, str]) -> int:
    """GPUs visible to the container (none on the local backend, which is CPU only)."""
    if environ.get("CLOUDTRAIN_LOCAL"):
        return 0
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*"))


def sm_environment(cfg: ContainerConfig, code_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Every SM_* variable of the contract, and SM_TRAINING_ENV holding all of them as one JSON document."""
    root, hps = cfg.root, cfg.user_hyperparameters
    channels = sorted(cfg.input_data_config)
    entry = cfg.entry_point
    training_env: dict[str, Any] = {
        "additional_framework_parameters": cfg.framework_params,
        "channel_input_dirs": {c: str(root / "input" / "data" / c) for c in channels},
        "current_host": cfg.current_host,
        "current_instance_type": cfg.resource_config.get("current_instance_type", ""),
        "hosts": cfg.hosts,
        "hyperparameters": hps,
        "input_config_dir": str(root / "input" / "config"),
        "input_data_config": cfg.input_data_config,
        "input_dir": str(root / "input"),
        "is_master": cfg.current_host == cfg.hosts[0],
        "job_name": environ.get("TRAINING_JOB_NAME", ""),
        "log_level": int(cfg.hyperparameters.get("sagemaker_container_log_level", 20)),
        "master_hostname": cfg.hosts[0],
        "model_dir": str(root / "model"),
        "module_dir": str(cfg.hyperparameters.get("sagemaker_submit_directory", code_dir)),
        "module_name": Path(entry).stem,
        "network_interface_name": cfg.resource_config.get("network_interface_name", "eth0"),
        "num_cpus": _cpu_count(),
        "num_gpus": _num_gpus(environ),
        "output_data_dir": str(root / "output" / "data"),
        "output_dir": str(root / "output"),
        "resource_config": cfg.resource_config,
        "user_entry_point": entry,
    }
    env = {f"SM_{k.upper()}": _env_value(v) for k, v in training_env.items() if k not in _RENAMED_IN_ENV}
    env["SM_HPS"] = json.dumps(hps)
    env["SM_CHANNELS"] = json.dumps(channels)
    env["SM_USER_ARGS"] = json.dumps(user_args(hps))
    env["SM_FRAMEWORK_PARAMS"] = json.dumps(cfg.framework_params)
    env["SM_TRAINING_ENV"] = json.dumps(training_env)
    env.update({f"SM_CHANNEL_{c.upper()}": str(root / "input" / "data" / c) for c in channels})
    env.update({f"SM_HP_{k.upper()}": _env_value(v) for k, v in hps.items()})
    return env


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def tf_config(cfg: ContainerConfig, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """TF_CONFIG when MultiWorkerMirroredStrategy is enabled; local workers get their loopback addresses."""
    if not cfg.mwms:
        return None
    raw = environ.get("CLOUDTRAIN_HOST_ADDRESSES")
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


def handle_requirements(code_dir: Path, environ: Mapping[str, str]) -> None:
    """In a container, pip-install requirements.txt as script mode does; locally only check it."""
    path = code_dir / REQUIREMENTS
    if not path.is_file():
        return
    if environ.get("CLOUDTRAIN_LOCAL"):
        missing = missing_requirements(path)
        if missing:
            raise LauncherError(
                f"{REQUIREMENTS}: not installed in {sys.executable} (the local backend never pip-installs into "
                f"your environment): {', '.join(missing)}; install them with: "
                f"{sys.executable} -m pip install -r {path}"
            )
        return
    print(f"installing {REQUIREMENTS}", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-r", str(path)], check=False)
    if done.returncode != 0:
        raise LauncherError(f"InstallRequirementsError: pip install -r {REQUIREMENTS} exited with {done.returncode}")


def script_command(code_dir: Path, entry: str, args: list[str]) -> list[str]:
    if not (code_dir / entry).is_file():
        raise LauncherError(f"entry point {entry!r} not found in {code_dir}")
    interpreter = ["/bin/sh"] if entry.endswith(".sh") else [sys.executable]
    return [*interpreter, entry, *args]


def run_script(command: list[str], env: Mapping[str, str], cwd: Path) -> tuple[int, str]:
    """Run the script, passing stderr through; returns its exit code (128+N for signal N) and last stderr line.

    SIGTERM and SIGINT are forwarded, so a stop reaches the script as `docker stop` reaches PID 1.
    """
    proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stderr=subprocess.PIPE)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    last = ""
    assert proc.stderr is not None
    for raw in proc.stderr:
        sys.stderr.buffer.write(raw)
        sys.stderr.buffer.flush()
        last = raw.decode("utf-8", "replace").strip() or last
    code = proc.wait()
    return (128 - code if code < 0 else code), last


def prepare(root: Path, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str], Path, str]:
    """Everything before the script runs: (command, environment, code folder, current host)."""
    cfg = ContainerConfig.read(root)
    code_dir = code_directory(cfg)
    env = {k: v for k, v in environ.items() if not k.startswith("SM_") and k != "TF_CONFIG"}
    env.update(sm_environment(cfg, code_dir, environ))
    env.setdefault("CLOUDTRAIN_CHECKPOINT_DIR", str(root / "checkpoints"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    config = tf_config(cfg, environ)
    if config is not None:
        env["TF_CONFIG"] = json.dumps(config)
        print(f"TF_CONFIG={env['TF_CONFIG']}", flush=True)
    handle_requirements(code_dir, environ)
    command = script_command(code_dir, cfg.entry_point, user_args(cfg.user_hyperparameters))
    return command, env, code_dir, cfg.current_host


def main() -> int:
    environ = dict(os.environ)
    root = opt_ml_root(environ)
    failure_env = {"SM_OUTPUT_DIR": str(root / "output")}
    try:
        command, env, code_dir, host = prepare(root, environ)
    except (LauncherError, OSError, ValueError, tarfile.TarError) as e:
        reason = f"AlgorithmError: launcher: {e}"
        print(reason, file=sys.stderr, flush=True)
        write_failure(reason, failure_env)
        return 1
    print(f"running {' '.join(command)} in {code_dir}", flush=True)
    code, last = run_script(command, env, code_dir)
    if code != 0 and not failure_file(failure_env).exists():
        write_failure(f"AlgorithmError: {host} exited with code {code}: {last}", failure_env)
    return code


if __name__ == "__main__":
    sys.exit(main())

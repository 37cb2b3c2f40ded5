"""Where a training worker finds its cluster, data, hyperparameters and output folders.

Stdlib only, so the launcher (and tests) can import it without TensorFlow. Everything is read from the
container contract (docs/container-contract.md): the SM_* variables that the sagemaker-training toolkit or
cloudtrain's launcher set, with a fallback to the files under the /opt/ml root, and then to defaults relative
to that root, so a script also runs by hand with nothing set.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cloudtrain.runtime.failures import explain

DEFAULT_ROOT = "/opt/ml"
TENSORBOARD_FOLDER = "tensorboard"  # under output/: SageMaker's TensorBoardOutputConfig.LocalPath default
MWMS_PORT = 8890  # the port the SageMaker TensorFlow toolkit gives every worker
SHARDED = "ShardedByS3Key"  # a channel's S3DistributionType in inputdataconfig.json when each host has its share
FAILURE_REASON_MAX = 1024  # SageMaker's FailureReason limit
_SCRIPT_MODE_PREFIX = "sagemaker_"  # script-mode hyperparameters, never passed to the user's script
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# The CLOUDTRAIN_* variables the backends set for the runtime (`cloudtrain.backends.contract` hands them over).
OPT_ML_VARIABLE = "CLOUDTRAIN_OPT_ML"  # the /opt/ml of this host (local backend)
CHECKPOINT_DIR_VARIABLE = "CLOUDTRAIN_CHECKPOINT_DIR"
TENSORBOARD_DIR_VARIABLE = "CLOUDTRAIN_TENSORBOARD_DIR"
STRATEGY_VARIABLE = "CLOUDTRAIN_STRATEGY"
COMMUNICATION_VARIABLE = "CLOUDTRAIN_COMMUNICATION"
HOST_ADDRESSES_VARIABLE = "CLOUDTRAIN_HOST_ADDRESSES"  # host -> "127.0.0.1:port" (local backend)
LOCAL_VARIABLE = "CLOUDTRAIN_LOCAL"  # set on the local backend's workers

T = TypeVar("T", bool, int, float, str)


def build_tf_config(hosts: list[str], current_host: str, addresses: dict[str, str] | None = None) -> dict[str, Any]:
    """TF_CONFIG for MultiWorkerMirroredStrategy, as the SageMaker TF toolkit's `_build_tf_config_for_mwms` builds it.

    Every host is a worker at `host:8890`, the task index is the host's position in `hosts`, and worker 0 is the
    chief. `addresses` (host -> "127.0.0.1:port") replaces the default address on the local backend, where all
    workers share one network namespace; it must then name every host.
    """
    if not hosts:
        raise ValueError("hosts is empty")
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"hosts has duplicates: {hosts}")
    if current_host not in hosts:
        raise ValueError(f"current host {current_host!r} is not one of {hosts}")
    if addresses is not None and (missing := [h for h in hosts if h not in addresses]):
        raise ValueError(f"no address for {', '.join(missing)}")
    workers = [addresses[h] if addresses is not None else f"{h}:{MWMS_PORT}" for h in hosts]
    return {
        "cluster": {"worker": workers},
        "environment": "cloud",
        "task": {"index": hosts.index(current_host), "type": "worker"},
    }


def opt_ml_root(environ: Mapping[str, str] = os.environ) -> Path:
    """The contract's root folder: `CLOUDTRAIN_OPT_ML` on the local backend, else /opt/ml."""
    return Path(environ.get(OPT_ML_VARIABLE) or DEFAULT_ROOT)


def failure_file(environ: Mapping[str, str] = os.environ) -> Path:
    """`<root>/output/failure`: SageMaker turns its content into the job's FailureReason."""
    output = environ.get("SM_OUTPUT_DIR")
    return Path(output) / "failure" if output else opt_ml_root(environ) / "output" / "failure"


def write_failure(reason: str, environ: Mapping[str, str] = os.environ) -> None:
    """Write a one-line failure reason (a known cause told as such); never raises: the job is already failing."""
    line = " ".join((explain(reason) or reason).split())[:FAILURE_REASON_MAX].rstrip(":") or "training failed"
    try:
        path = failure_file(environ)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")
    except OSError as e:
        print(f"could not write the failure reason: {e}", file=sys.stderr, flush=True)


@contextmanager
def report_failures(environ: Mapping[str, str] = os.environ) -> Iterator[None]:
    """Run a training script's body; on an error write `<root>/output/failure` and re-raise.

    Use it around `main()` so even a failure while reading the environment reaches the job's FailureReason.
    A clean `sys.exit(0)` is not a failure.
    """
    try:
        yield
    except SystemExit as e:
        if e.code not in (0, None):
            write_failure(f"exited with status {e.code}", environ)
        raise
    except BaseException as e:
        reason = traceback.format_exception_only(type(e), e)[-1].strip()
        write_failure(reason, environ)
        raise


def _json_env(environ: Mapping[str, str], name: str) -> Any:
    """A JSON-valued variable, or None when it is unset; a malformed value is an error that names the variable."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} is not valid JSON: {e}") from None


def _json_file(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _decode_hyperparameter(value: Any) -> Any:
    """hyperparameters.json holds each value JSON-encoded as a string (as the SDK sends them); decode it."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def coerce(value: Any, like: T) -> T:
    """`value` converted to the type of `like`: hyperparameters arrive as JSON values or as strings."""
    kind = type(like)
    if kind is bool:
        if isinstance(value, bool):
            return value  # type: ignore[return-value]
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True  # type: ignore[return-value]
        if text in ("false", "0", "no", "off"):
            return False  # type: ignore[return-value]
        raise ValueError(f"{value!r} is not a boolean")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        if isinstance(value, int):
            return value  # type: ignore[return-value]
        try:
            return int(str(value).strip())  # type: ignore[return-value]
        except ValueError:
            number = float(value)  # "12.0" and 12.0 are integers too, 12.5 is not
        if not number.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(number)  # type: ignore[return-value]
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        return float(value)  # type: ignore[return-value]
    return str(value)  # type: ignore[return-value]


def _is_chief(tf_config: Mapping[str, Any] | None) -> bool:
    """Chief: TF_CONFIG's `chief` task, or worker 0 when the cluster has no chief, or any process without TF_CONFIG."""
    if not tf_config:
        return True
    task = tf_config.get("task") or {}
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind in ("chief", "master"):
        return True
    cluster = tf_config.get("cluster") or {}
    return kind == "worker" and index == 0 and not (cluster.get("chief") or cluster.get("master"))


@dataclass(frozen=True)
class TrainingEnv:
    """One worker's view of the job. Build it with `TrainingEnv.from_environ()`."""

    root: Path
    hosts: list[str]
    current_host: str
    channels: dict[str, Path]
    hyperparameters: dict[str, Any]
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    tensorboard_dir: Path
    num_gpus: int
    num_cpus: int
    tf_config: dict[str, Any] | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    input_data_config: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> TrainingEnv:
        """Read SM_*, TF_CONFIG and CLOUDTRAIN_* variables, falling back to files and defaults under the root.

        `tensorboard_dir` (CLOUDTRAIN_TENSORBOARD_DIR, default `<output>/tensorboard`) is where event files go:
        SageMaker syncs it to S3 while the job runs, the local backend shows it to `cloudtrain tensorboard`.
        """
        environ = dict(environ)
        root = opt_ml_root(environ)
        config_dir = Path(environ.get("SM_INPUT_CONFIG_DIR") or root / "input" / "config")
        input_dir = Path(environ.get("SM_INPUT_DIR") or root / "input")
        resources = _json_env(environ, "SM_RESOURCE_CONFIG") or _json_file(config_dir / "resourceconfig.json") or {}

        hosts = _json_env(environ, "SM_HOSTS") or resources.get("hosts") or ["algo-1"]
        current_host = environ.get("SM_CURRENT_HOST") or resources.get("current_host") or hosts[0]
        if not isinstance(hosts, list) or current_host not in hosts:
            raise ValueError(f"current host {current_host!r} is not one of the hosts {hosts}")

        hps = _json_env(environ, "SM_HPS")
        if hps is None:
            raw = _json_file(config_dir / "hyperparameters.json") or {}
            hps = {k: _decode_hyperparameter(v) for k, v in raw.items()}
        if not isinstance(hps, dict):
            raise ValueError("SM_HPS must be a JSON object")
        hyperparameters = {k: v for k, v in hps.items() if not k.startswith(_SCRIPT_MODE_PREFIX)}

        output_dir = Path(environ.get("SM_OUTPUT_DIR") or root / "output")
        return cls(
            root=root,
            hosts=[str(h) for h in hosts],
            current_host=str(current_host),
            channels=_channels(environ, input_dir / "data"),
            hyperparameters=hyperparameters,
            model_dir=Path(environ.get("SM_MODEL_DIR") or root / "model"),
            output_dir=output_dir,
            output_data_dir=Path(environ.get("SM_OUTPUT_DATA_DIR") or output_dir / "data"),
            checkpoint_dir=Path(environ.get(CHECKPOINT_DIR_VARIABLE) or root / "checkpoints"),
            tensorboard_dir=Path(environ.get(TENSORBOARD_DIR_VARIABLE) or output_dir / TENSORBOARD_FOLDER),
            num_gpus=int(environ.get("SM_NUM_GPUS") or 0),
            num_cpus=int(environ.get("SM_NUM_CPUS") or _cpu_count()),
            tf_config=_json_env(environ, "TF_CONFIG"),
            environ=environ,
            input_data_config=_json_env(environ, "SM_INPUT_DATA_CONFIG")
            or _json_file(config_dir / "inputdataconfig.json")
            or {},
        )

    @property
    def is_chief(self) -> bool:
        """Only the chief writes the checkpoints, the model, the report and prints the metric lines."""
        return _is_chief(self.tf_config)

    @property
    def num_workers(self) -> int:
        """Workers in the TF cluster (1 without TF_CONFIG)."""
        cluster = (self.tf_config or {}).get("cluster") or {}
        return max(1, sum(len(cluster.get(kind) or []) for kind in ("chief", "master", "worker")))

    @property
    def task_index(self) -> int:
        return int(((self.tf_config or {}).get("task") or {}).get("index", 0))

    @property
    def workers_share_host(self) -> bool:
        """All workers on loopback addresses: the local backend runs them on one machine, sharing its cores."""
        cluster = (self.tf_config or {}).get("cluster") or {}
        addresses = [a for kind in ("chief", "worker") for a in cluster.get(kind) or []]
        return len(addresses) > 1 and all(a.rsplit(":", 1)[0] in _LOOPBACK for a in addresses)

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def channel(self, name: str) -> Path:
        """A channel's folder; a clear error names the channels there are."""
        try:
            return self.channels[name]
        except KeyError:
            have = ", ".join(sorted(self.channels)) or "none"
            raise KeyError(f"no channel {name!r} (channels: {have})") from None

    def is_sharded(self, name: str) -> bool:
        """Whether channel `name` holds only this host's share of the objects (S3DistributionType ShardedByS3Key)."""
        return (self.input_data_config.get(name) or {}).get("S3DistributionType") == SHARDED

    def auto_shard_policy(self, name: str, *, in_memory: bool = False) -> str:
        """The `tf.data.experimental.AutoShardPolicy` name that fits channel `name`'s distribution.

        OFF for a sharded channel: each host already has only its share, and FILE or DATA would drop or repeat
        examples. For a replicated one every host has everything: DATA for data read into memory (or fewer files
        than workers), FILE for a dataset of files, one file per worker at least.
        """
        if self.is_sharded(name):
            return "OFF"
        return "DATA" if in_memory else "FILE"

    def hp(self, name: str, default: T) -> T:
        """Hyperparameter `name` converted to the type of `default`, or `default` when it is not set."""
        if name not in self.hyperparameters:
            return default
        try:
            return coerce(self.hyperparameters[name], default)
        except (TypeError, ValueError) as e:
            raise ValueError(f"hyperparameter {name}: {e}") from None


def _channels(environ: Mapping[str, str], data_dir: Path) -> dict[str, Path]:
    """SM_CHANNELS + SM_CHANNEL_<NAME>; without SM_CHANNELS, the folders under input/data."""
    names = _json_env(environ, "SM_CHANNELS")
    if names is None:
        names = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
    return {name: Path(environ.get(f"SM_CHANNEL_{name.upper()}") or data_dir / name) for name in names}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1

"""What every row gets: sizes and run counts for the mode, a scratch folder, the children, moto, job specs."""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchlib.core import CLOUDTRAIN, REPO, VENV_PY, Processes, Run, clean_env
from tests.loopback_aws import ROLE_ARN, MotoServer, aws_env

DIGITS = REPO / "data" / "digits"


@dataclass
class Context:
    quick: bool
    scratch: Path
    processes: Processes
    stack: ExitStack
    runs_override: int | None = None
    cloudtrain_src: Path | None = None  # run cloudtrain from this source tree instead (to try a fix)
    logs_lag_s: float = 10.0  # row logs: how late half the hosts' lines reach CloudWatch
    _moto: MotoServer | None = field(default=None, init=False)
    _counter: int = field(default=0, init=False)

    def runs(self, full: int, quick: int) -> int:
        """How many measured runs a row makes (--runs overrides both)."""
        if self.runs_override is not None:
            return self.runs_override
        return quick if self.quick else full

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def folder(self, name: str) -> Path:
        """A new folder under the scratch folder."""
        self._counter += 1
        path = self.scratch / f"{self._counter:02d}-{name}"
        path.mkdir(parents=True)
        return path

    @property
    def base_env(self) -> dict[str, str]:
        """Every child's environment: no settings of the person running the bench, temporary files in scratch."""
        tmp = self.scratch / "tmp"  # whatever a child (or a killed worker) leaves behind goes with the scratch folder
        tmp.mkdir(exist_ok=True)
        env = clean_env({"XDG_CONFIG_HOME": str(self.scratch / "xdg-config"), "TMPDIR": str(tmp)})
        if self.cloudtrain_src is not None:
            env["PYTHONPATH"] = str(self.cloudtrain_src)
        return env

    def moto(self) -> MotoServer:
        """moto's server, started on first use and stopped when the bench ends."""
        if self._moto is None:
            self.log("starting moto's server")
            self._moto = MotoServer(self.base_env, python=VENV_PY)
            self.stack.callback(self._moto.close)
        return self._moto

    def aws_env(self, endpoint: str, home: Path) -> dict[str, str]:
        """cloudtrain and the AWS CLI aimed at `endpoint`, with their own cloudtrain job home."""
        nowhere = self.scratch / "no-aws-config"
        return {
            **self.base_env,
            **aws_env(endpoint, nowhere),
            "CLOUDTRAIN_ROLE_ARN": ROLE_ARN,
            "CLOUDTRAIN_HOME": str(home),
        }

    def cloudtrain(self, *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 600) -> Run:
        return self.processes.run([CLOUDTRAIN, *args], env=env, cwd=cwd, timeout=timeout)

    def submit(self, spec: Path, env: dict[str, str], *extra: str) -> str:
        """`cloudtrain submit SPEC --json`; the new job's name."""
        run = self.cloudtrain("submit", str(spec), "--json", *extra, env=env).check("cloudtrain submit")
        return str(json.loads(run.out)["job"]["name"])

    def ensure_digits(self) -> Path:
        """The digits channels (scripts/prepare-data, offline and idempotent)."""
        if not (DIGITS / "train" / "digits.npz").is_file() or not (DIGITS / "eval" / "digits.npz").is_file():
            self.log("making the digits data (scripts/prepare-data)")
            self.processes.run([VENV_PY, REPO / "scripts" / "prepare-data"], env=self.base_env).check("prepare-data")
        return DIGITS


def write_spec(
    path: Path,
    *,
    name: str,
    source_dir: Path,
    backend: str,
    instance_count: int = 2,
    hyperparameters: dict[str, object] | None = None,
    data: dict[str, Path] | None = None,
    environment: dict[str, str] | None = None,
) -> Path:
    """A job spec in YAML (JSON is YAML): AWS's TF 2.19 image, ml.g5.xlarge, MultiWorkerMirroredStrategy."""
    spec: dict[str, object] = {
        "name": name,
        "backend": backend,
        "code": {"source_dir": str(source_dir), "entry_point": "train.py"},
        "image": {"framework_version": "2.19"},
        "resources": {"instance_type": "ml.g5.xlarge", "instance_count": instance_count, "max_runtime": "1h"},
        "distribution": {"strategy": "multi_worker_mirrored"},
        "hyperparameters": hyperparameters or {},
        "environment": environment or {},
    }
    if data:
        spec["data"] = {k: str(v) for k, v in data.items()}
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path

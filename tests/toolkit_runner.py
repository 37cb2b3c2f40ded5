"""The control plane's runner for stock-image jobs: every host runs AWS's own `train` entry point.

`python -m tests.toolkit_runner --in-place-of cloudtrain.backends.local.runner <job folder>` supervises a
job as the local runner does (statuses, max runtime, stop: SIGTERM then SIGKILL, failure reason from
`output/failure`, the chief's model.tar.gz and output.tar.gz), but each host is the sagemaker-training
toolkit (`train` → `sagemaker_tensorflow_container.training:main`) of `.venv-toolkit`, started as an AWS
instance starts a container: its own network namespace (tests/netns.py), hostname `algo-N`, PID 1, the
host's folder on /opt/ml and a generated /etc/hosts (both in its own mount namespace only), and no
environment but the image's, the platform's and the request's. The toolkit downloads
`sagemaker_submit_directory` from S3 itself, through a relay to the control plane on the host's loopback.
`--in-place-of` names the local runner's module only so LocalBackend's liveness check (the module and the
job folder in argv) recognises this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from cloudtrain.backends.local.runner import MODULE as RUNNER_MODULE
from cloudtrain.backends.local.runner import Graces, Outcome, Runner, Worker, stop_event
from tests.netns import RELAY_PORT, HostNetwork, Relay

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-toolkit"
VERSIONS = ("4.8.3", "5.1.4")  # 4.8.3: what sagemaker-tensorflow-training 20.5.0 pins (AWS's images); 5.1.4: newest
TOOLKIT_FILE = "toolkit.json"
MODULE = "tests.toolkit_runner"
HOST_PLAN = "CLOUDTRAIN_TOOLKIT_HOST"
UNSHARE = ["--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# PID 1 of a host until it execs `train`: mounts visible to this mount namespace only, then the clean environment.
HOST_INIT = r"""
import json, os, socket, subprocess
plan = json.loads(os.environ.pop("CLOUDTRAIN_TOOLKIT_HOST"))
def mount(*args):
    subprocess.run(["mount", *args], check=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
if not os.path.isdir("/opt/ml"):  # a tmpfs on /opt holding what was there, and an empty ml folder
    stash = plan["stash"]
    mount("--bind", "/opt", stash)
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/opt")
    for name in os.listdir(stash):
        src, dst = os.path.join(stash, name), os.path.join("/opt", name)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
            continue
        os.mkdir(dst) if os.path.isdir(src) else open(dst, "w").close()
        mount("--bind", src, dst)
    mount("--make-private", stash)
    subprocess.run(["umount", "-l", stash], check=True)
    os.mkdir("/opt/ml")
mount("--rbind", plan["root"], "/opt/ml")  # with what is mounted below it (FastFile channels)
mount("--bind", plan["hosts_file"], "/etc/hosts")
socket.sethostname(plan["hostname"])
os.chdir("/")
os.execvpe(plan["argv"][0], plan["argv"], plan["env"])
"""


@dataclass(frozen=True)
class Toolkit:
    """One version of sagemaker-training in `.venv-toolkit` (5.1.4 from a folder first on PYTHONPATH)."""

    version: str

    @property
    def target(self) -> Path | None:
        """The --target folder of a version other than the venv's own (None for 4.8.3)."""
        return None if self.version == VERSIONS[0] else VENV / f"sagemaker-training-{self.version}"

    def missing(self) -> str | None:
        """What is missing to run this version, or None."""
        if not (VENV / "bin" / "train").is_file():
            return f"no {VENV.name}/bin/train (AWS's toolkits; made by `scripts/setup --with-toolkit`)"
        if self.target is not None and not (self.target / "sagemaker_training").is_dir():
            return f"no {self.target.relative_to(REPO)} (made by `scripts/setup --with-toolkit`)"
        return None

    def image_environment(self, host: str) -> dict[str, str]:
        """What AWS's TF training image and docker give PID 1 (its Dockerfile's ENV, HOME, HOSTNAME)."""
        env = {
            "PATH": f"{VENV / 'bin'}:{SYSTEM_PATH}",
            "HOME": "/root",
            "HOSTNAME": host,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "UTF-8",
            "SAGEMAKER_TRAINING_MODULE": "sagemaker_tensorflow_container.training:main",
        }
        if self.target is not None:
            env["PYTHONPATH"] = str(self.target)
        return env


def stand_ins() -> dict[str, str]:
    """What replaces the instance's role and AWS's network here: dummy keys and S3 through the host's relay."""
    return {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{RELAY_PORT}",
        "AWS_ACCESS_KEY_ID": "instance-role",
        "AWS_SECRET_ACCESS_KEY": "instance-role",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def platform_environment(job_name: str, job_arn: str, region: str) -> dict[str, str]:
    """What SageMaker itself sets in a training container (AWS's DLC and Experiments code read these)."""
    return {"TRAINING_JOB_NAME": job_name, "TRAINING_JOB_ARN": job_arn, "AWS_REGION": region}


@dataclass(frozen=True)
class ToolkitPlan:
    """What the runner needs beyond RunPlan: each host's base environment, the request's, and the relay's target."""

    base: dict[str, dict[str, str]]  # host -> image + stand-ins + platform
    job_environment: dict[str, str]  # the request's Environment (the spec's), on top
    target: tuple[str, int]  # the control plane, in the root namespace

    def environment(self, host: str) -> dict[str, str]:
        return {**self.base[host], **self.job_environment}

    def save(self, job_dir: Path) -> None:
        (job_dir / TOOLKIT_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, job_dir: Path) -> ToolkitPlan:
        data = json.loads((job_dir / TOOLKIT_FILE).read_text())
        return cls(data["base"], data["job_environment"], (data["target"][0], data["target"][1]))


class ToolkitWorker(Worker):
    """A host whose process is `ip netns exec … unshare …`; a stop's SIGTERM goes to the host's PID 1, as docker's."""

    def terminate(self) -> None:
        if self.proc.poll() is not None:
            return
        with suppress(OSError, ValueError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            for pid in children:  # unshare's one child: PID 1 of the host's PID namespace
                os.kill(int(pid), signal.SIGTERM)


class ToolkitRunner(Runner):
    """The local runner's supervision, with hosts started in namespaces and torn down with the job."""

    def __init__(self, job_dir: Path, stop: threading.Event, graces: Graces) -> None:
        super().__init__(job_dir, stop, graces)
        self.toolkit = ToolkitPlan.load(job_dir)
        network = HostNetwork.load(job_dir)
        if network is None:
            raise RuntimeError(f"no network plan in {job_dir}")
        self.network = network
        self.relay = Relay(self.toolkit.target)
        self.tools = {name: shutil.which(name) or name for name in ("ip", "unshare")}

    def _train(self) -> Outcome:
        self.network.create()
        (self.job_dir / "etc-hosts").write_text(self.network.hosts_file())
        for host in self.plan.hosts:
            self.relay.serve(self.network.namespace(host))
        return super()._train()

    def _start_worker(self, host: str, addresses: dict[str, str]) -> Worker:
        host_dir = self.job_dir / "hosts" / host
        stash = self.job_dir / "ns" / host / "opt"
        stash.mkdir(parents=True, exist_ok=True)
        plan = {
            "root": str(host_dir),
            "hosts_file": str(self.job_dir / "etc-hosts"),
            "hostname": host,
            "stash": str(stash),
            "argv": ["train"],
            "env": self.toolkit.environment(host),
        }
        init = [sys.executable, "-I", "-S", "-c", HOST_INIT]
        proc = subprocess.Popen(
            [self.tools["ip"], "netns", "exec", self.network.namespace(host), self.tools["unshare"], *UNSHARE, *init],
            cwd=self.job_dir,
            env={HOST_PLAN: json.dumps(plan)},  # popped by HOST_INIT: train's environment is plan["env"] alone
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self._pumped(ToolkitWorker(host, host_dir, proc))

    def _kill_all(self) -> None:
        super()._kill_all()  # SIGKILL to each host's group: unshare and, with it (--kill-child), its PID 1
        self.relay.close()
        self.network.delete()


def main(argv: list[str] | None = None) -> int:
    stop = stop_event()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[:2] != ["--in-place-of", RUNNER_MODULE]:
        print(f"usage: python -m {MODULE} --in-place-of {RUNNER_MODULE} JOB_DIR", file=sys.stderr)
        return 2
    return ToolkitRunner(Path(args[2]).resolve(), stop, Graces.from_environ(os.environ)).run()


if __name__ == "__main__":
    sys.exit(main())

"""The detached supervisor of one local container job: `python -m cloudtrain.backends.local.container_runner <job>`.

The process runner (`runner.Runner`) with containers for processes: each host's worker is an attached
`docker run` (its output is the host's log, its exit code the container's), all on the job's own network.
A stop or the max runtime sends SIGTERM to each container (`docker kill --signal TERM`, as SageMaker's stop
reaches PID 1), and after the grace period SIGKILL (`docker kill`). Every ending removes the job's
containers and its network.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloudtrain.backends.contract import runtime_environment
from cloudtrain.backends.local import containers, runner
from cloudtrain.backends.local.containers import ContainerPlan
from cloudtrain.backends.local.runner import Graces, LogStream, Outcome, Runner, Worker
from cloudtrain.backends.local.scope import CONTAINER_RUNNER_MODULE

MODULE = CONTAINER_RUNNER_MODULE


@dataclass
class ContainerWorker(Worker):
    """A host whose process is `docker run`: signals go to the container, not to the CLI."""

    plan: ContainerPlan | None = field(default=None, repr=False)
    killed: bool = False

    def terminate(self) -> None:
        if self.proc.poll() is None and self.plan is not None:
            containers.docker_quiet(self.plan, "kill", "--signal", "TERM", self.plan.container(self.host))

    def signal_group(self, sig: int) -> None:
        if sig == signal.SIGKILL and not self.killed and self.plan is not None and self.proc.poll() is None:
            self.killed = True
            containers.docker_quiet(self.plan, "kill", self.plan.container(self.host))
        super().signal_group(sig)


class ContainerRunner(Runner):
    """Runs one container job to its end; `run()` leaves no container and no network behind."""

    def __init__(
        self, job_dir: Path, stop: threading.Event, graces: Graces, environment: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(job_dir, stop, graces, environment)
        plan = ContainerPlan.load(job_dir)
        if plan is None:
            raise FileNotFoundError(f"{job_dir / containers.CONTAINER_FILE} is missing")
        self.container = plan

    def _train(self) -> Outcome:
        containers.remove_all(self.container, self.plan.job_name)  # a restarted runner's leftovers
        containers.create_network(self.container, self.plan.job_name)
        return super()._train()

    def _start_worker(self, host: str, addresses: dict[str, str]) -> Worker:
        """`docker run` for the host; `addresses` (the process mode's loopback ports) is not needed here."""
        host_dir = self.job_dir / "hosts" / host
        variables = {
            "TRAINING_JOB_NAME": self.plan.job_name,
            **runtime_environment(self.plan.strategy, self.plan.communication, None),  # /opt/ml/checkpoints
            "PYTHONUNBUFFERED": "1",
        }
        log_path = self.job_dir / "logs" / f"{host}.jsonl"
        log_path.parent.mkdir(exist_ok=True)
        notes = LogStream(log_path)  # before the container's first line, in the stream's own (private) file
        for note in self.container.notes:
            notes.write(f"cloudtrain: {note}")
        notes.close()
        proc = subprocess.Popen(
            self.container.run_argv(self.plan.job_name, host, host_dir, variables),
            cwd=host_dir,
            env={**os.environ, **self.environment},  # `-e NAME` takes the spec's values from here
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return self._pumped(ContainerWorker(host, host_dir, proc, plan=self.container))

    def _kill_all(self) -> None:
        super()._kill_all()  # `docker kill` of every container still running, through ContainerWorker
        containers.remove_all(self.container, self.plan.job_name)


def main(argv: list[str] | None = None) -> int:
    return runner.main(argv, ContainerRunner, MODULE)


if __name__ == "__main__":
    sys.exit(main())

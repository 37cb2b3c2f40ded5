"""A local job's folder: what is where, shared by the backend that lays it out, the runner that runs it, the
guard that ends it and the test control plane; and `HostLayout`, one host's /opt/ml as SageMaker prepares it.

    <home>/jobs/<job>/sourcedir.tar.gz     the code with cloudtrain's runtime, exactly as SageMaker receives it
                      hosts/algo-N/         one /opt/ml per host (input/config, input/data, code, model, ...)
                      logs/algo-N.jsonl     one log stream per host: {"t": epoch seconds, "m": line}
                      model_dir/            what every host's --model_dir names
                      model.tar.gz, output.tar.gz   the chief's model/ and output/data/ at the end
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.channels.fields import container_channel
from cloudtrain.files import atomic_path
from cloudtrain.transfer.tarballs import safe_extract

if TYPE_CHECKING:
    from cloudtrain.spec.models import ChannelSpec

BACKEND = "local"  # as the job store records the local backend's jobs
INSTANCE_TYPE = "local"  # what SageMaker's own local mode calls it; the spec's instance type is ignored
CHIEF = "algo-1"  # worker 0 of TF_CONFIG: its model, output and checkpoints are the job's
MODEL_DIR = "model_dir"  # <job>/model_dir: what --model_dir points at, shared by the hosts
WORKERS_FILE = "workers.json"  # the workers' process groups, for whoever finds the runner dead


def host_names(count: int) -> list[str]:
    """SageMaker's host names; the first is the chief."""
    return [f"algo-{i}" for i in range(1, count + 1)]


def private_file(path: Path) -> int:
    """A file descriptor appending to path, created readable by its owner only (logs hold what a job printed)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


@dataclass(frozen=True)
class HostLayout:
    """What every host folder gets; `create` writes one as SageMaker prepares /opt/ml on an instance."""

    hosts: list[str]
    hyperparameters: dict[str, str]
    channels: Mapping[str, ChannelSpec]  # their folders are filled by `channels.hosts.lay_out_channels`
    sourcedir: Path
    network_interface: str = "lo"  # eth0 in a container, as on SageMaker

    def resource_config(self, host: str) -> dict[str, Any]:
        return {
            "current_host": host,
            "current_instance_type": INSTANCE_TYPE,
            "current_group_name": "homogeneousCluster",
            "hosts": self.hosts,
            "instance_groups": [
                {"instance_group_name": "homogeneousCluster", "instance_type": INSTANCE_TYPE, "hosts": self.hosts}
            ],
            "network_interface_name": self.network_interface,
        }

    def create(self, host_dir: Path, host: str) -> None:
        config = host_dir / "input" / "config"
        config.mkdir(parents=True)
        _write_json(config / "hyperparameters.json", self.hyperparameters)
        _write_json(config / "resourceconfig.json", self.resource_config(host))
        _write_json(config / "inputdataconfig.json", {c: container_channel(ch) for c, ch in self.channels.items()})
        for folder in ("model", "output/data", "checkpoints"):
            (host_dir / folder).mkdir(parents=True)
        safe_extract(self.sourcedir, host_dir / "code")


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))

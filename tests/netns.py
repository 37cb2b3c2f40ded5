"""Network namespaces for the control plane's toolkit hosts, and a loopback relay into them.

TensorFlow's gRPC server binds `*:8890` on every host, so two hosts on one machine need two network
stacks (FACTS.md). Each host gets a namespace of its own with an `eth0` plugged into a bridge that lives
in one more namespace, so nothing changes in the root namespace but the names under /run/netns. moto
listens on the root namespace's 127.0.0.1, which a host cannot reach: `Relay` listens on the host's own
127.0.0.1 and connects to moto from the root namespace. A socket keeps the namespace it was made in, so one
thread enters the host's namespace only to make the listening socket (setns is per thread for the network
namespace); nothing is sent to any address but loopback and the namespaces' own.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import threading
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

NETNS_FILE = "netns.json"
SUBNET = "10.231.0"  # each job has its own bridge, so every job can use the same addresses
CLONE_NEWNET = 0x40000000
RELAY_PORT = 9000  # on each host's own loopback


def missing() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip` or `unshare`, `ip netns add` refused), or None."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (Debian package {package})"
    probe = HostNetwork.new(["algo-1"])
    try:
        probe.create()
    except subprocess.CalledProcessError as e:
        return f"`ip netns add` failed: {(e.stderr or '').strip().splitlines()[0][:200]}"
    finally:
        probe.delete()
    return None


def _ip_batch(commands: list[str], namespace: str | None = None, check: bool = True) -> None:
    """`ip` commands in one process (in a namespace with `-n`, which batch lines cannot name themselves)."""
    where = ["-n", namespace] if namespace else []
    subprocess.run(
        ["ip", *where, "-force", "-batch", "-"],
        input="\n".join(commands) + "\n",
        text=True,
        check=check,
        capture_output=True,
    )


@dataclass(frozen=True)
class HostNetwork:
    """One job's namespaces: `ct-<token>-algo-N` per host and `ct-<token>-br` holding the bridge."""

    token: str
    hosts: tuple[str, ...]

    @classmethod
    def new(cls, hosts: list[str] | tuple[str, ...]) -> HostNetwork:
        return cls(uuid.uuid4().hex[:10], tuple(hosts))

    @property
    def bridge(self) -> str:
        return f"ct-{self.token}-br"

    def namespace(self, host: str) -> str:
        return f"ct-{self.token}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def hosts_file(self) -> str:
        """/etc/hosts of every host: itself and its peers by their SageMaker names."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        return "\n".join(lines + [f"{self.address(h)}\t{h}" for h in self.hosts]) + "\n"

    def create(self) -> None:
        """The namespaces, the bridge and one veth per host (`eth0` inside), all links up."""
        self.delete()  # a previous run of the same job (a spot replacement) may have left them
        _ip_batch([f"netns add {n}" for n in (self.bridge, *(self.namespace(h) for h in self.hosts))])
        bridge = ["link add br0 type bridge", "link set br0 up"]
        for i, host in enumerate(self.hosts, 1):
            veth = f"link add v{i} type veth peer name eth0 netns {self.namespace(host)}"
            bridge += [veth, f"link set v{i} master br0 up"]
        _ip_batch(bridge, self.bridge)
        for host in self.hosts:
            address = f"addr add {self.address(host)}/24 dev eth0"
            _ip_batch([address, "link set eth0 up", "link set lo up"], self.namespace(host))

    def delete(self) -> None:
        """Every namespace of the job (their links go with them); missing ones are fine."""
        _ip_batch([f"netns del {n}" for n in (*(self.namespace(h) for h in self.hosts), self.bridge)], check=False)

    def save(self, folder: Path) -> None:
        (folder / NETNS_FILE).write_text(json.dumps({"token": self.token, "hosts": list(self.hosts)}))

    @classmethod
    def load(cls, folder: Path) -> HostNetwork | None:
        try:
            data = json.loads((folder / NETNS_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(data["token"], tuple(data["hosts"]))


def listen_in(namespace: str, port: int) -> socket.socket:
    """A TCP socket listening on 127.0.0.1:port inside a named network namespace."""
    made: list[socket.socket | BaseException] = []

    def enter_and_listen() -> None:  # this thread alone enters the namespace, and ends there
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace}")
            finally:
                os.close(fd)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            made.append(sock)
        except BaseException as e:
            made.append(e)

    thread = threading.Thread(target=enter_and_listen, name=f"listen-in-{namespace}")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


@dataclass
class Relay:
    """Connections to 127.0.0.1:RELAY_PORT inside each namespace, relayed to `target` in the root namespace."""

    target: tuple[str, int]
    _listeners: list[socket.socket] = field(default_factory=list)

    def serve(self, namespace: str) -> None:
        listener = listen_in(namespace, RELAY_PORT)
        self._listeners.append(listener)
        threading.Thread(target=self._accept, args=(listener,), name=f"relay-{namespace}", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                inside, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                outside = socket.create_connection(self.target, timeout=30)
            except OSError:
                inside.close()
                continue
            outside.settimeout(None)
            threading.Thread(target=_relay, args=(inside, outside), daemon=True).start()

    def close(self) -> None:
        for listener in self._listeners:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()


def _relay(inside: socket.socket, outside: socket.socket) -> None:
    """Both ways until both sides are done, then close both."""
    back = threading.Thread(target=_pipe, args=(outside, inside), daemon=True)
    back.start()
    _pipe(inside, outside)
    back.join()
    inside.close()
    outside.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Bytes one way until EOF, then half-close the other side (both close when both ways are done)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with suppress(OSError):
            source.shutdown(socket.SHUT_RD)

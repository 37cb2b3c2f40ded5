"""A Docker engine of the tests' own, a small TensorFlow base image made without any registry, and a registry.

`Engine.start` runs Debian's `dockerd` as root with everything of its own: data root, exec root, pid file,
socket, and a bridge (`ctdk<n>`) it is given instead of `docker0`, so it cannot meet another engine on the
machine. `stop` ends it by its PID and deletes the bridge, the iptables rules that name the bridge (dockerd
leaves some), and its folders.

`base_image` makes `cloudtrain-test-tf:<key>`: Debian bookworm by `debootstrap`, Python, and this venv's
tensorflow-cpu and boto3 installed from wheels `pip download`ed on the host (so the container needs no
network). The host's CA bundle goes into it too: on this kind of machine pip inside a container reaches the
package index only with it (FACTS.md). That belongs to the tests, never to docker/Dockerfile. The image is
cached as a `docker save` tarball under the cache folder, keyed by the recipe's hash, and `docker load`ed
next time.

`Registry` is Debian's `docker-registry` (the CNCF distribution registry) on 127.0.0.1, with htpasswd auth
for the user and password ECR's GetAuthorizationToken gives.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("docker.io", "debootstrap", "docker-registry")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3", "python3-pip", "ca-certificates")
DEBIAN_PYTHON = "3.11"  # bookworm's python3
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_REPOSITORY = "cloudtrain-test-tf"
START_TIMEOUT_S = 60.0


def cache_dir() -> Path:
    """Where the base image tarball is kept between runs: $CLOUDTRAIN_TEST_CACHE, else ~/.cache/cloudtrain-tests."""
    return Path(os.environ.get("CLOUDTRAIN_TEST_CACHE") or Path.home() / ".cache" / "cloudtrain-tests")


def why_no_engine() -> str | None:
    """Why this machine cannot start an engine for the tests (None: it can, installing what is missing)."""
    if os.geteuid() != 0:
        return f"a Docker engine needs root to start (dockerd, bridges, iptables); the tests run as uid {os.geteuid()}"
    if sys.platform != "linux":
        return f"dockerd runs on Linux only, not {sys.platform}"
    missing = [tool for tool in ("dockerd", "debootstrap", "docker-registry") if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed and no apt-get to install {' '.join(PACKAGES)}"
    return None


def install() -> None:
    """`apt-get install docker.io debootstrap docker-registry` where missing (what scripts/setup does for CI)."""
    if all(shutil.which(tool) for tool in ("dockerd", "debootstrap", "docker-registry")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    if subprocess.run([*apt, "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env).returncode:
        subprocess.run([*apt, "update", "-qq"], env=env, check=True)
        subprocess.run([*apt, "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env, check=True)


def _free_bridge_name() -> str:
    existing = set(os.listdir("/sys/class/net"))
    return next(f"ctdk{n}" for n in range(1000) if f"ctdk{n}" not in existing)


def _free_subnet() -> str:
    """A /24 in 172.29.0.0/16 that no interface of this machine uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    return next(f"172.29.{n}" for n in range(10, 250) if f" 172.29.{n}." not in used)


@dataclass
class Engine:
    """A running dockerd of the tests' own; `env` is what a docker CLI needs to reach it."""

    root: Path
    proc: subprocess.Popen[bytes]
    bridge: str
    subnet: str  # its first three octets
    cli_config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cli_config = self.root / "cli-config"  # no credential helper of the machine's ~/.docker is used
        self.cli_config.mkdir(exist_ok=True)

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.cli_config)}

    def docker(self, *args: str, cli: str = "docker", check: bool = True, **kw: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            [cli, *args], env={**os.environ, **self.env()}, capture_output=True, text=True, check=check, **kw
        )

    @classmethod
    def start(cls) -> Engine:
        root = Path(tempfile.mkdtemp(prefix="ct-dockerd-"))  # short: the socket's path has a length limit
        bridge, subnet = _free_bridge_name(), _free_subnet()
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        try:
            subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], check=True)
            subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
            log = open(root / "dockerd.log", "wb")  # noqa: SIM115 (the daemon writes it until stop)
            proc = subprocess.Popen(
                [
                    "dockerd",
                    f"--data-root={root / 'data'}",
                    f"--exec-root={root / 'exec'}",
                    f"--pidfile={root / 'dockerd.pid'}",
                    f"--host=unix://{root / 'docker.sock'}",
                    f"--bridge={bridge}",
                    "--default-address-pool=base=172.28.0.0/16,size=24",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
        except BaseException:
            subprocess.run(["ip", "link", "delete", bridge], check=False)
            shutil.rmtree(root, ignore_errors=True)
            raise
        engine = cls(root, proc, bridge, subnet)
        deadline = time.monotonic() + START_TIMEOUT_S
        while engine.docker("info", "--format", "{{.ServerVersion}}", check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
                engine.stop()
                raise RuntimeError(f"dockerd did not start:\n{tail}")
            time.sleep(0.3)
        return engine

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after 30 s), then delete its bridge, any mount left under its root, the root."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        _delete_rules_naming(self.bridge, f"{self.subnet}.0/24")
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _delete_rules_naming(bridge: str, subnet: str) -> None:
    """The iptables rules dockerd left that name this engine's bridge or subnet (never another engine's)."""
    for table in ("filter", "nat"):
        listed = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False)
        for rule in listed.stdout.splitlines():
            words = rule.split()
            if words[:1] == ["-A"] and (bridge in words or subnet in words):
                subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True, check=False)


def _unmount_under(root: Path) -> None:
    """Lazily unmount whatever is still mounted below root (deepest first), so deleting it cannot reach further."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# --- the TensorFlow base image ----------------------------------------------------------------------------


def _recipe() -> dict[str, object]:
    """Everything the base image is made from: the key of its cache entry."""
    return {
        "suite": SUITE,
        "debian": DEBIAN_PACKAGES,
        "pip": _pins(),
        "ca": hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest() if HOST_CA_BUNDLE.is_file() else None,
        "code": hashlib.sha256(inspect.getsource(_make_rootfs).encode()).hexdigest(),
    }


def base_image(engine: Engine) -> tuple[str, str]:
    """(`cloudtrain-test-tf:<key>` in the engine, how it got there: "cached" or "made in N s")."""
    key = hashlib.sha256(json.dumps(_recipe(), sort_keys=True).encode()).hexdigest()[:16]
    name = f"{BASE_REPOSITORY}:{key}"
    cache = cache_dir()
    tarball = cache / f"{BASE_REPOSITORY}-{key}.tar"
    if tarball.is_file():
        engine.docker("load", "-q", "-i", str(tarball))
        return name, "cached"
    started = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=cache))
    try:
        rootfs = _make_rootfs(work)
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        env = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        subprocess.run(
            ["docker", "import", "-c", env, "-", name],
            stdin=tar.stdout,
            env={**os.environ, **engine.env()},
            capture_output=True,
            check=True,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the base image's root failed")
        partial = work / "image.tar"
        engine.docker("save", "-o", str(partial), name)
        os.replace(partial, tarball)
        for old in cache.glob(f"{BASE_REPOSITORY}-*.tar"):  # one base image is kept: the current recipe's
            if old != tarball:
                old.unlink()
    finally:
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    return name, f"made in {time.monotonic() - started:.0f} s"


def _make_rootfs(work: Path) -> Path:
    """Debian by debootstrap, then tensorflow-cpu and boto3 from wheels downloaded on the host (no network inside)."""
    rootfs, wheels = work / "rootfs", work / "rootfs" / "tmp" / "wheels"
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(rootfs), MIRROR],
        capture_output=True,
        check=True,
    )
    (rootfs / f"usr/lib/python{DEBIAN_PYTHON}/EXTERNALLY-MANAGED").unlink(
        missing_ok=True
    )  # pip install as root, as images do
    if HOST_CA_BUNDLE.is_file():  # test-only: this machine's package index needs it (FACTS.md)
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    pins = _pins()
    for_debian = ["--python-version", DEBIAN_PYTHON, "--only-binary=:all:"]  # whatever Python runs the tests
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", *for_debian, "-d", str(wheels), *pins], check=True)
    inside = ["chroot", str(rootfs), "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "python3", "-m", "pip"]
    subprocess.run(
        [*inside, "install", "-q", "--no-index", "--find-links", "/tmp/wheels", "--root-user-action=ignore", *pins],
        check=True,
    )
    shutil.rmtree(wheels)
    for cached in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cached).glob("*"):
            if entry.is_file():
                entry.unlink()
    return rootfs


def _pins() -> list[str]:
    """This venv's TensorFlow and boto3: the image trains with what the process mode trains with."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in ("tensorflow-cpu", "boto3")]


# --- a registry on loopback -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    """Debian's docker-registry on 127.0.0.1:<port>, with one user (htpasswd, bcrypt)."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    user: str
    password: str

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, root: Path, user: str, password: str) -> Registry:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated, and enough for one bcrypt line (glibc's libxcrypt has bcrypt)

        root.mkdir(parents=True, exist_ok=True)
        (root / "htpasswd").write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        port = free_port()
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
            "http": {"addr": f"127.0.0.1:{port}"},
            "auth": {"htpasswd": {"realm": "cloudtrain-tests", "path": str(root / "htpasswd")}},
        }
        (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        log = open(root / "registry.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        registry = cls(root, port, proc, user, password)
        deadline = time.monotonic() + START_TIMEOUT_S
        while registry.status("/v2/", auth=False) != 401:
            if proc.poll() is not None or time.monotonic() > deadline:
                registry.stop()
                raise RuntimeError("docker-registry did not start: " + (root / "registry.log").read_text()[-2000:])
            time.sleep(0.1)
        return registry

    def get(self, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        """(HTTP status, body) of a GET, with the user's basic auth unless `auth` is False; 0 when unreachable."""
        request = urllib.request.Request(f"http://{self.host}{path}")
        request.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()
        except OSError:
            return 0, b""

    def status(self, path: str, *, auth: bool = True) -> int:
        return self.get(path, auth=auth)[0]

    def tags(self, repository: str) -> list[str]:
        status, body = self.get(f"/v2/{repository}/tags/list")
        return list(json.loads(body).get("tags") or []) if status == 200 else []

    def manifest(self, repository: str, tag: str) -> str | None:
        status, body = self.get(f"/v2/{repository}/manifests/{tag}")
        return body.decode() if status == 200 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

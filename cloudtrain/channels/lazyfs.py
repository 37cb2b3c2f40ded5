"""FastFile on this machine: a read-only FUSE file system that lists a host's share of a channel at once and
fetches each object from S3 on its first read, into the same cache as File mode (so a later job, or a File-mode
channel over the same objects, finds it there).

A script that reads 1% of the files fetches about 1% of the bytes; nothing is fetched before the script starts.
Runs as its own process (`python -m cloudtrain.channels.lazyfs MANIFEST MOUNTPOINT`), started and ended with the
job by `mounted`. Needs /dev/fuse, the fuse3 package (fusermount3) and `pip install 'cloudtrain[fastfile]'`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudtrain.channels.s3cache import ChannelCache, ChannelObject, read_manifest
from cloudtrain.errors import UserError

MODULE = "cloudtrain.channels.lazyfs"
MOUNT_TIMEOUT_S = 20.0


def unavailable() -> str | None:
    """Why a FastFile channel cannot be mounted here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (a container without --device /dev/fuse?)"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "fusermount3 is missing (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:  # OSError: the binding found no libfuse
        return f"the FUSE binding cannot load ({e}): pip install 'cloudtrain[fastfile]' and apt-get install fuse3"
    return None


def _tree(objects: list[ChannelObject]) -> tuple[dict[str, ChannelObject], dict[str, set[str]]]:
    files = {"/" + o.name: o for o in objects}
    folders: dict[str, set[str]] = {"/": set()}
    for path in files:
        parent, _, child = path.rpartition("/")
        parent = parent or "/"
        while True:
            folders.setdefault(parent, set()).add(child)
            if parent == "/":
                break
            parent, _, child = parent.rpartition("/")
            parent = parent or "/"
    return files, folders


def filesystem(cache: ChannelCache, objects: list[ChannelObject], s3: Any) -> Any:
    """The FUSE operations over `objects`; each file's first read fetches it whole into `cache`."""
    import mfusepy as fuse

    files, folders = _tree(objects)
    locks: dict[str, threading.Lock] = {path: threading.Lock() for path in files}
    now = time.time()

    class LazyChannel(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            base = {"st_uid": os.getuid(), "st_gid": os.getgid(), "st_mtime": now, "st_atime": now, "st_ctime": now}
            if path in folders:
                return {**base, "st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
            if path in files:
                return {**base, "st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": files[path].size}
            raise fuse.FuseOSError(errno.ENOENT)

        def readdir(self, path: str, fh: Any) -> list[str]:
            if path not in folders:
                raise fuse.FuseOSError(errno.ENOTDIR)
            return [".", "..", *sorted(folders[path])]

        def open(self, path: str, flags: int) -> int:
            if path not in files:
                raise fuse.FuseOSError(errno.ENOENT)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise fuse.FuseOSError(errno.EROFS)
            return 0

        def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
            obj = files[path]
            with locks[path]:  # one fetch per file, however many threads read it
                try:
                    blob = cache.fetch_one(s3, obj)
                except Exception as e:  # any failure is the reader's EIO, and logged
                    print(f"lazyfs: {obj.uri}: {e}", file=sys.stderr, flush=True)
                    raise fuse.FuseOSError(errno.EIO) from None
            fd = os.open(blob, os.O_RDONLY)
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)

    return LazyChannel()


def serve(manifest: Path, mountpoint: Path) -> None:
    """Mount and serve until unmounted (foreground)."""
    import boto3
    import mfusepy as fuse

    from cloudtrain.aws import client_config

    cache, objects, aws = read_manifest(manifest)
    session = boto3.session.Session(profile_name=aws.get("profile"))
    where = {"region_name": aws.get("region") or None, "endpoint_url": aws.get("endpoint_url") or None}
    s3 = session.client("s3", config=client_config(), **where)
    _unmount_when_orphaned(mountpoint)
    fuse.FUSE(filesystem(cache, objects, s3), str(mountpoint), foreground=True, ro=True, nothreads=False)


@contextlib.contextmanager
def mounted(manifest: Path, mountpoint: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """The channel served at `mountpoint` for the block's duration; unmounted and its process ended after."""
    if reason := unavailable():
        raise UserError(f"fastfile channels on the local backend need FUSE: {reason}")
    mountpoint.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(manifest), str(mountpoint)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise UserError(f"could not mount the fastfile channel at {mountpoint} (see {log})")
            time.sleep(0.05)
        yield
    finally:
        unmount(mountpoint)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mounted_here(mountpoint: Path) -> bool:
    """Whether a FUSE file system is mounted there, live or not (a dead one fails `os.path.ismount`'s stat)."""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == target for line in mounts if line.split()[2].startswith("fuse"))
    except OSError:
        return os.path.ismount(mountpoint)


def unmount(mountpoint: Path) -> None:
    """Detach the mount, even one whose process is gone (lazily: a reader still inside lets go first)."""
    if not mounted_here(mountpoint):
        return
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u", "-z", str(mountpoint)] if tool else ["umount", "-l", str(mountpoint)]
    subprocess.run(command, check=False, capture_output=True)


def _unmount_when_orphaned(mountpoint: Path) -> None:
    """End the mount if the process that started this one (the job's runner) goes away without unmounting."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        unmount(mountpoint)

    threading.Thread(target=watch, name="lazyfs-orphan-watch", daemon=True).start()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))

"""tf-keras packed into the code tarball, for AWS's stock TensorFlow images that may not have it.

A legacy-Keras job (`distribution.keras`, TF_USE_LEGACY_KERAS=1) needs tf-keras of the image's TensorFlow minor
version. AWS's TF 2.18 and 2.19 training images list it among their core packages (tf-keras==2.18.0, 2.19.0 in
aws/deep-learning-containers' `Dockerfile.sagemaker.*.core_packages.json`); for the other TF >= 2.16 images that
is not established. Installing it at job start would need the network (not there with network isolation or in
a VPC without internet) and, through its `tensorflow` requirement, could pull a second TensorFlow. So cloudtrain
packs the pure-Python `tf_keras` package into the tarball under `.cloudtrain/vendor/` and puts that folder on
PYTHONPATH through the job's environment; AWS's toolkit passes its PYTHONPATH on to the script.

The package comes from this Python when its tf-keras is of the right minor version, else from a cache of wheels
fetched once with `pip download --no-deps` (`$XDG_CACHE_HOME/cloudtrain/tf-keras/<minor>`). The local backend
takes it from the same cache for its workers when this Python lacks tf-keras of its TensorFlow's minor version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING

from cloudtrain.errors import UserError
from cloudtrain.transfer.tarballs import iter_tree

if TYPE_CHECKING:
    from cloudtrain.spec.models import JobSpec

SHIPS_TF_KERAS = frozenset({"2.18", "2.19"})  # AWS's images that list tf-keras of their own minor version
VENDOR_DIR = ".cloudtrain/vendor"
CONTAINER_CODE_DIR = "/opt/ml/code"
PACKAGE = "tf_keras"


def vendored_minor(framework_version: str | None, legacy: bool) -> str | None:
    """The TF minor version whose tf-keras a job on AWS's stock image gets packed, or None when it needs none."""
    if framework_version is None or not legacy:
        return None
    parts = framework_version.split(".")
    minor = ".".join(parts[:2])
    if minor in SHIPS_TF_KERAS or (int(parts[0]), int(parts[1])) < (2, 16):  # before 2.16 tf.keras is Keras 2
        return None
    return minor


def container_pythonpath() -> str:
    return f"{CONTAINER_CODE_DIR}/{VENDOR_DIR}"


def tf_keras_entries(minor: str, cache: Path | None = None) -> list[tuple[str, Path]]:
    """(archive name, file) of tf_keras of TF `minor` under VENDOR_DIR; a UserError when it cannot be had."""
    folder = tf_keras_folder(minor, cache)
    return [(f"{VENDOR_DIR}/{PACKAGE}/{name}", path) for name, path in iter_tree(folder)]


def tf_keras_folder(minor: str, cache: Path | None = None) -> Path:
    """The `tf_keras` package folder of TF `minor`: this Python's, else the cache's (filled once); a UserError
    when it cannot be had."""
    return _installed_package(minor) or _cached_package(minor, cache or default_cache())


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudtrain" / "tf-keras"


def _installed_package(minor: str) -> Path | None:
    try:
        version = metadata.version("tf-keras")
    except metadata.PackageNotFoundError:
        return None
    spec = util.find_spec(PACKAGE)
    if not version.startswith(f"{minor}.") or spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _cached_package(minor: str, cache: Path) -> Path:
    folder = cache / minor / PACKAGE
    if folder.is_dir():
        return folder
    with tempfile.TemporaryDirectory(prefix="cloudtrain-tf-keras-") as tmp:
        wheel = _download(minor, Path(tmp))
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(f"{PACKAGE}/") and ".." not in name.split("/"):
                    zf.extract(name, unpacked)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(unpacked / PACKAGE, folder)  # atomic: a concurrent submit finds all of it or nothing
        except OSError:
            if not folder.is_dir():
                raise
    return folder


def _download(minor: str, dest: Path) -> Path:
    requirement = f"tf-keras=={minor}.*"
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run([*command, "-d", str(dest), requirement], capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("tf_keras-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise UserError(
            f"image.framework_version {minor}: AWS's image may lack tf-keras, which this job needs "
            f"(distribution.keras), and cloudtrain could not fetch {requirement} to pack it: {last}; "
            f"install it here ({sys.executable} -m pip install --no-deps '{requirement}') or set distribution.keras"
        )
    return wheels[-1]


def job_minor(spec: JobSpec) -> str | None:
    """`vendored_minor` for a spec: AWS's stock image (framework_version, or the default) and legacy Keras."""
    from cloudtrain.spec.models import legacy_keras

    return vendored_minor(spec.image.version if spec.image.kind == "framework" else None, legacy_keras(spec))


def job_entries(spec: JobSpec) -> list[tuple[str, Path]]:
    """The tarball entries a spec's job gets packed (none for most)."""
    minor = job_minor(spec)
    return tf_keras_entries(minor) if minor else []

"""cloudtrain.transfer.code: the code package (sourcedir.tar.gz), reproducible, with the runtime, and its digest."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from cloudtrain.errors import UserError
from cloudtrain.transfer.code import RUNTIME_STUB, build_code_package, code_tree, runtime_files, tarball_digest
from tests.job_project import make_spec


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def tar_modes(path: Path) -> dict[str, int]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: m.mode for m in tar.getmembers() if m.isfile()}


def test_code_tarball_is_reproducible_and_carries_the_runtime(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    first = build_code_package(spec.code, tmp_path / "a")
    for path in (tmp_path / "code").rglob("*"):
        os.utime(path, (1, 1))  # new mtimes must not change a byte
    second = build_code_package(spec.code, tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()
    # Named by a digest of what it holds, known without building it, and read back from a built one alike.
    assert first.sha256 == second.sha256 == code_tree(spec.code).sha256 == tarball_digest(first.path)
    assert first.sha256 != hashlib.sha256(first.path.read_bytes()).hexdigest()  # not the gzip bytes' hash

    members = tar_members(first.path)
    runtime = runtime_files()
    assert runtime, "cloudtrain/runtime/*.py should exist in the installed package"
    assert {"train.py", "requirements.txt", "lib/util.py", "cloudtrain/__init__.py"} <= set(members)
    for name, path in runtime:
        assert members[name] == path.read_bytes()
    assert set(members) == {"train.py", "requirements.txt", "lib/util.py", "cloudtrain/__init__.py"} | {
        n for n, _ in runtime
    }
    assert members["cloudtrain/__init__.py"] == RUNTIME_STUB.encode()
    assert first.runtime_included and first.note is None


def test_code_digest_follows_names_modes_and_contents(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    base = code_tree(spec.code)
    assert base.names == tuple(sorted(base.names)) and "cloudtrain/__init__.py" in base.names
    assert base.size == sum(len(s) if isinstance(s, bytes) else s.stat().st_size for _, s in base.entries)
    train = tmp_path / "code" / "train.py"
    train.chmod(0o755)
    executable = code_tree(spec.code)
    assert executable.sha256 != base.sha256  # the mode is in the tarball, so in the digest
    assert tarball_digest(build_code_package(spec.code, tmp_path / "x").path) == executable.sha256
    assert tar_modes(build_code_package(spec.code, tmp_path / "x").path)["train.py"] == 0o755
    train.chmod(0o644)
    assert code_tree(spec.code).sha256 == base.sha256
    (tmp_path / "code" / "lib" / "util.py").rename(tmp_path / "code" / "lib" / "util2.py")
    assert code_tree(spec.code).sha256 != base.sha256  # the names too


def test_a_file_changed_after_hashing_is_never_packed_under_the_old_digest(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    tree = code_tree(spec.code)
    (tmp_path / "code" / "train.py").write_text("print('edited while submitting')\n")
    with pytest.raises(UserError, match="changed while being packed"):
        build_code_package(spec.code, tmp_path / "out", tree=tree)
    assert not (tmp_path / "out" / "sourcedir.tar.gz").exists()
    (tmp_path / "code" / "train.py").unlink()
    with pytest.raises(UserError, match="cannot pack"):
        build_code_package(spec.code, tmp_path / "out", tree=tree)


def test_runtime_files_come_from_the_package_folder(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "runtime" / "sub").mkdir(parents=True)
    (pkg / "runtime" / "launcher.py").write_text("L = 1\n")
    (pkg / "runtime" / "sub" / "deep.py").write_text("D = 1\n")
    (pkg / "runtime" / "notes.txt").write_text("not shipped\n")
    (pkg / "runtime" / "__pycache__").mkdir()
    (pkg / "runtime" / "__pycache__" / "launcher.cpython-311.pyc").write_bytes(b"\0")
    package = build_code_package(make_spec(tmp_path).code, tmp_path / "out", package_dir=pkg)
    assert set(tar_members(package.path)) == {
        "train.py",
        "requirements.txt",
        "lib/util.py",
        "cloudtrain/__init__.py",
        "cloudtrain/runtime/launcher.py",
        "cloudtrain/runtime/sub/deep.py",
    }


def test_users_own_cloudtrain_package_wins(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    (tmp_path / "code" / "cloudtrain" / "runtime").mkdir(parents=True)
    (tmp_path / "code" / "cloudtrain" / "__init__.py").write_text("# vendored\n")
    (tmp_path / "code" / "cloudtrain" / "runtime" / "mine.py").write_text("M = 1\n")
    package = build_code_package(spec.code, tmp_path / "out")
    members = tar_members(package.path)
    assert members["cloudtrain/__init__.py"] == b"# vendored\n"
    assert not any(
        n.startswith("cloudtrain/")
        for n in members
        if n not in {"cloudtrain/__init__.py", "cloudtrain/runtime/mine.py"}
    )
    assert not package.runtime_included and "instead of cloudtrain's runtime" in (package.note or "")


def test_requirements_elsewhere_is_packed_as_the_root_requirements(tmp_path: Path) -> None:
    make_spec(tmp_path)
    (tmp_path / "code" / "deps").mkdir()
    (tmp_path / "code" / "deps" / "train.txt").write_text("pandas\n")
    spec = make_spec(tmp_path, {"code": {"requirements": "deps/train.txt"}})
    members = tar_members(build_code_package(spec.code, tmp_path / "out").path)
    assert members["requirements.txt"] == b"pandas\n"

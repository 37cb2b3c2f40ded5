"""fetch-model refuses hostile model archives, on both backends, and writes nothing outside the destination.

A finished job's model.tar.gz is replaced by a hostile one (in the local job's folder, or in moto's S3
where SageMaker would have written it), then `cloudtrain fetch-model JOB --to DEST` runs as a user would:
it must exit 2 with one line saying what it refused, leave no file outside DEST (nor a half-extracted
model in it), and still extract an honest archive that uses links inside itself.
"""

from __future__ import annotations

import gzip
import io
import random
import shutil
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from tests.clirun import Result, cloudtrain
from tests.test_faults import BUCKET, aws_env, finished_sagemaker_job, leftovers, one_line_error, tree
from tests.test_faults import local_job as local_job  # a fixture, asked for by name

MARK = f"pwned-{uuid.uuid4().hex[:8]}"  # the name every escape tries to write
ABSOLUTE = Path("/tmp") / MARK  # where the absolute-path entries point


def tarball(*entries: tuple[str, str, str | bytes]) -> bytes:
    """A .tar.gz of (kind, name, data or link target) entries: file, dir, symlink, hardlink, chardev, blockdev, fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for kind, name, value in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                data = value.encode() if isinstance(value, str) else value
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "chardev": tarfile.CHRTYPE,
                "blockdev": tarfile.BLKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = str(value)
            if kind in ("chardev", "blockdev"):
                info.devmajor, info.devminor = (1, 3) if kind == "chardev" else (7, 0)  # /dev/null, /dev/loop0
            tar.addfile(info)
    return buf.getvalue()


MODEL = ("file", "model.keras", "weights")  # an honest first entry: must not be left behind either


def symlink_maze() -> bytes:
    """The shape of CVE-2025-4517: links through folders nested past PATH_MAX, where os.path.realpath (and so
    tarfile's own `data` filter, before Python 3.11.13/3.12.11) stops resolving, and then a link out."""
    long = "d" * 247
    entries: list[tuple[str, str, str | bytes]] = [MODEL]
    path = ""
    for step in "abcdefghijklmnop":
        entries += [("dir", path + long, ""), ("symlink", path + step, long)]
        path += long + "/"
    deep = "/".join("abcdefghijklmnop") + "/" + "l" * 254
    entries += [("symlink", deep, "../" * 16), ("symlink", "escape", deep + "/../.."), ("file", f"escape/{MARK}", "x")]
    return tarball(*entries)


HOSTILE: dict[str, tuple[bytes, str]] = {  # name -> (archive, what the error says)
    "dot-dot": (tarball(MODEL, ("file", f"../../{MARK}", "x")), "unsafe path"),
    "deep-dot-dot": (tarball(MODEL, ("file", f"1/../../../../{MARK}", "x")), "unsafe path"),
    "absolute": (tarball(MODEL, ("file", str(ABSOLUTE), "x")), "unsafe path"),
    "symlink-absolute": (tarball(MODEL, ("symlink", "etc", "/etc"), ("file", "etc/" + MARK, "x")), "outside"),
    "symlink-up": (tarball(MODEL, ("symlink", "up", "../.."), ("file", f"up/{MARK}", "x")), "outside"),
    "symlink-through-symlink": (
        # d/up -> .. stays inside (it is the archive's root), but d/up/esc -> .. is then its parent.
        tarball(
            MODEL,
            ("dir", "d", ""),
            ("symlink", "d/up", ".."),
            ("symlink", "d/up/esc", ".."),
            ("file", f"d/up/esc/{MARK}", "x"),
        ),
        "goes through a link",
    ),
    "symlink-target-through-symlink": (
        tarball(
            MODEL,
            ("dir", "d", ""),
            ("symlink", "d/up", ".."),
            ("symlink", "esc", "d/up/.."),
            ("file", f"esc/{MARK}", "x"),
        ),
        "outside",
    ),
    "hardlink-up": (tarball(MODEL, ("hardlink", "passwd", "../../../../etc/passwd")), "outside"),
    "hardlink-absolute": (tarball(MODEL, ("hardlink", "passwd", "/etc/passwd")), "outside"),
    "hardlink-through-symlink": (
        tarball(MODEL, ("symlink", "root", "."), ("hardlink", "shadow", "root/../../etc/shadow")),
        "outside",
    ),
    "chardev": (tarball(MODEL, ("chardev", "null", "")), "device or fifo"),
    "blockdev": (tarball(MODEL, ("blockdev", "disk", "")), "device or fifo"),
    "fifo": (tarball(MODEL, ("fifo", "pipe", "")), "device or fifo"),
    "symlink-maze-past-path-max": (symlink_maze(), "goes through a link"),
}

HONEST = tarball(
    ("dir", "1", ""),
    ("file", "1/saved_model.pb", "pb"),
    ("symlink", "latest", "1"),  # a link to a folder inside
    ("symlink", "current", "latest"),  # a link to a link
    ("symlink", "1/model.keras", "../model.keras"),  # up, and still inside
    ("file", "model.keras", "weights"),
    ("hardlink", "copy.keras", "model.keras"),
)

Fetch = Callable[[bytes, Path], Result]


@pytest.fixture(params=["local", "sagemaker"])
def fetch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fetch:
    """`cloudtrain fetch-model JOB --to DEST` of a finished job whose model.tar.gz is the given archive.

    The job's home is a folder of its own, so the test's folder holds only what the fetch writes.
    """
    if request.param == "local":
        home, job = request.getfixturevalue("local_job")
        copy = tmp_path_factory.mktemp("home") / "home"
        shutil.copytree(home, copy, symlinks=True)

        def local(archive: bytes, dest: Path) -> Result:
            (copy / "jobs" / job / "model.tar.gz").write_bytes(archive)
            return cloudtrain("fetch-model", job, "--to", str(dest), home=copy)

        return local

    endpoint = request.getfixturevalue("aws_endpoint")
    finished_sagemaker_job("hostile", model_mib=0)

    def sagemaker(archive: bytes, dest: Path) -> Result:
        boto3.client("s3").put_object(Bucket=BUCKET, Key="runs/hostile/output/model.tar.gz", Body=archive)
        return cloudtrain(
            "fetch-model",
            "hostile",
            "--to",
            str(dest),
            "--backend",
            "sagemaker",
            home=tmp_path_factory.mktemp("home"),
            env=aws_env(endpoint),
        )

    return sagemaker


def outside(tmp_path: Path, dest: Path) -> dict[str, str]:
    """Every file around the destination (in the test's folder, but not in DEST) and at the absolute target."""
    files = {k: v for k, v in tree(tmp_path).items() if not (tmp_path / k).is_relative_to(dest)}
    return {**files, **({str(ABSOLUTE): "exists"} if ABSOLUTE.exists() else {})}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_fetch_model_refuses_a_hostile_archive(case: str, fetch: Fetch, tmp_path: Path) -> None:
    archive, reason = HOSTILE[case]
    dest = tmp_path / "work" / "artifacts"  # two levels under tmp_path, so ../.. lands inside it
    dest.mkdir(parents=True)
    before = outside(tmp_path, dest)

    fetched = fetch(archive, dest)

    assert fetched.code == 2, fetched.err
    line = one_line_error(fetched)
    assert "refusing" in line and reason in line and "model.tar.gz" in line, line
    assert outside(tmp_path, dest) == before, "nothing written outside the destination"
    assert not list(tmp_path.parent.rglob(f"*{MARK}*")), "no escape anywhere in this session's folders"
    assert not (dest / "model").exists(), "no half-extracted model"
    assert leftovers(dest) == []


def test_fetch_model_extracts_an_archive_with_links_inside_it(fetch: Fetch, tmp_path: Path) -> None:
    dest = tmp_path / "artifacts"
    fetched = fetch(HONEST, dest)
    assert fetched.code == 0, fetched.err
    model = dest / "model"
    assert (model / "current" / "saved_model.pb").read_text() == "pb"
    assert (model / "1" / "model.keras").read_text() == "weights"
    assert (model / "copy.keras").read_text() == "weights"
    assert leftovers(dest) == []


def flip_a_byte_of_the_weights() -> bytes:
    """An archive whose weights (incompressible: stored, not deflated) have one byte flipped, CRC-32 left as it was.

    Inflating stored blocks checks nothing, and S3's own checksums are of the corrupt bytes (they were
    uploaded so): only gzip's CRC-32 of the contents can tell.
    """
    weights = random.Random(7).randbytes(256 * 1024)
    archive = bytearray(tarball(("file", "model.keras", weights)))
    at = archive.index(weights[100_000:100_064])
    archive[at] ^= 0x01
    return bytes(archive)


def in_gzip_members(parts: int, padding: bytes = b"") -> bytes:
    """HONEST's tar split across several gzip members (as `cat a.gz b.gz` makes), then `padding`."""
    raw = gzip.decompress(HONEST)
    size = -(-len(raw) // parts)
    return b"".join(gzip.compress(raw[i : i + size]) for i in range(0, len(raw), size)) + padding


def test_fetch_model_refuses_a_corrupt_archive_and_keeps_the_old_model(fetch: Fetch, tmp_path: Path) -> None:
    dest = tmp_path / "artifacts"
    assert fetch(HONEST, dest).code == 0
    before = tree(dest / "model")

    fetched = fetch(flip_a_byte_of_the_weights(), dest)

    assert fetched.code == 2, fetched.err
    line = one_line_error(fetched)
    assert "model.tar.gz: corrupt" in line and "CRC-32" in line, line
    assert tree(dest / "model") == before and leftovers(dest) == []


@pytest.mark.parametrize(
    ("archive", "refused"),
    [
        pytest.param(in_gzip_members(3), None, id="several-gzip-members"),
        pytest.param(in_gzip_members(2, b"\0" * 1024), None, id="zero-padding-after"),
        pytest.param(HONEST[: len(HONEST) - 5], "ends before its gzip stream", id="truncated"),
        pytest.param(HONEST[:-8] + b"\0" * 8, "corrupt", id="trailer-zeroed"),
    ],
)
def test_fetch_model_reads_gzip_as_gzip_does(fetch: Fetch, tmp_path: Path, archive: bytes, refused: str | None) -> None:
    fetched = fetch(archive, tmp_path / "artifacts")
    if refused is None:
        assert fetched.code == 0, fetched.err
        assert (tmp_path / "artifacts" / "model" / "current" / "saved_model.pb").read_text() == "pb"
    else:
        assert fetched.code == 2 and refused in one_line_error(fetched), fetched.err

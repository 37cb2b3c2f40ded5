"""cloudtrain.image.stock: AWS's TensorFlow training images, from the built-in table and from the sagemaker SDK."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cloudtrain.errors import UserError
from cloudtrain.image.stock import _table, resolve_image
from cloudtrain.spec.models import ImageSpec
from tests.sdk import SDK_MISSING, SDK_PYTHON

GPU_219 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.19-gpu-py312"


def test_builtin_image_table() -> None:
    def uri(region: str, instance_type: str, version: str = "2.19", py: str | None = None) -> str:
        return resolve_image(
            ImageSpec(framework_version=version, py_version=py), region, instance_type, use_sdk=False
        ).uri

    assert uri("us-east-1", "ml.g5.xlarge") == GPU_219
    assert (
        uri("us-east-1", "ml.p4d.24xlarge", "2.16")
        == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.16-gpu-py310"
    )
    assert (
        uri("eu-west-1", "ml.m5.xlarge")
        == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.19-cpu-py312"
    )
    assert (
        uri("cn-north-1", "ml.c5.xlarge")
        == "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/tensorflow-training:2.19-cpu-py312"
    )
    with pytest.raises(UserError, match=r"2\.99"):
        uri("us-east-1", "ml.g5.xlarge", "2.99")
    with pytest.raises(UserError, match="py_version"):
        uri("us-east-1", "ml.g5.xlarge", "2.19", "py39")
    with pytest.raises(UserError, match="Inferentia"):
        uri("us-east-1", "ml.inf2.xlarge")
    with pytest.raises(UserError, match="region"):
        uri("xx-nowhere-1", "ml.g5.xlarge")


def test_image_uri_and_build() -> None:
    given = resolve_image(
        ImageSpec(uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1"), "us-east-1", "ml.g5.xlarge"
    )
    assert given.uri == "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1" and given.source == "image.uri"
    build = ImageSpec.model_construct(framework_version=None, py_version=None, uri=None, build=object())
    with pytest.raises(ValueError, match="built_uri"):
        resolve_image(build, "us-east-1", "ml.g5.xlarge")
    assert resolve_image(build, "us-east-1", "ml.g5.xlarge", built_uri="x/y:z").uri == "x/y:z"


REPO_ROOT = Path(__file__).resolve().parent.parent
SDK_BRANCH = """
import json, sys
from cloudtrain.errors import UserError
from cloudtrain.image.stock import resolve_image
from cloudtrain.spec.models import ImageSpec
out = {}
for version, region, instance_type in json.load(sys.stdin):
    for use_sdk in (True, False):
        try:
            choice = resolve_image(ImageSpec(framework_version=version), region, instance_type, use_sdk=use_sdk)
            result = {"uri": choice.uri, "source": choice.source}
        except UserError as e:
            result = {"refused": str(e)}
        out[f"{version} {region} {instance_type} {'sdk' if use_sdk else 'table'}"] = result
print(json.dumps(out))
"""


@pytest.mark.skipif(not SDK_PYTHON.exists(), reason=SDK_MISSING)
def test_image_resolution_through_the_sdk_agrees_with_the_builtin_table() -> None:
    """cloudtrain's SDK branch (`cloudtrain[images]` installed), run where the SDK is: .venv-sdk, with this
    checkout's cloudtrain on its path. It must pick the SDK's URI, agree with the built-in table wherever the
    table claims to cover (TF 2.12+, commercial, China and GovCloud regions), and refuse what the table refuses
    with a one-line UserError naming the field."""
    versions = [v for v in _table()["version_aliases"] if int(v.split(".")[1]) >= 12]
    regions = ("us-east-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1")
    cases = [(v, r, t) for v in versions for r in regions for t in ("ml.g5.xlarge", "ml.m5.xlarge")]
    cases += [("2.99", "us-east-1", "ml.g5.xlarge"), ("2.19", "us-east-1", "ml.inf2.xlarge")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "HOME": "/nonexistent"}
    done = subprocess.run(
        [str(SDK_PYTHON), "-c", SDK_BRANCH],
        input=json.dumps(cases),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])  # the SDK may log to stdout before
    newer = []  # versions newer than the SDK in .venv-sdk (sagemaker v2) knows: its answer is a refusal
    for version, region, instance_type in cases:
        sdk, table = (results[f"{version} {region} {instance_type} {kind}"] for kind in ("sdk", "table"))
        if "uri" in table and "Unsupported tensorflow version" in sdk.get("refused", ""):
            newer.append(version)
        elif "uri" in table:
            assert sdk.get("uri") == table["uri"], (version, region, instance_type, sdk)
            assert sdk["source"].startswith("sagemaker "), sdk  # the SDK answered, not the table
        else:
            assert "refused" in sdk, (version, region, instance_type, sdk)
            assert len(sdk["refused"].splitlines()) == 1
    known = [v for v in versions if v not in newer]

    def release(v: str) -> tuple[int, ...]:
        return tuple(map(int, v.split(".")))

    assert len(known) >= 5 and all(release(v) > max(map(release, known)) for v in newer), (known, set(newer))
    assert "image.framework_version 2.99" in results["2.99 us-east-1 ml.g5.xlarge sdk"]["refused"]
    assert "Inferentia" in results["2.19 us-east-1 ml.inf2.xlarge sdk"]["refused"]


SDK_URIS = """
import json, sys
from sagemaker import image_uris
out = {}
for version, region, instance_type in json.load(sys.stdin):
    try:
        uri = image_uris.retrieve("tensorflow", region=region, version=version, instance_type=instance_type,
                                  image_scope="training", py_version=None)
    except Exception as e:  # the SDK knows no image there: the built-in table must not claim one either
        uri = None
    out[f"{version} {region} {instance_type}"] = uri
print(json.dumps(out))
"""


@pytest.mark.skipif(not SDK_PYTHON.exists(), reason=SDK_MISSING)
def test_builtin_table_agrees_with_the_sdk_users_have() -> None:
    """The table cloudtrain ships gives the URIs the sagemaker SDK (v2, in its own venv) gives."""
    versions = [v for v in _table()["version_aliases"] if int(v.split(".")[1]) >= 12]
    cases = [
        (version, region, instance_type)
        for version in versions
        for region in ("us-east-1", "eu-west-1", "ap-southeast-2")
        for instance_type in ("ml.g5.xlarge", "ml.m5.xlarge")
    ]
    cases += [(v, "us-east-1", t) for v in ("2.3", "2.3.2") for t in ("ml.p4d.24xlarge", "ml.p3.2xlarge")]  # CUDA 11
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    run = subprocess.run(
        [str(SDK_PYTHON), "-c", SDK_URIS], input=json.dumps(cases), capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    sdk = json.loads(run.stdout.strip().splitlines()[-1])
    compared = 0
    for version, region, instance_type in cases:
        expected = sdk[f"{version} {region} {instance_type}"]
        if expected is None:
            continue
        builtin = resolve_image(ImageSpec(framework_version=version), region, instance_type, use_sdk=False).uri
        assert builtin == expected, (version, region, instance_type)
        compared += 1
    assert compared >= len(cases) // 2

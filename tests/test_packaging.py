"""`pip install .` gives the `cloudtrain` command without TensorFlow, as a CI pipeline that only submits needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.clirun import REPO

pytestmark = pytest.mark.slow


def test_plain_install_has_the_command_and_no_tensorflow(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(REPO)], check=True, cwd=tmp_path)

    version = subprocess.run([str(venv / "bin" / "cloudtrain"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("cloudtrain ")

    probe = (
        "import importlib.util, json, cloudtrain.pricing, cloudtrain.image.stock;"
        "print(json.dumps([importlib.util.find_spec(m) is None for m in ('tensorflow', 'sagemaker')]))"
    )
    missing = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert missing.stdout.strip() == "[true, true]", "neither TensorFlow nor the SDK comes with a plain install"

    # The package data the SageMaker backend needs offline (prices, image URI table) is installed too.
    image = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from cloudtrain.image.stock import resolve_image; from cloudtrain.spec.models import ImageSpec;"
            "print(resolve_image(ImageSpec(), 'us-east-1', 'ml.g5.xlarge', use_sdk=False).uri)",
        ],
        capture_output=True,
        text=True,
    )
    assert image.returncode == 0, image.stderr
    assert image.stdout.startswith("763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:")

"""Shared fixtures. Plain `pytest` is fast; `pytest --slow` (what CI runs) adds the TensorFlow tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.sagemaker_control_plane import ControlPlane
    from tests.toolkit_runner import Toolkit


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (real TensorFlow training)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow") or config.getoption("-m"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


# --- AWS on loopback (moto's server): used by the SageMaker backend's tests -------------------------


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    """One moto server for the session, on 127.0.0.1 and a free port (it starts in milliseconds)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_endpoint(_moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> str:
    """moto's endpoint URL, emptied for this test, with every AWS_* setting pointing at it and nowhere else.

    Dummy keys, us-east-1, no instance-metadata look-ups (that address is off loopback), and config files
    that do not exist, so a developer's ~/.aws never leaks in.
    """
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{_moto_server}/moto-api/reset", method="POST"), timeout=10)
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "CLOUDTRAIN_ROLE_ARN":
            monkeypatch.delenv(name)
    nowhere = tmp_path_factory.mktemp("no-aws-config")
    monkeypatch.setenv("AWS_ENDPOINT_URL", _moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key-do-not-print")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere / "credentials"))
    return _moto_server


# --- SageMaker's control plane on loopback, in front of moto: the SageMaker backend's end-to-end tests --------


SAGEMAKER_ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def sagemaker_endpoint(
    aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A SageMaker control plane that really runs jobs (tests/sagemaker_control_plane.py), moto behind it.

    AWS_ENDPOINT_URL points at it (it forwards S3, Logs, STS ... to moto) and CLOUDTRAIN_ROLE_ARN is set;
    on teardown every job it started is killed.
    """
    with _control_plane(aws_endpoint, monkeypatch, tmp_path_factory, toolkit=None) as plane:
        yield plane


@pytest.fixture(scope="session")
def _namespaces_missing() -> str | None:
    """Why network namespaces cannot be made here, or None (probed once: it makes and deletes one)."""
    from tests.netns import missing

    return missing()


@pytest.fixture(params=["4.8.3", "5.1.4"], ids=lambda version: f"toolkit-{version}")
def toolkit_endpoint(
    request: pytest.FixtureRequest,
    aws_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    _namespaces_missing: str | None,
) -> Iterator[ControlPlane]:
    """The control plane running stock-image jobs under AWS's sagemaker-training toolkit, once per version.

    Skipped, with what is missing, where namespaces cannot be made or .venv-toolkit is not there (jobs
    then run on the local runner in the sagemaker_endpoint tests only).
    """
    from tests.toolkit_runner import Toolkit

    toolkit = Toolkit(request.param)
    missing = _namespaces_missing or toolkit.missing()
    if missing:
        pytest.skip(f"AWS's toolkit cannot run here: {missing}")
    with _control_plane(aws_endpoint, monkeypatch, tmp_path_factory, toolkit=toolkit) as plane:
        yield plane


@contextlib.contextmanager
def _control_plane(
    aws_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    toolkit: Toolkit | None,
) -> Iterator[ControlPlane]:
    from tests.sagemaker_control_plane import ControlPlane

    home = tmp_path_factory.mktemp("sagemaker-control-plane")
    plane = ControlPlane(aws_endpoint, home, toolkit=toolkit).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", plane.url)
    monkeypatch.setenv("CLOUDTRAIN_ROLE_ARN", SAGEMAKER_ROLE)
    try:
        yield plane
    finally:
        plane.close()

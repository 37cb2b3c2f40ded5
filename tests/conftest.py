"""Shared fixtures. Plain `pytest` is fast; `pytest --slow` (what CI runs) adds the TensorFlow tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.loopback_aws import ROLE_ARN, MotoServer, aws_env

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
def _moto_server() -> Iterator[MotoServer]:
    """One moto server for the session (tests/loopback_aws.py, shared with scripts/bench)."""
    server = MotoServer()
    yield server
    server.close()


@pytest.fixture
def aws_endpoint(
    _moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """moto's endpoint URL, emptied for this test, with every AWS_* setting pointing at it and nowhere else."""
    _moto_server.reset()
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "CLOUDTRAIN_ROLE_ARN":
            monkeypatch.delenv(name)
    for name, value in aws_env(_moto_server.url, tmp_path_factory.mktemp("no-aws-config")).items():
        monkeypatch.setenv(name, value)
    return _moto_server.url


# --- SageMaker's control plane on loopback, in front of moto: the SageMaker backend's end-to-end tests --------


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
    monkeypatch.setenv("CLOUDTRAIN_ROLE_ARN", ROLE_ARN)
    try:
        yield plane
    finally:
        plane.close()

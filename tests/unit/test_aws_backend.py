"""Choosing the local AWS backend: explicit requests are honoured or fail, never swapped."""

from __future__ import annotations

import pytest

from tests.support.aws_backend import (
    BackendUnavailableError,
    choose_backend,
    docker_available,
    fake_credentials_env,
)


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the Docker client at a socket that cannot exist, so the ping really fails."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/zipjobs-test/docker.sock")


def test_docker_ping_fails_fast_without_an_engine(no_docker: None) -> None:
    assert docker_available() is False


def test_localstack_requested_without_docker_fails_loudly(no_docker: None) -> None:
    with pytest.raises(BackendUnavailableError, match="no Docker engine answers"):
        choose_backend("localstack")


@pytest.mark.parametrize("value", ["auto", "", "  AUTO "])
def test_auto_falls_back_to_moto_without_docker(no_docker: None, value: str) -> None:
    assert choose_backend(value) == "moto"


def test_moto_needs_nothing(no_docker: None) -> None:
    assert choose_backend("moto") == "moto"


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(BackendUnavailableError, match="not one of auto, localstack, moto"):
        choose_backend("minio")


def test_env_var_is_read(no_docker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZIPJOBS_TEST_BACKEND", "localstack")
    with pytest.raises(BackendUnavailableError):
        choose_backend()


def test_fake_credentials_keep_clients_off_real_aws() -> None:
    env = fake_credentials_env("http://127.0.0.1:1234")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1234"
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"]  # both point nowhere

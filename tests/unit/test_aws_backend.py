"""Choosing the local AWS backend: explicit requests are honoured or fail, never swapped."""

from __future__ import annotations

from pathlib import Path

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


def test_localstack_docker_requested_without_docker_fails_loudly(no_docker: None) -> None:
    with pytest.raises(BackendUnavailableError, match="no Docker engine answers"):
        choose_backend("localstack-docker")


def test_localstack_host_mode_needs_no_docker(no_docker: None) -> None:
    assert choose_backend("localstack") == "localstack"


def test_localstack_host_mode_says_why_it_cannot_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the tox-made venv, or with the setup's "unavailable" reason, a one-line error."""
    from tests.support import localstack_host

    monkeypatch.delenv(localstack_host.VENV_ENV, raising=False)
    with pytest.raises(localstack_host.LocalStackUnavailableError, match="tox -e integration"):
        localstack_host._venv_python()
    venv = tmp_path / "ls"
    (tmp_path / "ls.unavailable").write_text("no Python 3.13 for LocalStack (...)\n")
    monkeypatch.setenv(localstack_host.VENV_ENV, str(venv))
    with pytest.raises(localstack_host.LocalStackUnavailableError, match=r"^no Python 3\.13"):
        localstack_host._venv_python()


def test_localstack_setup_without_python_313_skips_or_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.support import localstack_host

    monkeypatch.setattr(localstack_host, "find_python", lambda: None)
    monkeypatch.delenv("ZIPJOBS_REQUIRE_READERS", raising=False)
    assert localstack_host.setup(tmp_path / "ls") == 0
    assert (tmp_path / "ls.unavailable").read_text().startswith("no Python 3.13")
    monkeypatch.setenv("ZIPJOBS_REQUIRE_READERS", "1")
    assert localstack_host.setup(tmp_path / "ls") == 1


@pytest.mark.parametrize("value", ["auto", "", "  AUTO "])
def test_auto_falls_back_to_moto_without_docker(no_docker: None, value: str) -> None:
    assert choose_backend(value) == "moto"


def test_moto_needs_nothing(no_docker: None) -> None:
    assert choose_backend("moto") == "moto"


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(
        BackendUnavailableError, match="not one of auto, localstack, localstack-docker, moto"
    ):
        choose_backend("minio")


def test_env_var_is_read(no_docker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZIPJOBS_TEST_BACKEND", "localstack-docker")
    with pytest.raises(BackendUnavailableError):
        choose_backend()


def test_fake_credentials_keep_clients_off_real_aws() -> None:
    env = fake_credentials_env("http://127.0.0.1:1234")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1234"
    assert env["AWS_ACCESS_KEY_ID"] == "test"
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"]  # both point nowhere

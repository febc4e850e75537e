"""One local AWS endpoint (S3, SQS, DynamoDB over real HTTP) for the whole test session.

``ZIPJOBS_TEST_BACKEND`` chooses:

``moto``
    an in-process moto server on 127.0.0.1 for all three services.
``localstack``
    LocalStack in host mode, no Docker (tests/support/localstack_host.py):
    S3 and SQS from LocalStack, DynamoDB from moto through the per-service
    endpoint (``AWS_ENDPOINT_URL_DYNAMODB``), because LocalStack's DynamoDB
    needs a download that cannot happen offline. ``tox -e
    integration-localstack`` sets it up.
``localstack-docker``
    LocalStack in Docker through testcontainers, all three services.
``auto`` (default)
    ``localstack-docker`` when a Docker engine answers, else ``moto``.

Asking for a LocalStack that cannot run is an error (or, for host mode
without Python 3.13, a skip with the reason), never a silent fallback:
whoever asked wants to know the run was not what they thought.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from service.aws import AwsSettings

log = logging.getLogger(__name__)

BACKEND_ENV = "ZIPJOBS_TEST_BACKEND"
LOCALSTACK_IMAGE_ENV = "ZIPJOBS_LOCALSTACK_IMAGE"
# Pinned: an unpinned image moves under the suite, and newer LocalStack
# images may ask for an auth token.
DEFAULT_LOCALSTACK_IMAGE = "localstack/localstack:4.4"
REGION = "us-east-1"
# Fake credentials; real ones must never be used. moto accepts any; LocalStack
# checks presigned URLs against the secret "test" (as AWS checks them against
# the real secret), so "test" keeps its presign tests meaningful.
FAKE_ACCESS_KEY = "test"
FAKE_SECRET_KEY = "test"  # not a secret: an emulator placeholder

BackendName = Literal["moto", "localstack", "localstack-docker"]


class BackendUnavailableError(RuntimeError):
    """The backend that was asked for cannot run on this machine."""


@dataclass(frozen=True, slots=True)
class AwsEndpoint:
    """Where the session's emulated AWS lives, and which emulator it is."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    backend: BackendName
    # Services served elsewhere than ``endpoint_url``: (("dynamodb", url),)
    service_endpoints: tuple[tuple[str, str], ...] = ()

    def settings(self) -> AwsSettings:
        """The service's own settings type, so tests build clients like the service does."""
        return AwsSettings(
            region=self.region,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            service_endpoints=self.service_endpoints,
        )

    def url_for(self, service: str) -> str:
        return dict(self.service_endpoints).get(service, self.endpoint_url)

    def env(self) -> dict[str, str]:
        """``AWS_ENDPOINT_URL`` and the per-service ones, for processes and default clients."""
        env = {"AWS_ENDPOINT_URL": self.endpoint_url}
        env.update({f"AWS_ENDPOINT_URL_{s.upper()}": u for s, u in self.service_endpoints})
        return env

    @property
    def validates_presigned_urls(self) -> bool:
        """moto accepts a tampered or expired presigned URL; LocalStack does not."""
        return self.backend != "moto"


def docker_available() -> bool:
    """True only when a Docker engine answers a ping.

    ``shutil.which("docker")`` is not enough: the CLI is often installed with
    no daemon behind it. The ping fails within milliseconds when nothing listens.
    """
    try:
        docker = importlib.import_module("docker")  # untyped; comes with testcontainers
        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means "no usable engine"
        return False


def choose_backend(requested: str | None = None) -> BackendName:
    """Resolve ``ZIPJOBS_TEST_BACKEND`` to a backend that can actually run here."""
    choice = requested if requested is not None else os.environ.get(BACKEND_ENV, "auto")
    choice = choice.strip().lower() or "auto"
    if choice == "moto":
        return "moto"
    if choice == "localstack":
        return "localstack"  # host mode; its own start says why it cannot run
    if choice == "localstack-docker":
        if not docker_available():
            raise BackendUnavailableError(
                f"{BACKEND_ENV}=localstack-docker but no Docker engine answers "
                "(check DOCKER_HOST / that the daemon runs), or use localstack/moto/auto"
            )
        return "localstack-docker"
    if choice == "auto":
        return "localstack-docker" if docker_available() else "moto"
    raise BackendUnavailableError(
        f"{BACKEND_ENV}={choice!r} is not one of auto, localstack, localstack-docker, moto"
    )


@contextmanager
def moto_url() -> Iterator[str]:
    """A moto server in a thread of this process, on a port the OS picks (no races)."""
    from moto.server import ThreadedMotoServer

    from service.local.moto_atomic import serialize_dynamodb_writes

    serialize_dynamodb_writes()  # DynamoDB's conditional writes are atomic; moto's are not
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def fake_endpoint(
    url: str, backend: BackendName, service_endpoints: tuple[tuple[str, str], ...] = ()
) -> AwsEndpoint:
    """An endpoint in the test region with the fake credentials."""
    return AwsEndpoint(
        endpoint_url=url,
        region=REGION,
        access_key_id=FAKE_ACCESS_KEY,
        secret_access_key=FAKE_SECRET_KEY,
        backend=backend,
        service_endpoints=service_endpoints,
    )


@contextmanager
def moto_endpoint() -> Iterator[AwsEndpoint]:
    with moto_url() as url:
        yield fake_endpoint(url, "moto")


@contextmanager
def localstack_host_endpoint() -> Iterator[AwsEndpoint]:
    """LocalStack (S3, SQS) as a host process, DynamoDB from moto; no Docker."""
    from tests.support import localstack_host

    try:
        starting = localstack_host.localstack_host_endpoint()
        url = starting.__enter__()
    except localstack_host.LocalStackUnavailableError as err:
        raise BackendUnavailableError(str(err)) from err
    try:
        with moto_url() as dynamodb_url:
            yield fake_endpoint(url, "localstack", (("dynamodb", dynamodb_url),))
    finally:
        starting.__exit__(None, None, None)


def _localstack_container_class() -> type:
    """testcontainers 4.x moved modules under ``community``; accept both layouts."""
    try:
        from testcontainers.community.localstack import LocalStackContainer
    except ImportError:  # older 4.x
        from testcontainers.localstack import LocalStackContainer
    return LocalStackContainer


@contextmanager
def localstack_docker_endpoint() -> Iterator[AwsEndpoint]:
    """A LocalStack container with signature validation on (the default), S3/SQS/DynamoDB only."""
    image = os.environ.get(LOCALSTACK_IMAGE_ENV, DEFAULT_LOCALSTACK_IMAGE)
    container = (
        _localstack_container_class()(image=image, region_name=REGION)
        .with_services("s3", "sqs", "dynamodb")
        .with_env("S3_SKIP_SIGNATURE_VALIDATION", "0")
    )
    with container as running:
        yield fake_endpoint(running.get_url(), "localstack-docker")


@contextmanager
def aws_endpoint_for(backend: BackendName) -> Iterator[AwsEndpoint]:
    """Start ``backend`` and stop it when the block ends."""
    factory = {
        "moto": moto_endpoint,
        "localstack": localstack_host_endpoint,
        "localstack-docker": localstack_docker_endpoint,
    }[backend]
    with factory() as endpoint:
        log.info("test AWS endpoint: %s at %s", endpoint.backend, endpoint.endpoint_url)
        yield endpoint


def fake_credentials_env(endpoint_url: str | None = None) -> dict[str, str]:
    """Environment that keeps any client built from defaults off real AWS.

    Config and credential files point nowhere so a developer's ~/.aws profile
    is never read by a test; ``AWS_ENDPOINT_URL`` (when given) sends even a
    client built without our settings to the emulator.
    """
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if endpoint_url is not None:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return env


# Variables that would point a default client at a real account.
REAL_AWS_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")

"""The local stack of one load run: moto, the API and the worker, each its own process.

Configured purely by environment variables, the way a deployment configures
the services, against a moto server on 127.0.0.1. Nothing here talks to any
other address.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from loadtest.load_procs import LOOPBACK, Child, Children, free_port, http_ok, wait_until
from loadtest.load_seed import Manifest, Shape, plan, seed_bucket
from service.local.samples import make_pdf
from service.local.stack import FAKE_KEY, Provisioned, StackNames, provision

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NAMES = StackNames("load", max_receives=3, visibility_seconds=60)
SRC_BUCKET = NAMES.src_bucket
DST_BUCKET = NAMES.dst_bucket
MAX_KEYS = 1000  # low, so the bad-request user can exceed it cheaply
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": FAKE_KEY, "AWS_SECRET_ACCESS_KEY": FAKE_KEY}


@dataclass(frozen=True, slots=True)
class StackConfig:
    budget_mb: int
    worker_concurrency: int
    shapes: tuple[Shape, ...]
    log_dir: Path
    worker_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    """Handles to the running services and what was seeded."""

    moto: Child
    api: Child
    worker: Child
    endpoint: str
    api_url: str
    manifest: Manifest
    env: dict[str, str]
    seed_seconds: float


def clean_env() -> dict[str, str]:
    """The parent's environment without any AWS identity or proxy that could send us elsewhere."""
    drop = ("AWS_", "ZIPJOBS_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def boto_client(service: str, endpoint: str) -> Any:
    """A synchronous client for setup work (resources, seeding, janitor)."""
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=16,
        ),
    )


def create_resources(endpoint: str) -> Provisioned:
    """Buckets, job table (with TTL) and queues (with a DLQ): service/local's provisioning."""
    return asyncio.run(provision(endpoint, NAMES))


def pdf_bytes(size: int, seed: int) -> bytes:
    """A real one-page PDF of about ``size`` bytes (noise image: incompressible, like scans)."""
    return make_pdf(f"load sample {seed}", size, seed)


def service_env(stack: Provisioned, cfg: StackConfig) -> dict[str, str]:
    """The environment of the API and worker processes: only ZIPJOBS_* and AWS_* settings."""
    env = clean_env()
    env.update(
        stack.env(
            ZIPJOBS_SRC_PREFIXES="load/",
            ZIPJOBS_MAX_KEYS=str(MAX_KEYS),
            ZIPJOBS_BUDGET_MB=str(cfg.budget_mb),
            ZIPJOBS_WORKER_CONCURRENCY=str(cfg.worker_concurrency),
            ZIPJOBS_LEASE_SECONDS="30",
        )
    )
    return env


def _zipjobs(*args: str) -> list[str]:
    return [str(VENV_BIN / "zipjobs"), *args]


@contextlib.contextmanager
def running_stack(
    children: Children, cfg: StackConfig, on_start: Callable[[Child], None] = lambda c: None
) -> Iterator[Stack]:
    """Start moto, create and seed resources, start API and worker; stop them all on exit.

    ``on_start`` sees each service as soon as it is started (to sample it from then on).
    """
    env = clean_env()
    moto_port = free_port()
    endpoint = f"http://{LOOPBACK}:{moto_port}"
    moto = children.start(
        "moto",
        # moto with DynamoDB's atomic conditional writes (docs/DESIGN.md, "Emulators").
        [sys.executable, "-m", "service.local.moto_atomic", "-H", LOOPBACK, "-p", str(moto_port)],
        env,
        REPO,
    )
    on_start(moto)
    try:
        wait_until(http_ok(f"{endpoint}/moto-api/"), timeout=30, what="starting moto", child=moto)
        provisioned = create_resources(endpoint)
        t0 = time.monotonic()
        manifest = seed_bucket(
            boto_client("s3", endpoint), plan(cfg.shapes, SRC_BUCKET, MAX_KEYS), pdf_bytes
        )
        seed_seconds = time.monotonic() - t0

        senv = service_env(provisioned, cfg)
        api_port = free_port()
        api_url = f"http://{LOOPBACK}:{api_port}"
        api = children.start(
            "api", _zipjobs("serve", "--host", LOOPBACK, "--port", str(api_port)), senv, REPO
        )
        on_start(api)
        worker = children.start(
            # A short grace: at the end of a run, unfinished jobs are abandoned anyway.
            "worker",
            _zipjobs("worker", "--grace-seconds", "2"),
            senv | cfg.worker_env,
            REPO,
        )
        on_start(worker)
        wait_until(http_ok(f"{api_url}/healthz"), timeout=60, what="starting the API", child=api)
        yield Stack(moto, api, worker, endpoint, api_url, manifest, senv, seed_seconds)
    finally:
        for name in ("worker", "api", "moto"):
            children.stop(name)


class Janitor:
    """Deletes archives a while after they were written, so moto's memory tracks the load
    rather than the run's length (moto keeps every object in memory).

    Users download an archive as soon as they see READY; ``age`` seconds is ample.
    """

    def __init__(self, endpoint: str, age: float = 30.0, every: float = 5.0) -> None:
        self.s3 = boto_client("s3", endpoint)
        self.age = age
        self.every = every
        self.deleted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="janitor", daemon=True)

    def sweep(self) -> None:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.age)
        resp = self.s3.list_objects_v2(Bucket=DST_BUCKET, Prefix="archives/", MaxKeys=1000)
        old = [o["Key"] for o in resp.get("Contents", []) if o["LastModified"] < cutoff]
        if old:
            self.s3.delete_objects(
                Bucket=DST_BUCKET, Delete={"Objects": [{"Key": k} for k in old], "Quiet": True}
            )
            self.deleted += len(old)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):  # a missed sweep only costs moto memory
                self.sweep()

    def __enter__(self) -> Janitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

"""Property-based contract test: ``zipjobs serve`` (configured by environment
variables alone) against its own ``/openapi.json``.

schemathesis generates valid and invalid requests from the spec; the service
must never answer 5xx, and every answer must match the spec (status code,
content type, headers, body schema). Bounded: 50 examples per operation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.local.stack import StackNames, provision
from tests.support.aws_backend import AwsEndpoint
from tests.support.dev_process import stop_process

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def service_url(aws_endpoint: AwsEndpoint) -> Iterator[str]:
    """``zipjobs serve --with-worker`` in a subprocess, against the session's local AWS."""
    import asyncio

    stack = asyncio.run(
        provision(aws_endpoint.settings(), StackNames(f"st-{uuid.uuid4().hex[:8]}"))
    )
    env = {
        **os.environ,
        **stack.env(
            ZIPJOBS_SRC_PREFIXES="docs/,scans/",
            ZIPJOBS_MAX_KEYS="100",
            ZIPJOBS_MAX_BODY_BYTES="65536",
        ),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--with-worker",
            "--poll-seconds",
            "1",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("zipjobs serve: listening on "), line
        yield line.split()[-1]
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def api_schema(service_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{service_url}/openapi.json")


def test_served_spec_is_the_checked_in_one(service_url: str) -> None:
    with urllib.request.urlopen(f"{service_url}/openapi.json", timeout=10) as resp:
        served = json.loads(resp.read())
    assert served == json.loads((REPO / "service" / "openapi.json").read_text())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_spec(api_schema: Any, service_url: str, mode: GenerationMode) -> None:
    """Driven through hypothesis directly: schemathesis' pytest plugin and pytest 9 disagree."""
    calls: list[int] = []

    @given(case=api_schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def conforms(case: Any) -> None:
        response = case.call_and_validate(base_url=service_url, checks=CHECKS)
        calls.append(response.status_code)

    conforms()
    assert len(calls) >= 30  # it really exercised the service
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= status < 500 for status in calls)


def test_a_generated_job_still_finishes(service_url: str) -> None:
    """After the fuzzing, the service still runs jobs: a prefix with nothing under it FAILS
    with EmptyArchive instead of hanging."""
    req = urllib.request.Request(
        f"{service_url}/zip-jobs",
        data=json.dumps({"prefix": "docs/none/"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        job_url = service_url + json.loads(resp.read())["statusUrl"]
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(job_url, timeout=10) as resp:
            job = json.loads(resp.read())
        if job["status"] in ("READY", "FAILED", "CANCELLED"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "FAILED" and job["error"]["code"] == "EmptyArchive"

"""``zipjobs dev``: the whole service on an embedded local AWS, in one process.

A moto server on 127.0.0.1, the buckets, table and queues created, then the
API and a worker, until Ctrl-C or SIGTERM. Tunables (lease, TTLs, limits,
token...) can still be set with their ZIPJOBS_* variables; where the
resources are is decided here.
"""

from __future__ import annotations

import logging
import os
import sys

from ..api import run_server
from ..jobs import JobService
from ..process import setup_logging, stop_on_signals
from ..worker import Worker
from .stack import EmbeddedAws, Provisioned, StackNames, describe, provision

log = logging.getLogger("zipjobs.dev")

TUNABLES = (
    "ZIPJOBS_SRC_PREFIXES",
    "ZIPJOBS_DST_PREFIX",
    "ZIPJOBS_PRESIGN_TTL_SECONDS",
    "ZIPJOBS_JOB_TTL_DAYS",
    "ZIPJOBS_MAX_KEYS",
    "ZIPJOBS_MAX_BODY_BYTES",
    "ZIPJOBS_BUDGET_MB",
    "ZIPJOBS_WORKER_CONCURRENCY",
    "ZIPJOBS_LEASE_SECONDS",
    "ZIPJOBS_MANIFEST_PREFIX",
    "ZIPJOBS_API_TOKEN",
)


def tunables_from_env() -> dict[str, str]:
    return {k: os.environ[k] for k in TUNABLES if os.environ.get(k)}


def print_where(stack: Provisioned, api_url: str) -> None:
    print(describe(stack, api_url), flush=True)
    print(
        "try:  curl -s -XPOST -H 'Content-Type: application/json' "
        f'-d \'{{"prefix": ""}}\' {api_url}/zip-jobs',
        flush=True,
    )
    # The line scripts and tests wait for; keep its shape stable.
    print(f"zipjobs dev: ready at {api_url}", flush=True)


async def run_dev(host: str, port: int, moto_port: int, poll_seconds: int = 20) -> int:
    setup_logging()
    stop = stop_on_signals()
    with EmbeddedAws(moto_port) as aws:
        log.info("local AWS (moto) listening on %s", aws.endpoint_url)
        stack = await provision(aws.endpoint_url, StackNames("dev"))
        settings = stack.settings(**tunables_from_env())
        async with JobService.open(settings) as svc:
            worker = Worker(svc, poll_seconds=poll_seconds)
            await run_server(
                svc,
                host,
                port,
                stop=stop,
                worker=worker,
                on_ready=lambda url: print_where(stack, url),
                access_log=False,
            )
    print("zipjobs dev: stopped", file=sys.stderr, flush=True)
    return 0

"""The three Lambda entry points. Thin: translate the event, call ``service``.

- ``enqueue``: API Gateway HTTP API, ``POST /zip-jobs``
- ``status``:  API Gateway HTTP API, ``GET`` and ``DELETE /zip-jobs/{id}``
- ``zipper``:  SQS event source mapping with ``ReportBatchItemFailures``
- ``sweeper``: an EventBridge schedule (sweep the table for stuck jobs) and an
  SQS event source on the dead-letter queue (FAIL each dead-lettered job);
  see service/jobs/sweeper.py and docs/lifecycle.md

All three share the container state in ``runtime`` (loop, clients, budget)
and the same ``service.jobs`` functions as the aiohttp service and worker.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from service.aws import INTERACTIVE
from service.jobs import handle
from service.jobs.sweeper import handle_dead_letter, sweep

from . import apigw
from .integrity import cold_start_report
from .runtime import Container, configure_logging
from .sqs_batch import process_batch

logger = configure_logging()
_container: Container | None = None


def log_cold_start() -> None:
    """Say once per container whether the package fits this runtime (docs/packaging.md)."""
    report = cold_start_report()
    if report.healthy:
        logger.info("cold start: package matches the runtime", extra=report.as_log())
    else:
        logger.warning(
            "cold start: package does not match the runtime (see fallbacks, mismatches)",
            extra=report.as_log(),
        )


log_cold_start()


def container() -> Container:
    global _container
    if _container is None:
        _container = Container()
    return _container


def _http(event: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        svc = await container().service(INTERACTIVE)  # answers within the API deadline
        return apigw.to_result(await handle(svc, apigw.to_request(event)))

    return container().run(go())


@logger.inject_lambda_context(log_event=False)
def enqueue(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _http(event)


@logger.inject_lambda_context(log_event=False)
def status(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _http(event)


@logger.inject_lambda_context(log_event=False)
def zipper(event: dict[str, Any], context: Any) -> dict[str, Any]:
    owner = f"lambda:{os.environ.get('AWS_LAMBDA_LOG_STREAM_NAME', 'local')}:{uuid.uuid4().hex[:8]}"

    async def go() -> dict[str, Any]:
        svc = await container().service()
        budget = await container().budget()
        return await process_batch(
            svc,
            budget,
            event.get("Records", []),
            owner=owner,
            seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
        )

    return container().run(go())


@logger.inject_lambda_context(log_event=False)
def sweeper(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records")

    async def go() -> dict[str, Any]:
        svc = await container().service()
        if records is None:  # the schedule
            return {"swept": dict(await sweep(svc))}
        failures = []
        for record in records:  # dead letters; one failing does not redo the others
            try:
                done = await handle_dead_letter(svc, record.get("body", ""), record["messageId"])
            except Exception as err:
                logger.warning("dead letter %s: %s", record["messageId"], err)
                done = False
            if not done:
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    return container().run(go())

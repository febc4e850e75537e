"""What one Lambda container keeps between invocations.

One event loop, one set of AWS clients (``JobService``) and one byte
``Budget``, created on first use and reused by every warm invocation:
creating clients costs tens of milliseconds and TLS handshakes, and a new
loop per call would orphan the clients' connection pools.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from aws_lambda_powertools import Logger

from service.aws import BACKGROUND, CallLimits
from service.engine import Budget, MiB
from service.jobs import JobService
from service.memory import budget_for_memory_mib
from service.settings import MIN_JOB_BUDGET_MB, Settings

T = TypeVar("T")

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "zipjobs")
# The job a log line is about; set per SQS record, read by the log filter.
current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


class _JobIdFilter(logging.Filter):
    """Put ``job_id`` on every record, from the task's context, for the JSON formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = current_job.get()
        if job_id is not None:
            record.job_id = job_id
        return True


def configure_logging() -> Logger:
    """JSON logs for our logger and the ``service`` package's loggers alike.

    Request bodies, responses and presigned URLs are never logged anywhere in
    the code; this only chooses the format and adds the job id.
    """
    logger = Logger(service=SERVICE_NAME)
    handler = logger.registered_handler
    handler.addFilter(_JobIdFilter())
    package = logging.getLogger("service")
    package.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    package.handlers = [handler]
    package.propagate = False
    return logger


def default_budget_mb(function_memory_mb: int, files: int) -> int:
    """The largest budget the memory model (service/memory.py) fits in the function.

    ``files``: entries of the jobs that may run at once (max keys x batch
    size). Never below the smallest budget a job can run with; a function too
    small for that is refused by Terraform's precondition before it exists.
    """
    return max(MIN_JOB_BUDGET_MB, budget_for_memory_mib(function_memory_mb, files))


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Settings, with the budget defaulting to a share of the function memory."""
    env = dict(os.environ if env is None else env)
    if "ZIPJOBS_BUDGET_MB" not in env and "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" in env:
        # Each job of a batch may hold max_keys entries' metadata at once.
        default = {f.name: f.default for f in dataclasses.fields(Settings)}
        try:
            keys = int(env.get("ZIPJOBS_MAX_KEYS", str(default["max_keys"])))
            batch = int(env.get("ZIPJOBS_WORKER_CONCURRENCY", str(default["worker_concurrency"])))
        except ValueError:  # Settings.from_env below says what is wrong
            keys = batch = 1
        memory = int(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
        budget = max(default_budget_mb(memory, keys * batch), MIN_JOB_BUDGET_MB * batch)
        env["ZIPJOBS_BUDGET_MB"] = str(budget)
    return Settings.from_env(env)


class Container:
    """Loop, clients and budget of one Lambda container; built on first use."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._stack = AsyncExitStack()
        self._svc: JobService | None = None
        self._budget: Budget | None = None

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    async def service(self, limits: CallLimits = BACKGROUND) -> JobService:
        """The clients; ``limits`` counts on first use (one function = one role)."""
        if self._svc is None:
            settings = settings_from_env()
            self._svc = await self._stack.enter_async_context(
                JobService.open(settings, limits=limits)
            )
        return self._svc

    async def budget(self) -> Budget:
        if self._budget is None:
            svc = await self.service()
            self._budget = Budget(svc.settings.budget_mb * MiB)
        return self._budget

    def close(self) -> None:
        """For tests: release the clients and the loop."""
        self.loop.run_until_complete(self._stack.aclose())
        self.loop.close()

"""One chaos run: moto, the fault layer, ``zipjobs serve`` and workers as processes, a driver.

1. moto starts (its own process); the stack is provisioned (service/local);
   the sources are written straight to moto.
2. Each service process gets its own ``ChaosProxy`` (faults and kills of
   that process), and is restarted by a supervisor whenever it dies.
3. The driver submits the seeded jobs over ``submit_over_s`` seconds with an
   Idempotency-Key (retrying on 503 and refused connections, giving up when
   the connection drops mid-request: nobody rescues that job but the
   service), and cancels some of them.
4. It waits until every job in the table is final, or past the bound.
5. The processes stop and tests/chaos/invariants.py judges what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.load_procs import LOOPBACK, Child, Children, free_port, http_ok, wait_until
from loadtest.load_stack import clean_env
from service.aws import aws_client
from service.jobs.codec import decode
from service.jobs.models import JobRecord
from service.local.stack import Provisioned, StackNames, local_aws, provision
from tests.chaos.faults import ChaosConfig, FaultPlan, KillSchedule
from tests.chaos.invariants import judge
from tests.chaos.proxy import ChaosProxy
from tests.chaos.workload import JobSpec, plan_jobs, sources

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Submission:
    """What the client saw for one spec."""

    index: int
    spec: JobSpec
    job_id: str | None = None
    accepted: bool = False
    answers: list[str] = field(default_factory=list)
    cancelled: bool = False


@dataclass
class RunResult:
    config: ChaosConfig
    submissions: list[Submission]
    records: list[JobRecord]  # every job in the table at the end
    injected: dict[str, int]
    restarts: dict[str, int]
    stack: Provisioned
    seconds: float
    logs: Path


class Supervisor:
    """Keeps one process per role alive; the proxies kill them, it restarts them."""

    def __init__(self, children: Children, envs: dict[str, dict[str, str]]) -> None:
        self.children = children
        self.envs = envs
        self.current: dict[str, Child] = {}
        self.restarts: dict[str, int] = dict.fromkeys(envs, 0)
        self.stopping = False

    def _argv(self, role: str) -> list[str]:
        if role == "api":
            port = self.envs[role]["CHAOS_API_PORT"]
            return [str(BIN / "zipjobs"), "serve", "--host", LOOPBACK, "--port", port]
        return [str(BIN / "zipjobs"), "worker", "--poll-seconds", "1", "--grace-seconds", "2"]

    def start(self, role: str) -> Child:
        generation = self.restarts[role]
        child = self.children.start(f"{role}.{generation}", self._argv(role), self.envs[role], REPO)
        self.current[role] = child
        return child

    def kill(self, role: str) -> None:
        """SIGKILL, no goodbye: what an OOM kill or a lost host looks like."""
        child = self.current.get(role)
        if child is not None and child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)

    async def keep_alive(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.3)
            for role, child in list(self.current.items()):
                if not child.alive() and not self.stopping:
                    self.restarts[role] += 1
                    self.start(role)


@contextlib.asynccontextmanager
async def _moto(children: Children) -> AsyncIterator[str]:
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    child = children.start(
        "moto",
        [sys.executable, "-m", "service.local.moto_atomic", "-H", LOOPBACK, "-p", str(port)],
        clean_env(),
        REPO,
    )
    await asyncio.to_thread(
        wait_until, http_ok(f"{url}/moto-api/"), timeout=60, what="starting moto", child=child
    )
    yield url


def _service_env(stack: Provisioned, config: ChaosConfig, proxy_url: str) -> dict[str, str]:
    return clean_env() | stack.env(
        AWS_ENDPOINT_URL=proxy_url,
        ZIPJOBS_LEASE_SECONDS=str(config.lease_s),
        ZIPJOBS_MAX_KEYS="2000",
        ZIPJOBS_BUDGET_MB="64",
        ZIPJOBS_WORKER_CONCURRENCY="2",
        ZIPJOBS_API_DEADLINE_SECONDS="10",
        # The sweeper's knobs (docs/lifecycle.md), short so a run takes minutes.
        ZIPJOBS_SWEEP_INTERVAL_SECONDS="2",
        ZIPJOBS_RESEND_AFTER_SECONDS="5",
        ZIPJOBS_DLQ_URL=stack.dlq_url,
    )


async def _seed(stack: Provisioned, objects: dict[str, bytes]) -> None:
    async with aws_client("s3", local_aws(stack.endpoint_url)) as s3:
        sem = asyncio.Semaphore(8)

        async def put(key: str, data: bytes) -> None:
            async with sem:
                await s3.put_object(Bucket=stack.names.src_bucket, Key=key, Body=data)

        await asyncio.gather(*(put(k, v) for k, v in objects.items()))


async def _submit(
    session: aiohttp.ClientSession,
    api: str,
    sub: Submission,
    delay: float,
    kills: KillSchedule,
    seed: int,
) -> None:
    await asyncio.sleep(delay)
    headers = {"Idempotency-Key": f"chaos-{seed}-{sub.index}"}
    for _ in range(20):
        try:
            async with session.post(f"{api}/zip-jobs", json=sub.spec.body, headers=headers) as r:
                sub.answers.append(str(r.status))
                doc = await r.json(content_type=None)
                if r.status == 202:
                    sub.job_id, sub.accepted = doc["jobId"], True
                    break
                if r.status < 500:
                    return  # refused: the spec is wrong, the report shows it
        except aiohttp.ClientConnectorError:
            sub.answers.append("refused")  # the API is restarting: nothing happened
        except (aiohttp.ClientError, TimeoutError) as err:
            sub.answers.append(type(err).__name__)
            return  # cut mid-request: this client gives up; the job (if any) is the service's
        await asyncio.sleep(1)
    if sub.job_id is None:
        return
    if sub.spec.kind == "poison":
        kills.poison.add(sub.job_id)
    if sub.spec.cancel_after_s is not None:
        await asyncio.sleep(sub.spec.cancel_after_s)
        await _cancel(session, api, sub)


async def _cancel(session: aiohttp.ClientSession, api: str, sub: Submission) -> None:
    for _ in range(10):
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.delete(f"{api}/zip-jobs/{sub.job_id}") as r:
                sub.answers.append(f"DELETE {r.status}")
                if r.status in (202, 409):
                    sub.cancelled = r.status == 202
                    return
        await asyncio.sleep(1)


async def scan_jobs(dynamodb: Any, table: str) -> list[JobRecord]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = await dynamodb.scan(**kwargs)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return [decode(i) for i in items if i.get("kind", {}).get("S") == "job"]


async def _wait_final(dynamodb: Any, table: str, bound_s: float) -> list[JobRecord]:
    """Until every job is final, or the youngest unfinished one is past the bound."""
    while True:
        records = await scan_jobs(dynamodb, table)
        open_ = [r for r in records if not r.status.final]
        if not open_:
            return records
        youngest = max(r.created_at.timestamp() for r in open_)
        if time.time() - youngest > bound_s:
            return records
        await asyncio.sleep(1)


async def run_chaos(config: ChaosConfig, workdir: Path) -> dict[str, Any]:
    """Run, then judge while the emulator still holds the evidence; the report."""
    started = time.monotonic()
    objects = sources(config.seed)
    specs = plan_jobs(
        config.seed,
        config.jobs,
        objects,
        cancel_share=config.cancel_share,
        oversized=config.oversized_jobs,
        poison=config.poison_jobs,
    )
    kills = KillSchedule.of(config)
    with Children(workdir / "logs") as children:
        async with _moto(children) as moto_url:
            names = StackNames(
                f"chaos{config.seed}", max_receives=config.max_receives, visibility_seconds=30
            )
            stack = await provision(moto_url, names)
            await _seed(stack, objects)
            async with aws_client("dynamodb", local_aws(moto_url)) as db:
                roles = ["api", *(f"worker{i}" for i in range(config.workers))]
                plans = {role: FaultPlan(config, role, kills) for role in roles}
                supervisor = Supervisor(children, {})
                async with contextlib.AsyncExitStack() as proxies:
                    for role in roles:
                        proxy = await proxies.enter_async_context(
                            ChaosProxy(
                                moto_url,
                                plans[role],
                                kill=lambda r=role: supervisor.kill(r),  # type: ignore[misc]
                                dynamodb=db,
                            )
                        )
                        supervisor.envs[role] = _service_env(stack, config, proxy.url)
                        supervisor.restarts[role] = 0
                    api_port = str(free_port())
                    supervisor.envs["api"]["CHAOS_API_PORT"] = api_port
                    api = f"http://{LOOPBACK}:{api_port}"
                    for role in roles:
                        supervisor.start(role)
                    keeper = asyncio.create_task(supervisor.keep_alive())
                    await asyncio.to_thread(
                        wait_until, http_ok(f"{api}/healthz"), timeout=60, what="starting the API"
                    )
                    subs = [Submission(i, spec) for i, spec in enumerate(specs)]
                    step = config.submit_over_s / max(len(subs), 1)
                    timeout = aiohttp.ClientTimeout(total=30)
                    async with aiohttp.ClientSession(timeout=timeout) as session:
                        await asyncio.gather(
                            *(
                                _submit(session, api, s, i * step, kills, config.seed)
                                for i, s in enumerate(subs)
                            )
                        )
                    records = await _wait_final(db, stack.names.table, config.bound_s)
                    await _settle_uploads(stack, timeout_s=2 * config.lease_s + 5)
                    supervisor.stopping = True
                    keeper.cancel()
                    await asyncio.gather(keeper, return_exceptions=True)
                    for child in list(supervisor.current.values()):
                        child.stop(grace=3)
                injected: dict[str, int] = {}
                for plan in plans.values():
                    for kind, n in plan.injected.items():
                        injected[str(kind)] = injected.get(str(kind), 0) + n
            result = RunResult(
                config,
                subs,
                records,
                injected,
                dict(supervisor.restarts),
                stack,
                time.monotonic() - started,
                workdir / "logs",
            )
            return await judge(result)


async def _settle_uploads(stack: Provisioned, timeout_s: float) -> None:
    """Give a worker aborting a just-cancelled job's upload a moment before judging."""
    deadline = time.monotonic() + timeout_s
    async with aws_client("s3", local_aws(stack.endpoint_url)) as s3:
        while time.monotonic() < deadline:
            resp = await s3.list_multipart_uploads(Bucket=stack.names.dst_bucket)
            if not resp.get("Uploads"):
                return
            await asyncio.sleep(0.5)

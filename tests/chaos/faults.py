"""What the chaos layer breaks, decided from a seed so that a run can be replayed.

Every AWS request of every service process goes through a ``ChaosProxy``
(tests/chaos/proxy.py). For each one, the proxy's ``FaultPlan`` decides,
with a random generator seeded from (run seed, process role), whether to
break it and how:

* ``5xx``       an AWS error answer (S3 InternalError 500, DynamoDB
                InternalServerError 500, SQS InternalError 500);
* ``throttle``  a throttling answer (S3 SlowDown 503, DynamoDB
                ProvisionedThroughputExceededException 400, SQS RequestThrottled 400);
* ``reset``     the request reaches AWS, then the connection is cut in the
                middle of the answer (or before it, for an answer without a body):
                the caller cannot know whether its write happened;
* ``hang``      the request is held ``hang_s`` seconds, then the connection closes.

Process kills are scheduled, not random per request, so each kind happens in
every run: the API is SIGKILLed when it sends the k-th job message (after
the job was written: a lost send), a worker when it uploads the k-th part,
and the worker that touches a "poison" job's archive in any attempt.

The same seed gives the same workload and the same decision sequence per
process; the interleaving of processes (hence which request gets which
decision) still depends on timing, so a replay reproduces a run's mix of
faults, not its exact trace.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    ERROR_5XX = "5xx"
    THROTTLE = "throttle"
    RESET = "reset"
    HANG = "hang"
    ITEM_TOO_LARGE = "dynamodb-item-over-400KB"
    KILL_API_BEFORE_SEND = "kill-api-between-write-and-send"
    KILL_WORKER_MID_PART = "kill-worker-mid-part"
    KILL_WORKER_POISON = "kill-worker-every-attempt"


RANDOM_KINDS = (Kind.ERROR_5XX, Kind.THROTTLE, Kind.RESET, Kind.HANG)

# (status, code) per service for the error kinds; S3 speaks XML, the others JSON.
ERRORS: dict[tuple[Kind, str], tuple[int, str]] = {
    (Kind.ERROR_5XX, "s3"): (500, "InternalError"),
    (Kind.ERROR_5XX, "dynamodb"): (500, "InternalServerError"),
    (Kind.ERROR_5XX, "sqs"): (500, "InternalError"),
    (Kind.THROTTLE, "s3"): (503, "SlowDown"),
    (Kind.THROTTLE, "dynamodb"): (400, "ProvisionedThroughputExceededException"),
    (Kind.THROTTLE, "sqs"): (400, "RequestThrottled"),
}


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """One run's knobs; ``seed`` makes the workload and the fault decisions repeatable."""

    seed: int = 1
    jobs: int = 10
    fault_rate: float = 0.04  # share of AWS requests broken at random
    hang_s: float = 6.0
    workers: int = 2
    api_kills: int = 1
    part_kills: int = 1
    poison_jobs: int = 1
    oversized_jobs: int = 1
    cancel_share: float = 0.15
    bound_s: float = 100.0  # every job must be final this long after it was accepted
    # Short for quick takeovers, but a busy 2-core box must still renew it (1 s beats).
    lease_s: int = 6
    max_receives: int = 3
    submit_over_s: float = 8.0  # submissions are spread over this long


@dataclass(frozen=True, slots=True)
class Request:
    """An AWS call as the proxy sees it."""

    service: str  # s3 | sqs | dynamodb
    operation: str
    method: str
    path: str
    query: str
    body: bytes


def classify(method: str, path: str, query: str, target: str, body: bytes) -> Request:
    """Name the service and operation of a request (JSON protocols say it in X-Amz-Target)."""
    if target.startswith("DynamoDB_"):
        return Request("dynamodb", target.split(".", 1)[1], method, path, query, body)
    if target.startswith("AmazonSQS."):
        return Request("sqs", target.split(".", 1)[1], method, path, query, body)
    params = {p.split("=", 1)[0] for p in query.split("&") if p}
    if method == "PUT" and "partNumber" in params:
        op = "UploadPart"
    elif method == "POST" and "uploads" in params:
        op = "CreateMultipartUpload"
    elif method == "POST" and "uploadId" in params:
        op = "CompleteMultipartUpload"
    elif method == "DELETE" and "uploadId" in params:
        op = "AbortMultipartUpload"
    elif method == "GET" and "uploads" in params:
        op = "ListMultipartUploads"
    elif method == "GET" and "list-type" in params:
        op = "ListObjectsV2"
    else:
        op = {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject"}.get(
            method, f"{method}Object"
        )
    return Request("s3", op, method, path, query, body)


@dataclass
class KillSchedule:
    """Which occurrences kill a process; shared by every proxy of a run."""

    api_sends: set[int]  # the k-th SendMessage by the API (1-based)
    worker_parts: set[int]  # the k-th UploadPart by any worker
    poison: set[str] = field(default_factory=set)  # job ids whose archive write kills
    sends_seen: int = 0
    parts_seen: int = 0

    @classmethod
    def of(cls, config: ChaosConfig) -> KillSchedule:
        rng = random.Random(f"{config.seed}:kills")
        sends = range(1, max(config.jobs, config.api_kills + 1) + 1)
        return cls(
            api_sends=set(rng.sample(sends, config.api_kills)),
            # Early parts, so that the run has multipart jobs in flight to kill.
            worker_parts=set(rng.sample(range(1, 4 * config.part_kills + 2), config.part_kills)),
        )

    def kill_for(self, role: str, request: Request) -> Kind | None:
        if role == "api" and request.operation == "SendMessage":
            self.sends_seen += 1
            return Kind.KILL_API_BEFORE_SEND if self.sends_seen in self.api_sends else None
        if not role.startswith("worker") or request.service != "s3":
            return None
        if request.method in ("PUT", "POST") and any(f"/{j}/" in request.path for j in self.poison):
            return Kind.KILL_WORKER_POISON
        if request.operation == "UploadPart":
            self.parts_seen += 1
            return Kind.KILL_WORKER_MID_PART if self.parts_seen in self.worker_parts else None
        return None


class FaultPlan:
    """One process's fault decisions: its own seeded generator, the run's kill schedule."""

    def __init__(self, config: ChaosConfig, role: str, kills: KillSchedule) -> None:
        self.config = config
        self.role = role
        self.kills = kills
        self.rng = random.Random(f"{config.seed}:{role}")
        self.injected: Counter[str] = Counter()

    def decide(self, request: Request) -> Kind | None:
        kill = self.kills.kill_for(self.role, request)
        if kill is not None:
            return kill
        # One draw per request whatever happens, so the sequence depends on
        # the order of requests only.
        draw, pick = self.rng.random(), self.rng.choice(RANDOM_KINDS)
        if draw >= self.config.fault_rate:
            return None
        if pick is Kind.HANG and request.service == "sqs" and request.operation == "ReceiveMessage":
            return Kind.ERROR_5XX  # a hung long poll is indistinguishable from an empty one
        return pick

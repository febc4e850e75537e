"""The job table: every status change is a conditional write.

A job moves PENDING -> RUNNING <-> WAITING -> READY | FAILED | CANCELLED
(docs/lifecycle.md), and only the holder of a live lease may write a
RUNNING job's progress, finish it or hand it back (WAITING). DynamoDB
evaluates each condition atomically, so two workers that received the same
message, or a worker and a DELETE, cannot both win.
Each method returns whether its condition held instead of raising: losing a
race is a normal outcome that the caller decides about.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ..engine import Progress
from .bounds import cap_keys
from .codec import (
    HASH_KEY,
    TTL_ATTRIBUTE,
    decode,
    encode,
    error_item,
    fanout_item,
    iso,
    key_of,
    progress_json,
    range_slot,
    to_attr,
)
from .models import FailureReason, FanOut, JobRecord, JobStatus

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import PutTypeDef


_IDEM_PREFIX = "idem#"
# Placeholders for attribute names that are DynamoDB reserved words (or the key).
_NAMES = {"#s": "status", "#k": HASH_KEY, "#e": "error", "#kind": "kind"}
_UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.WAITING)
# A heartbeat's write: progress and a renewed lease (values from ``JobStore._renewal``).
_RENEW = (
    "SET bytesDone = :bd, bytesTotal = :bt, filesDone = :fd, filesTotal = :ft, "
    "leaseExpiresAt = :exp, updatedAt = :stamp"
)


def _failed_condition(err: ClientError) -> bool:
    code = err.response.get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Created:
    """The job a create call stands for; ``new`` is False for an idempotent replay."""

    job_id: str
    new: bool


class IdempotencyRaceError(Exception):
    """The key's item expired between the failed put and the read: retry the request."""


class IdempotencyKeyReusedError(Exception):
    """The key already stands for a request with a different body."""


class JobStore:
    """Conditional reads and writes of job items in one DynamoDB table."""

    def __init__(
        self, dynamodb: DynamoDBClient, table: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    def _now(self) -> tuple[float, str]:
        now = self._clock()
        return now, iso(dt.datetime.fromtimestamp(now, dt.UTC))

    def _new_item(self, item: dict[str, Any]) -> PutTypeDef:
        """A put that fails if an item with the same key exists (no overwrite)."""
        return {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": HASH_KEY},
        }

    async def create(
        self, record: JobRecord, idempotency_key: str | None = None, body_hash: str = ""
    ) -> Created:
        """Put a new PENDING job; with a key, atomically together with its idempotency item.

        A replay with the same key and body returns the job the key already
        points to; the same key with another body is a 409.
        """
        item = encode(record)
        if idempotency_key is None:
            await self._db.put_item(**self._new_item(item))
            return Created(record.job_id, new=True)
        idem_id = _IDEM_PREFIX + digest(idempotency_key)
        idem_item = {
            HASH_KEY: {"S": idem_id},
            "kind": {"S": "idempotency"},
            "bodyHash": {"S": body_hash},
            "targetJobId": {"S": record.job_id},
            TTL_ATTRIBUTE: to_attr(record.expires_at),
        }
        try:
            await self._db.transact_write_items(
                TransactItems=[{"Put": self._new_item(item)}, {"Put": self._new_item(idem_item)}]
            )
            return Created(record.job_id, new=True)
        except ClientError as err:
            if not _failed_condition(err):
                raise
        resp = await self._db.get_item(
            TableName=self._table, Key=key_of(idem_id), ConsistentRead=True
        )
        existing = resp.get("Item")
        if existing is None:  # expired between the two calls: very unlikely, retryable
            raise IdempotencyRaceError("the Idempotency-Key item vanished; retry the request")
        if existing["bodyHash"]["S"] != body_hash:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used with a different request body"
            )
        return Created(existing["targetJobId"]["S"], new=False)

    async def get(self, job_id: str) -> JobRecord | None:
        resp = await self._db.get_item(
            TableName=self._table, Key=key_of(job_id), ConsistentRead=True
        )
        item = resp.get("Item")
        if item is None or item.get("kind", {}).get("S") != "job":
            return None
        return decode(item)

    async def _update(
        self,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        *,
        return_new: bool = False,
        names: dict[str, str] | None = None,
    ) -> JobRecord | bool | None:
        args: dict[str, Any] = {
            "TableName": self._table,
            "Key": key_of(job_id),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {
                ph: name
                for ph, name in {**_NAMES, **(names or {})}.items()
                if ph in update or ph in condition
            },
            "ExpressionAttributeValues": {k: to_attr(v) for k, v in values.items()},
        }
        if return_new:
            args["ReturnValues"] = "ALL_NEW"
        try:
            resp = await self._db.update_item(**args)
        except ClientError as err:
            if _failed_condition(err):
                return None if return_new else False
            raise
        return decode(resp["Attributes"]) if return_new else True

    async def claim(
        self, job_id: str, owner: str, lease_seconds: float, message_id: str
    ) -> JobRecord | None:
        """PENDING or WAITING -> RUNNING, or take over a RUNNING job whose lease expired."""
        now, stamp = self._now()
        result = await self._update(
            job_id,
            "SET #s = :running, leaseOwner = :owner, leaseExpiresAt = :exp, messageId = :mid, "
            "updatedAt = :stamp, startedAt = if_not_exists(startedAt, :stamp) "
            "ADD attempts :one REMOVE nextAttemptAt",
            "attribute_exists(#k) AND (#s IN (:pending, :waiting) "
            "OR (#s = :running AND leaseExpiresAt < :now))",
            {
                ":running": JobStatus.RUNNING.value,
                ":pending": JobStatus.PENDING.value,
                ":waiting": JobStatus.WAITING.value,
                ":owner": owner,
                ":exp": now + lease_seconds,
                ":mid": message_id,
                ":stamp": stamp,
                ":now": now,
                ":one": 1,
            },
            return_new=True,
        )
        return result if isinstance(result, JobRecord) else None

    async def heartbeat(
        self, job_id: str, owner: str, progress: Progress, lease_seconds: float
    ) -> bool:
        """Write progress and renew the lease; False if cancelled or the lease was lost."""
        return bool(
            await self._update(
                job_id,
                _RENEW,
                "#s = :running AND leaseOwner = :owner",
                self._renewal(progress, owner, lease_seconds),
            )
        )

    def _renewal(self, progress: Progress, owner: str, lease_seconds: float) -> dict[str, Any]:
        """The values of ``_RENEW`` and of the lease condition: progress, a new expiry."""
        now, stamp = self._now()
        p = progress_json(progress)
        return {
            ":bd": p["bytesDone"],
            ":bt": p["bytesTotal"],
            ":fd": p["filesDone"],
            ":ft": p["filesTotal"],
            ":exp": now + lease_seconds,
            ":stamp": stamp,
            ":running": JobStatus.RUNNING.value,
            ":owner": owner,
        }

    async def mark_ready(
        self,
        job_id: str,
        owner: str,
        progress: Progress,
        archive_bytes: int,
        skipped_keys: list[str],
        *,
        upload_id: str | None = None,
    ) -> bool:
        """RUNNING -> READY under our lease; the skipped keys are capped in bytes (bounds.py).

        With ``upload_id`` (a fanned-out job's finisher) the condition is the
        job's fan-out upload instead of a lease owner: the ranges share the
        job, none owns it (docs/resume.md, "Job-level fan-out").
        """
        _, stamp = self._now()
        p = progress_json(progress)
        skipped, omitted = cap_keys(skipped_keys)
        holder = "leaseOwner = :owner" if upload_id is None else "fanUpload = :owner"
        return bool(
            await self._update(
                job_id,
                "SET #s = :ready, finishedAt = :stamp, updatedAt = :stamp, "
                "archiveBytes = :ab, skippedKeys = :sk, skippedKeysOmitted = :so, "
                "bytesDone = :bd, bytesTotal = :bt, "
                "filesDone = :fd, filesTotal = :ft REMOVE leaseOwner, leaseExpiresAt",
                "#s = :running AND " + holder,
                {
                    ":ready": JobStatus.READY.value,
                    ":stamp": stamp,
                    ":ab": archive_bytes,
                    ":sk": list(skipped),
                    ":so": omitted,
                    ":bd": p["bytesDone"],
                    ":bt": p["bytesTotal"],
                    ":fd": p["filesDone"],
                    ":ft": p["filesTotal"],
                    ":running": JobStatus.RUNNING.value,
                    ":owner": owner if upload_id is None else upload_id,
                },
            )
        )

    # --- job-level fan-out (docs/resume.md, "Job-level fan-out") ---------------------

    async def start_fanout(
        self, job_id: str, owner: str, fan: FanOut, progress: Progress, lease_seconds: float
    ) -> bool:
        """Record the split under our lease, once: its upload, sizes and per-range counters."""
        fields = fanout_item(fan)
        sets = ", ".join(f"{name} = :{name}" for name in fields)
        return bool(
            await self._update(
                job_id,
                f"{_RENEW}, {sets}",
                "#s = :running AND leaseOwner = :owner AND attribute_not_exists(fanUpload)",
                {
                    **{f":{name}": value for name, value in fields.items()},
                    **self._renewal(progress, owner, lease_seconds),
                },
            )
        )

    async def range_heartbeat(
        self,
        job_id: str,
        upload_id: str,
        k: int,
        done: tuple[int, int],
        lease_seconds: float,
    ) -> bool:
        """Range ``k``'s progress (bytes, files) and the job's lease, renewed by any range.

        False once the job is no longer RUNNING on this upload (cancelled,
        failed, or handed back by the sweeper). The caller never passes less
        than the range's stored counts, so the job's sum never goes back.
        """
        now, stamp = self._now()
        return bool(
            await self._update(
                job_id,
                "SET fanBytes.#r = :b, fanFiles.#r = :f, leaseExpiresAt = :exp, updatedAt = :stamp",
                "#s = :running AND fanUpload = :uid",
                {
                    ":b": done[0],
                    ":f": done[1],
                    ":exp": now + lease_seconds,
                    ":stamp": stamp,
                    ":running": JobStatus.RUNNING.value,
                    ":uid": upload_id,
                },
                names={"#r": range_slot(k)},
            )
        )

    async def range_done(
        self, job_id: str, upload_id: str, k: int, done: tuple[int, int]
    ) -> frozenset[int] | None:
        """Add range ``k`` to the job's finished ranges, with its final progress
        ``done`` (bytes, files); the set after, or None if the job is no longer
        RUNNING on this upload.

        ``ADD`` to a number set is idempotent (adding a member twice leaves one)
        and, like every UpdateItem, atomic: of N ranges finishing at once,
        exactly one sees all N, and a redelivered range cannot count twice.
        """
        _, stamp = self._now()
        try:
            resp = await self._db.update_item(
                TableName=self._table,
                Key=key_of(job_id),
                UpdateExpression="SET updatedAt = :stamp, fanBytes.#r = :b, fanFiles.#r = :f "
                "ADD rangesDone :k",
                ConditionExpression="#s = :running AND fanUpload = :uid",
                ExpressionAttributeNames={"#s": "status", "#r": range_slot(k)},
                ExpressionAttributeValues={
                    ":stamp": to_attr(stamp),
                    ":b": to_attr(done[0]),
                    ":f": to_attr(done[1]),
                    ":k": to_attr({k}),
                    ":running": to_attr(JobStatus.RUNNING.value),
                    ":uid": to_attr(upload_id),
                },
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as err:
            if _failed_condition(err):
                return None
            raise
        members = resp.get("Attributes", {}).get("rangesDone", {}).get("NS")
        if members is None:
            # Nothing changed (k was in the set): an emulator may then leave the
            # attribute out of UPDATED_NEW. Read the set, as AWS would return it.
            current = await self.get(job_id)
            return current.fanout.done if current and current.fanout else frozenset()
        return frozenset(int(m) for m in members)

    async def mark_failed(
        self,
        job_id: str,
        error: FailureReason,
        owner: str | None = None,
        *,
        unless_leased: bool = False,
    ) -> bool:
        """FAILED from RUNNING under ``owner``'s lease, or (owner None) from any unfinished state.

        ``unless_leased``: only if no live lease protects the job (the sweeper
        and the dead-letter handler must not fail a job a worker is running).
        """
        now, stamp = self._now()
        values: dict[str, Any] = {
            ":failed": JobStatus.FAILED.value,
            ":stamp": stamp,
            ":err": error_item(error),
            ":running": JobStatus.RUNNING.value,
        }
        if owner is None:
            condition = "#s IN (:pending, :running, :waiting)"
            values[":pending"] = JobStatus.PENDING.value
            values[":waiting"] = JobStatus.WAITING.value
            if unless_leased:
                condition += (
                    " AND (#s <> :running OR attribute_not_exists(leaseExpiresAt) "
                    "OR leaseExpiresAt < :now)"
                )
                values[":now"] = now
        else:
            condition = "#s = :running AND leaseOwner = :owner"
            values[":owner"] = owner
        return bool(
            await self._update(
                job_id,
                "SET #s = :failed, finishedAt = :stamp, updatedAt = :stamp, #e = :err "
                "REMOVE leaseOwner, leaseExpiresAt, nextAttemptAt",
                condition,
                values,
            )
        )

    async def cancel(self, job_id: str) -> JobRecord | None:
        """PENDING, RUNNING or WAITING -> CANCELLED; None if unknown or already final."""
        _, stamp = self._now()
        result = await self._update(
            job_id,
            "SET #s = :cancelled, finishedAt = :stamp, updatedAt = :stamp REMOVE nextAttemptAt",
            "attribute_exists(#k) AND #s IN (:pending, :running, :waiting)",
            {
                ":cancelled": JobStatus.CANCELLED.value,
                ":stamp": stamp,
                ":pending": JobStatus.PENDING.value,
                ":running": JobStatus.RUNNING.value,
                ":waiting": JobStatus.WAITING.value,
            },
            return_new=True,
        )
        return result if isinstance(result, JobRecord) else None

    async def release(
        self,
        job_id: str,
        owner: str,
        *,
        retry_in: float = 0,
        error: FailureReason | None = None,
        max_attempts: int = 0,
    ) -> bool:
        """RUNNING -> WAITING under our lease: the next delivery of the message may claim it.

        Records why this attempt ended (``error``, None for a shutdown), when
        the next attempt is due and how many the queue allows, so a client
        sees "attempt n of N, next at ..." instead of a RUNNING job that
        nobody runs, and the dead-letter handler can name the last error.
        """
        now, stamp = self._now()
        update = "SET #s = :waiting, updatedAt = :stamp, nextAttemptAt = :next, maxAttempts = :max"
        values: dict[str, Any] = {
            ":waiting": JobStatus.WAITING.value,
            ":stamp": stamp,
            ":next": iso(dt.datetime.fromtimestamp(now + retry_in, dt.UTC)),
            ":max": max_attempts,
            ":running": JobStatus.RUNNING.value,
            ":owner": owner,
        }
        if error is not None:
            update += ", lastError = :err"
            values[":err"] = error_item(error)
        return bool(
            await self._update(
                job_id,
                update + " REMOVE leaseOwner, leaseExpiresAt",
                "#s = :running AND leaseOwner = :owner",
                values,
            )
        )

    async def renew_attempts(self, job_id: str) -> bool:
        """A released job that made progress starts its attempt count again.

        Only from WAITING with no lease, i.e. right after our own release, so
        a job cancelled or claimed in between is left alone
        (service/jobs/continuation.py says why attempts that progress do not count).
        """
        _, stamp = self._now()
        return bool(
            await self._update(
                job_id,
                "SET attempts = :zero, updatedAt = :stamp",
                "#s = :waiting AND attribute_not_exists(leaseOwner)",
                {":zero": 0, ":stamp": stamp, ":waiting": JobStatus.WAITING.value},
            )
        )

    async def record_resend(self, record: JobRecord, retry_in: float = 0) -> bool:
        """The sweeper's claim on re-sending a job's message: True for exactly one sweeper.

        Conditional on the record being unchanged since the sweeper read it
        (same status, same ``updatedAt``), so of several workers sweeping at
        once only one re-sends. A RUNNING job (its lease long expired) moves
        to WAITING here; a PENDING job stays PENDING with a newer ``updatedAt``.
        """
        now, stamp = self._now()
        status = JobStatus.PENDING if record.status is JobStatus.PENDING else JobStatus.WAITING
        return bool(
            await self._update(
                record.job_id,
                "SET #s = :new, updatedAt = :stamp, nextAttemptAt = :next "
                "ADD resends :one REMOVE leaseOwner, leaseExpiresAt",
                "#s = :seen AND updatedAt = :seen_at",
                {
                    ":new": status.value,
                    ":stamp": stamp,
                    ":next": iso(dt.datetime.fromtimestamp(now + retry_in, dt.UTC)),
                    ":one": 1,
                    ":seen": record.status.value,
                    ":seen_at": iso(record.updated_at),
                },
            )
        )

    async def unfinished(self) -> list[JobRecord]:
        """Every job not yet final (a filtered Scan; see docs/lifecycle.md for its cost)."""
        out: list[JobRecord] = []
        args: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "#kind = :job AND #s IN (:pending, :running, :waiting)",
            "ExpressionAttributeNames": {"#kind": "kind", "#s": "status"},
            "ExpressionAttributeValues": {
                ":job": {"S": "job"},
                **{f":{st.value.lower()}": {"S": st.value} for st in _UNFINISHED},
            },
            "ConsistentRead": True,
        }
        while True:
            resp = await self._db.scan(**args)
            out.extend(decode(item) for item in resp.get("Items", []))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return out
            args["ExclusiveStartKey"] = last

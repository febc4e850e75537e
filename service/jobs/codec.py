"""JobRecord <-> DynamoDB item. The only module that knows the item layout.

Attribute names are part of the deployment contract: ``jobId`` is the
table's hash key (string) and ``ttl`` its TTL attribute (epoch seconds).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from ..engine import Compression, MissingPolicy, Progress
from .bounds import cap_keys, cap_message
from .models import FailureReason, FanOut, JobRecord, JobRequest, JobStatus, Manifest

HASH_KEY = "jobId"
TTL_ATTRIBUTE = "ttl"

_ser = TypeSerializer()
_de = TypeDeserializer()


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def to_attr(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB AttributeValue (floats go through Decimal)."""
    if isinstance(value, float):
        value = Decimal(repr(value))
    return dict(_ser.serialize(value))


def key_of(job_id: str) -> dict[str, Any]:
    return {HASH_KEY: {"S": job_id}}


def progress_json(p: Progress) -> dict[str, int]:
    """Progress as stored in the item and shown in the job view (the same names)."""
    return {
        "bytesDone": p.bytes_done,
        "bytesTotal": p.bytes_total,
        "filesDone": p.files_done,
        "filesTotal": p.files_total,
    }


def encode(record: JobRecord) -> dict[str, Any]:
    """The full item for a new job."""
    req = record.request
    plain: dict[str, Any] = {
        HASH_KEY: record.job_id,
        "kind": "job",
        "status": record.status.value,
        "bucket": req.bucket,
        "name": req.name,
        "missing": req.missing.value,
        "compression": req.compression.value,
        "dstBucket": record.dst_bucket,
        "dstKey": record.dst_key,
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
        TTL_ATTRIBUTE: record.expires_at,
        "keysCount": record.keys_count,
        "attempts": record.attempts,
        **progress_json(record.progress),
    }
    if req.prefix is not None:
        plain["prefix"] = req.prefix
    if record.manifest is not None:
        plain["manifestBucket"] = record.manifest.bucket
        plain["manifestKey"] = record.manifest.key
    elif req.keys is not None:
        plain["keys"] = list(req.keys)
    if record.error is not None:
        plain["error"] = error_item(record.error)
    return {name: to_attr(value) for name, value in plain.items()}


def error_item(error: FailureReason) -> dict[str, Any]:
    """The stored error, bounded in bytes whatever the caller passed (bounds.py)."""
    keys, omitted = cap_keys(error.missing_keys)
    out: dict[str, Any] = {"code": error.code, "message": cap_message(error.message)}
    if keys:
        out["missingKeys"] = list(keys)
    if omitted + error.missing_keys_omitted:
        out["missingKeysOmitted"] = omitted + error.missing_keys_omitted
    return out


def decode_error(value: dict[str, Any] | None) -> FailureReason | None:
    if not value:
        return None
    return FailureReason(
        value["code"],
        value["message"],
        tuple(value.get("missingKeys", ())),
        int(value.get("missingKeysOmitted", 0)),
    )


def range_slot(k: int) -> str:
    """Range ``k``'s key in the ``fanBytes``/``fanFiles`` maps."""
    return f"r{k}"


def fanout_item(fan: FanOut) -> dict[str, Any]:
    """The attributes a split writes (``rangesDone`` is added range by range)."""
    zeros = {range_slot(k): 0 for k in range(fan.workers)}
    return {
        "fanUpload": fan.upload_id,
        "fanWorkers": fan.workers,
        "fanPartSize": fan.part_size,
        "fanLength": fan.length,
        "fanFingerprint": fan.fingerprint,
        "fanBytes": zeros,
        "fanFiles": zeros,
    }


def _decode_fanout(d: dict[str, Any]) -> FanOut | None:
    if "fanUpload" not in d:
        return None
    n = int(d["fanWorkers"])

    def per_range(name: str) -> tuple[int, ...]:
        values = d.get(name) or {}
        return tuple(int(values.get(range_slot(k), 0)) for k in range(n))

    return FanOut(
        upload_id=d["fanUpload"],
        workers=n,
        part_size=int(d["fanPartSize"]),
        length=int(d["fanLength"]),
        fingerprint=d["fanFingerprint"],
        done=frozenset(int(k) for k in d.get("rangesDone", ())),
        bytes_done=per_range("fanBytes"),
        files_done=per_range("fanFiles"),
    )


def _progress(d: dict[str, Any], fan: FanOut | None) -> Progress:
    """The stored progress; a fanned-out job's is the sum over its ranges, and
    never less than what was stored before the split (each range's own count
    never goes back: ``JobStore.range_heartbeat``)."""
    done = int(d.get("bytesDone", 0))
    files = int(d.get("filesDone", 0))
    if fan is not None:
        done = max(done, sum(fan.bytes_done))
        files = max(files, sum(fan.files_done))
    return Progress(
        bytes_done=done,
        bytes_total=int(d.get("bytesTotal", 0)),
        files_done=files,
        files_total=int(d.get("filesTotal", 0)),
    )


def decode(item: dict[str, Any]) -> JobRecord:
    """A stored item back to a JobRecord; tolerant of attributes added later."""
    d = {name: _de.deserialize(value) for name, value in item.items()}
    fan = _decode_fanout(d)
    keys = tuple(d["keys"]) if "keys" in d else None
    manifest = (
        Manifest(d["manifestBucket"], d["manifestKey"], int(d.get("keysCount", 0)))
        if "manifestKey" in d
        else None
    )
    request = JobRequest(
        bucket=d["bucket"],
        keys=keys,
        prefix=d.get("prefix"),
        name=d["name"],
        missing=MissingPolicy(d["missing"]),
        compression=Compression(d["compression"]),
    )
    return JobRecord(
        job_id=d[HASH_KEY],
        status=JobStatus(d["status"]),
        request=request,
        dst_bucket=d["dstBucket"],
        dst_key=d["dstKey"],
        created_at=parse_iso(d["createdAt"]),
        updated_at=parse_iso(d["updatedAt"]),
        expires_at=int(d[TTL_ATTRIBUTE]),
        manifest=manifest,
        keys_count=int(d.get("keysCount", 0)),
        progress=_progress(d, fan),
        started_at=parse_iso(d["startedAt"]) if "startedAt" in d else None,
        finished_at=parse_iso(d["finishedAt"]) if "finishedAt" in d else None,
        error=decode_error(d.get("error")),
        lease_owner=d.get("leaseOwner"),
        lease_expires_at=float(d["leaseExpiresAt"]) if "leaseExpiresAt" in d else None,
        message_id=d.get("messageId"),
        attempts=int(d.get("attempts", 0)),
        archive_bytes=int(d["archiveBytes"]) if "archiveBytes" in d else None,
        skipped_keys=tuple(d.get("skippedKeys", ())),
        skipped_keys_omitted=int(d.get("skippedKeysOmitted", 0)),
        last_error=decode_error(d.get("lastError")),
        next_attempt_at=parse_iso(d["nextAttemptAt"]) if "nextAttemptAt" in d else None,
        max_attempts=int(d.get("maxAttempts", 0)),
        resends=int(d.get("resends", 0)),
        fanout=fan,
    )

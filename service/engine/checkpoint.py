"""Checkpoints of a STORED archive's multipart upload, kept in S3 next to it.

A checkpoint says: this upload id, these parts (number, ETag, size) form the
archive's first ``state.offset`` bytes, and this ZIP state (the finished
entries' CRC-32s and the running CRC of the entry in progress) is what the
rest of the stream needs. Why S3 and not the job record: 200,000 entries'
CRCs alone are 800 KB, over DynamoDB's 400 KB item limit; an S3 object is
unbounded, works the same for the one-shot CLI and the job runner, and from
any machine (docs/resume.md).

Format: one JSON line (everything but the entry CRCs), a newline, then the
entry CRCs as packed little-endian 4-byte words. About 60 bytes per part and
4 per entry: 1.4 MB for 9,000 parts and 200,000 entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from botocore.exceptions import ClientError

from .models import Destination, PlannedEntry
from .stored_zip import ZipState

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

SUFFIX = ".zipjobs-checkpoint"
FORMAT = 1

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PartRecord:
    """A part as the checkpoint knows it; ``crc32`` of its bytes carries the
    full-object checksum over to the attempt that completes the upload."""

    number: int
    etag: str
    size: int
    crc32: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """See the module docstring; ``fingerprint`` ties it to one plan and part size."""

    fingerprint: str
    upload_id: str
    parts: tuple[PartRecord, ...]
    state: ZipState


def checkpoint_key(destination: Destination) -> str:
    return destination.key + SUFFIX


def fingerprint(entries: Sequence[PlannedEntry], part_size: int, length: int) -> str:
    """Everything the archive's bytes depend on: a different plan is a different archive."""
    digest = hashlib.sha256(f"stored:{FORMAT}:{part_size}:{length}".encode())
    for e in entries:
        line = [e.source.bucket, e.source.key, e.etag, e.size, e.arcname]
        digest.update(json.dumps([*line, e.last_modified.isoformat()]).encode() + b"\n")
    return digest.hexdigest()


def encode(cp: Checkpoint) -> bytes:
    head = {
        "format": FORMAT,
        "fingerprint": cp.fingerprint,
        "upload_id": cp.upload_id,
        "parts": [[p.number, p.etag, p.size, p.crc32] for p in cp.parts],
        "offset": cp.state.offset,
        "entry": cp.state.entry,
        "running_crc": cp.state.running_crc,
    }
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + cp.state.crcs


def split_record(data: bytes, what: str, version: int) -> tuple[dict[str, Any], bytes]:
    """A stored record's JSON head and packed CRCs (the layout of a checkpoint and
    of a fan-out range result); ValueError if the head is missing or of another format."""
    line, sep, crcs = data.partition(b"\n")
    if not sep:
        raise ValueError(f"{what} has no header line")
    head = json.loads(line)
    if not isinstance(head, dict) or head.get("format") != version:
        found = head.get("format") if isinstance(head, dict) else None
        raise ValueError(f"{what} format {found!r} is not {version}")
    if len(crcs) % 4:
        raise ValueError(f"{what} CRCs are not whole 4-byte words")
    return head, crcs


def decode(data: bytes) -> Checkpoint:
    """The checkpoint, or ValueError for anything malformed or inconsistent."""
    head, crcs = split_record(data, "checkpoint", FORMAT)
    parts = tuple(
        PartRecord(int(n), str(etag), int(size), int(crc)) for n, etag, size, crc in head["parts"]
    )
    state = ZipState(int(head["offset"]), int(head["entry"]), int(head["running_crc"]), crcs)
    if [p.number for p in parts] != list(range(1, len(parts) + 1)):
        raise ValueError("checkpoint parts are not 1..N")
    if sum(p.size for p in parts) != state.offset or len(crcs) != 4 * state.entry:
        raise ValueError("checkpoint parts and ZIP state disagree")
    return Checkpoint(str(head["fingerprint"]), str(head["upload_id"]), parts, state)


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class RecordStore(Generic[R]):
    """Load, save and delete one small record object next to an archive.

    The one place that reads such a record: a missing object is None, one
    this code cannot decode is logged and None (a later build starts over),
    any other error is raised. Used for the checkpoint of a whole build and
    for a fan-out range's own checkpoint (``range_checkpoint``).
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        encoder: Callable[[R], bytes],
        decoder: Callable[[bytes], R],
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._encode = encoder
        self._decode = decoder

    async def load(self) -> R | None:
        """The stored record; None when there is none or it cannot be read."""
        try:
            resp = await self._s3.get_object(Bucket=self._bucket, Key=self._key)
            data = await resp["Body"].read()
        except ClientError as err:
            if _code(err) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            return self._decode(data)
        except (ValueError, KeyError, TypeError) as err:
            log.warning(
                "ignoring unreadable checkpoint s3://%s/%s: %s", self._bucket, self._key, err
            )
            return None

    async def save(self, record: R) -> None:
        await self._s3.put_object(
            Bucket=self._bucket,
            Key=self._key,
            Body=self._encode(record),
            ContentType="application/octet-stream",
        )

    async def delete(self) -> None:
        """Best effort: a checkpoint left behind is harmless (its upload is gone)."""
        try:
            await self._s3.delete_object(Bucket=self._bucket, Key=self._key)
        except ClientError:
            log.warning("could not delete checkpoint s3://%s/%s", self._bucket, self._key)


class CheckpointStore(RecordStore[Checkpoint]):
    """The one checkpoint object of a destination."""

    def __init__(self, s3: S3Client, destination: Destination) -> None:
        super().__init__(s3, destination.bucket, checkpoint_key(destination), encode, decode)


async def listed_parts(
    s3: S3Client, destination: Destination, upload_id: str
) -> dict[int, PartRecord] | None:
    """Every part S3 holds for the upload (ListParts pages through 1,000 at a time);
    None when the upload no longer exists (completed or aborted)."""
    found: dict[int, PartRecord] = {}
    marker = 0
    while True:
        try:
            resp = await s3.list_parts(
                Bucket=destination.bucket,
                Key=destination.key,
                UploadId=upload_id,
                PartNumberMarker=marker,
            )
        except ClientError as err:
            if _code(err) in ("NoSuchUpload", "404"):
                return None
            raise
        for part in resp.get("Parts", []):
            number = int(part["PartNumber"])
            found[number] = PartRecord(number, str(part["ETag"]), int(part["Size"]))
        if not resp.get("IsTruncated"):
            return found
        marker = int(resp["NextPartNumberMarker"])


def parts_match(parts: Iterable[PartRecord], listed: dict[int, PartRecord]) -> bool:
    """Does S3 still hold every checkpointed part, with the same ETag and size?

    Parts past the checkpoint may exist (uploaded after it was written); they
    are uploaded again with the same bytes, replacing them.
    """
    return all(_same(listed.get(p.number), p) for p in parts)


def _same(listed: PartRecord | None, saved: PartRecord) -> bool:
    return listed is not None and (listed.etag, listed.size) == (saved.etag, saved.size)

"""A fan-out range's own checkpoint: a range stopped mid-way continues from its
first missing part instead of its first part (docs/resume.md, "A range
resumes from its own checkpoint").

A job-level range builds parts ``first..last`` of a shared upload from a
*blind* state (``fanout.blind_state``). Its checkpoint is the single build's
(``checkpoint.py``) restricted to the range: the parts it uploaded from
``first`` up to a part boundary (its deferred parts are never uploaded by
it, so they are absent), and the blind stream's ZIP state there: the CRC-32
of each entry's bytes inside the range before the boundary (a partial CRC
for the entry the range starts inside) and the running CRC of the entry in
progress. It also keeps the running CRC at the start of each deferred part
already passed, which the range's result needs and a resumed stream would
not see again. Only the range's own entries' CRCs are stored (those before
it are zeros in a blind state), so all of a job's range checkpoints
together hold about one whole-build checkpoint's bytes: 4 per entry plus
about 60 per part.

Checked before use like a whole build's: same plan (fingerprint), same
upload and range, parts that tile the range up to the offset, and ListParts
still showing each part with the same ETag and size. A checkpoint that fails
any check is deleted and the range is built from its first part; the
upload is never aborted here (it belongs to every range of the job).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .checkpoint import PartRecord, RecordStore, listed_parts, parts_match, split_record
from .fanout import part_span, range_span
from .models import Destination
from .resume import PartCheckpointer
from .stored_zip import StoredArchive, StoredLayout, ZipState
from .uploader import PartWriter, UploadedPart

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True, slots=True)
class RangeCheckpoint:
    """Range ``first_part..last_part`` of upload ``upload_id`` holds ``parts`` (its
    uploaded parts up to ``state.offset``, a part boundary), and ``state`` is its
    blind stream's ZIP state there. ``state.crcs`` is whole (zeros before entry
    ``crc_from``, the range's first); ``snapshots`` are (offset, running CRC)
    at deferred parts' starts before the offset."""

    fingerprint: str
    upload_id: str
    first_part: int
    last_part: int
    parts: tuple[PartRecord, ...]
    state: ZipState
    crc_from: int
    snapshots: tuple[tuple[int, int], ...]

    def uploaded(self) -> list[UploadedPart]:
        return [UploadedPart(p.number, p.etag, p.crc32, p.size) for p in self.parts]


def encode(cp: RangeCheckpoint) -> bytes:
    """One JSON line, a newline, the CRCs of entries ``crc_from..state.entry`` packed."""
    head = {
        "format": FORMAT,
        "fingerprint": cp.fingerprint,
        "upload_id": cp.upload_id,
        "first_part": cp.first_part,
        "last_part": cp.last_part,
        "parts": [[p.number, p.etag, p.size, p.crc32] for p in cp.parts],
        "offset": cp.state.offset,
        "entry": cp.state.entry,
        "running_crc": cp.state.running_crc,
        "crc_from": cp.crc_from,
        "snapshots": [list(s) for s in cp.snapshots],
    }
    line = json.dumps(head, separators=(",", ":")).encode()
    return line + b"\n" + cp.state.crcs[4 * cp.crc_from :]


def decode(data: bytes) -> RangeCheckpoint:
    """The checkpoint ``encode`` wrote; ValueError when it is not one."""
    head, crcs = split_record(data, "range checkpoint", FORMAT)
    crc_from, entry = int(head["crc_from"]), int(head["entry"])
    if not 0 <= crc_from <= entry or len(crcs) != 4 * (entry - crc_from):
        raise ValueError("range checkpoint CRCs do not match its entries")
    state = ZipState(
        int(head["offset"]), entry, int(head["running_crc"]), bytes(4 * crc_from) + crcs
    )
    return RangeCheckpoint(
        str(head["fingerprint"]),
        str(head["upload_id"]),
        int(head["first_part"]),
        int(head["last_part"]),
        tuple(PartRecord(int(n), str(e), int(s), int(c)) for n, e, s, c in head["parts"]),
        state,
        crc_from,
        tuple((int(o), int(c)) for o, c in head["snapshots"]),
    )


def range_checkpoint_store(s3: S3Client, bucket: str, key: str) -> RecordStore[RangeCheckpoint]:
    return RecordStore(s3, bucket, key, encode, decode)


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """Which range of which archive: what a checkpoint must agree with."""

    layout: StoredLayout
    part_size: int
    first: int
    last: int
    drop: frozenset[int]
    fingerprint: str
    upload_id: str

    @property
    def span(self) -> tuple[int, int]:
        return range_span(self.first, self.last, self.part_size, self.layout.length)

    def part_end(self, number: int) -> int:
        return part_span(number, self.part_size, self.layout.length)[1]

    def next_part(self, offset: int) -> int:
        """The part after ``offset``, a part boundary (or the archive's end)."""
        return -(-offset // self.part_size) + 1


def mismatch(cp: RangeCheckpoint, spec: RangeSpec) -> str | None:
    """Why ``cp`` cannot be this range's checkpoint (None: it can, pending ListParts)."""
    if cp.fingerprint != spec.fingerprint:
        return "it was made for another plan"
    if cp.upload_id != spec.upload_id or (cp.first_part, cp.last_part) != (spec.first, spec.last):
        return "it is of another upload or range"
    begin, end = spec.span
    offset = cp.state.offset
    last_done = spec.next_part(offset) - 1
    if not begin < offset <= end or spec.part_end(last_done) != offset:
        return f"its offset {offset} is not a part boundary inside the range"
    wanted = [n for n in range(spec.first, last_done + 1) if n not in spec.drop]
    if [p.number for p in cp.parts] != wanted:
        return "its parts do not cover the range up to its offset"
    if any(p.size != spec.part_end(p.number) - (p.number - 1) * spec.part_size for p in cp.parts):
        return "its parts' sizes are not the layout's"
    if cp.crc_from != spec.layout.entry_at(begin) or cp.state.entry != spec.layout.entry_at(offset):
        return "its ZIP state does not match the layout"
    return None


async def usable_range_checkpoint(
    s3: S3Client, destination: Destination, store: RecordStore[RangeCheckpoint], spec: RangeSpec
) -> RangeCheckpoint | None:
    """The range's stored checkpoint if it can be continued from; else None, and the
    checkpoint is deleted (the range is then built from its first part)."""
    cp = await store.load()
    if cp is None:
        return None
    reason = mismatch(cp, spec)
    if reason is None:
        listed = await listed_parts(s3, destination, spec.upload_id)
        if listed is None:
            reason = "its upload is gone"
        elif not parts_match(cp.parts, listed):
            reason = "its parts differ from S3's"
        else:
            return cp
    log.info(
        "not resuming range %d-%d of s3://%s/%s: %s",
        spec.first,
        spec.last,
        destination.bucket,
        destination.key,
        reason,
    )
    await store.delete()
    return None


class RangeCheckpointer(PartCheckpointer):
    """Checkpoints range ``spec`` as its parts complete (see the module docstring).

    This attempt's stream starts at ``prior``'s offset (or the range's start);
    a deferred part counts as done once the stream has passed it (the writer
    drops it then).
    """

    def __init__(
        self,
        store: RecordStore[RangeCheckpoint],
        spec: RangeSpec,
        stream: StoredArchive,
        interval: float,
        prior: RangeCheckpoint | None,
    ) -> None:
        super().__init__(stream, interval)
        self._store = store
        self._spec = spec
        self._start = prior.state.offset if prior is not None else spec.span[0]
        self._from = spec.next_part(self._start)
        self._prior = prior.parts if prior is not None else ()
        self._crc_from = spec.layout.entry_at(spec.span[0])
        self._deferred_at = frozenset((n - 1) * spec.part_size for n in spec.drop)

    def _covered(self, writer: PartWriter) -> tuple[int, int] | None:
        spec = self._spec
        uploaded = {p.number for p in writer.uploaded_parts}
        reached = self._start + writer.bytes_written
        n = self._from
        while n <= spec.last and (
            n in uploaded or (n in spec.drop and spec.part_end(n) <= reached)
        ):
            n += 1
        if n == self._from:
            return None
        return n - self._from, spec.part_end(n - 1)

    async def _write(self, writer: PartWriter, count: int, offset: int) -> None:
        spec = self._spec
        last_done = self._from + count - 1
        new = (p for p in writer.uploaded_parts if p.number <= last_done)
        parts = self._prior + tuple(PartRecord(p.number, p.etag, p.length, p.crc32) for p in new)
        snapshots = _pinned(self._stream.snapshots, self._deferred_at, offset)
        cp = RangeCheckpoint(
            spec.fingerprint,
            spec.upload_id,
            spec.first,
            spec.last,
            parts,
            self._stream.state_at(offset),
            self._crc_from,
            snapshots,
        )
        await self._store.save(cp)

    def _forget(self, offset: int) -> None:
        self._stream.forget_before(offset, keep=self._deferred_at)


def _pinned(
    snapshots: Mapping[int, int], at: Iterable[int], offset: int
) -> tuple[tuple[int, int], ...]:
    """The running CRCs at deferred parts' starts up to ``offset``."""
    return tuple(sorted((o, snapshots[o]) for o in at if o <= offset and o in snapshots))

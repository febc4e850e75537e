"""Checkpoint encoding: round trip, bounded size, and refusal of anything inconsistent."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from service.engine.checkpoint import Checkpoint, PartRecord, decode, encode, fingerprint
from service.engine.stored_zip import ZipState
from tests.support.sources import planned_entry

MiB = 1024 * 1024


def _cp(parts: int, entries: int) -> Checkpoint:
    records = tuple(PartRecord(n, f'"{n:032x}"', 8 * MiB) for n in range(1, parts + 1))
    crcs = struct.pack(f"<{entries}I", *range(entries))
    return Checkpoint("f" * 64, "u" * 60, records, ZipState(parts * 8 * MiB, entries, 7, crcs))


def test_round_trip() -> None:
    cp = _cp(3, 5)
    assert decode(encode(cp)) == cp


def test_200k_entries_and_9000_parts_stay_near_1_4_mb() -> None:
    size = len(encode(_cp(9_000, 200_000)))
    assert 800_000 < size < 1_500_000


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b.replace(b'"format":1', b'"format":2'),
        lambda b: b.replace(b'"offset":25165824', b'"offset":25165825'),  # parts disagree
        lambda b: b[:-1],  # a CRC cut short
        lambda b: b.split(b"\n")[0],  # no CRCs line at all
        lambda b: b.replace(b"[[1,", b"[[2,"),  # parts not 1..N
    ],
)
def test_inconsistent_checkpoints_are_refused(mangle: object) -> None:
    data = encode(_cp(3, 5))
    with pytest.raises((ValueError, KeyError)):
        decode(mangle(data))  # type: ignore[operator]


def test_fingerprint_changes_with_any_input() -> None:
    entries = [planned_entry("a.pdf", 10), planned_entry("b.pdf", 20)]
    base = fingerprint(entries, 8 * MiB, 1000)
    assert fingerprint(entries, 8 * MiB, 1000) == base
    assert fingerprint(entries, 16 * MiB, 1000) != base
    assert fingerprint(entries, 8 * MiB, 1001) != base
    assert fingerprint(entries[::-1], 8 * MiB, 1000) != base
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert (
        fingerprint([entries[0], planned_entry("b.pdf", 20, modified=later)], 8 * MiB, 1000) != base
    )

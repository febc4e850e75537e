"""The part writer without a network: parts, single PutObject, abort, budget, headers.

``SyntheticS3`` (tests/support/sources.py) stands in for the five upload
calls and writes parts at their offsets, so the bytes that would have gone up
are checked exactly; ``FailingS3`` makes chosen calls fail.
"""

from __future__ import annotations

import asyncio
import os
import tracemalloc
import urllib.parse
import zlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.engine.budget import ByteSemaphore
from service.engine.models import Destination, LengthMismatchError
from service.engine.uploader import PartBody, PartWriter, content_disposition
from service.units import MiB
from tests.support.sources import SyntheticS3

DEST = Destination("dst", "out/archive.zip")
PART = 5 * MiB


def data(size: int) -> bytes:
    return os.urandom(size)


def writer(s3: Any, *, expected: int | None, buffers: int = 3) -> tuple[PartWriter, ByteSemaphore]:
    budget = ByteSemaphore(PART * buffers)
    return (
        PartWriter(
            s3,
            DEST,
            part_size=PART,
            budget=budget,
            content_type="application/zip",
            expected_bytes=expected,
        ),
        budget,
    )


async def write_in_chunks(w: PartWriter, payload: bytes, chunk: int = 777_777) -> None:
    view = memoryview(payload)
    for start in range(0, len(payload), chunk):
        await w.write(view[start : start + chunk])


# ------------------------------------------------------------ headers


@pytest.mark.parametrize(
    ("filename", "fallback"),
    [
        ("archive.zip", "archive.zip"),
        ("Résumé 文件.zip", "R_sum_ __.zip"),
        ('say "hi"\\.zip', "say _hi__.zip"),
        ("tab\there.zip", "tab_here.zip"),
        ('Bericht "März".zip', "Bericht _M_rz_.zip"),
    ],
)
def test_content_disposition_has_ascii_fallback_and_exact_utf8_name(
    filename: str, fallback: str
) -> None:
    value = content_disposition(filename)
    assert value.isascii()
    assert value.startswith(f'attachment; filename="{fallback}"; ')
    encoded = value.split("filename*=UTF-8''", 1)[1]
    assert urllib.parse.unquote(encoded, errors="strict") == filename
    assert ";" not in encoded and " " not in encoded and '"' not in encoded


def test_content_disposition_percent_encodes_every_reserved_byte() -> None:
    value = content_disposition('Bericht "März".zip')
    assert value.endswith("filename*=UTF-8''Bericht%20%22M%C3%A4rz%22.zip")


# ------------------------------------------------------------ PartBody


def test_part_body_reads_seeks_and_measures_only_its_length() -> None:
    buf = bytearray(b"0123456789abcdef")
    body = PartBody(buf, 10)
    assert len(body) == 10
    assert body.read(4) == b"0123" and body.tell() == 4 and len(body) == 6
    assert body.read() == b"456789"
    assert body.read() == b""
    assert body.seek(0) == 0  # botocore rewinds on a retry
    assert body.read(-1) == b"0123456789"
    assert body.seek(-3, 2) == 7 and body.read() == b"789"
    assert body.seek(100) == 10


async def test_part_body_iterates_views_of_the_buffer_without_copies() -> None:
    buf = bytearray(os.urandom(3 * MiB + 5))
    body = PartBody(buf, len(buf) - 5)
    pieces = [p async for p in body]
    assert b"".join(pieces) == bytes(buf[:-5])
    assert all(isinstance(p, memoryview) and p.obj is buf for p in pieces)
    assert body.tell() == len(buf) - 5


# ------------------------------------------------------------ PartWriter


async def test_parts_arrive_whole_and_in_order(tmp_path: Path) -> None:
    payload = data(3 * PART + 12345)
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, budget = writer(s3, expected=len(payload))
    await write_in_chunks(w, payload)
    result = await w.finish()
    assert (result.parts, result.bytes) == (4, len(payload))
    assert (tmp_path / "out.zip").read_bytes() == payload
    assert s3.parts == {1: PART, 2: PART, 3: PART, 4: 12345}
    assert s3.create_kwargs["ContentType"] == "application/zip"
    assert s3.create_kwargs["ContentDisposition"] == content_disposition("archive.zip")
    assert budget.in_use == 0
    # Checksums S3 checks (checking-object-integrity): SyntheticS3 checks each
    # part's CRC-32 against the bytes it received, and at completion
    # (FULL_OBJECT) the CRC-32 of the whole object re-read from what it stored.
    assert s3.create_kwargs["ChecksumAlgorithm"] == "CRC32"
    assert s3.create_kwargs["ChecksumType"] == "FULL_OBJECT"
    assert s3.object_crc32 == result.crc32 == zlib.crc32(payload)
    for p in w.uploaded_parts:  # what a resumed upload would checkpoint
        start = (p.number - 1) * PART
        assert p.crc32 == zlib.crc32(payload[start : start + p.length]) == s3.part_crcs[p.number]
    assert [p.number for p in w.uploaded_parts] == [1, 2, 3, 4]


async def test_unknown_length_archive_is_uploaded_exactly(tmp_path: Path) -> None:
    """Deflate: the length is not known up front."""
    payload = data(2 * PART + 1)
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, _ = writer(s3, expected=None)
    await write_in_chunks(w, payload)
    result = await w.finish()
    assert result.parts == 3 and (tmp_path / "out.zip").read_bytes() == payload


@pytest.mark.parametrize("size", [0, 1, 4 * MiB, PART - 1, PART])
async def test_archive_up_to_one_part_is_one_put_object(tmp_path: Path, size: int) -> None:
    """Under 5 MiB, one PutObject (one request instead of three; docs/DESIGN.md, "AWS limits")."""
    payload = data(size)
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, _ = writer(s3, expected=size)
    await write_in_chunks(w, payload)
    result = await w.finish()
    assert (tmp_path / "out.zip").read_bytes() == payload
    assert result.parts == 1
    assert s3.calls == ["PutObject"], s3.calls
    assert s3.object_crc32 == result.crc32 == zlib.crc32(payload)  # checked like S3 does


async def test_wrong_length_is_never_completed(tmp_path: Path) -> None:
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, _ = writer(s3, expected=2 * PART)
    await write_in_chunks(w, data(2 * PART - 1))
    with pytest.raises(LengthMismatchError, match="not completing") as caught:
        await w.finish()
    assert caught.value.permanent  # the runner must not retry it
    await w.abort()
    assert "CompleteMultipartUpload" not in s3.calls


class FailingS3(SyntheticS3):
    """UploadPart ``fail_part`` raises; ``hold_part`` waits until cancelled."""

    def __init__(self, path: Path, fail_part: int = 0, hold_part: int = 0) -> None:
        super().__init__(path)
        self.fail_part = fail_part
        self.hold_part = hold_part
        self.holding = asyncio.Event()

    async def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        if kwargs["PartNumber"] == self.fail_part:
            raise ConnectionError("part upload failed")
        if kwargs["PartNumber"] == self.hold_part:
            self.holding.set()
            await asyncio.sleep(3600)
        return await super().upload_part(**kwargs)


async def test_failed_part_surfaces_and_abort_aborts(tmp_path: Path) -> None:
    s3 = FailingS3(tmp_path / "out.zip", fail_part=2)
    w, budget = writer(s3, expected=4 * PART)
    with pytest.raises(ConnectionError):
        await write_in_chunks(w, data(4 * PART))
        await w.finish()
    await w.abort()
    assert s3.aborted and not s3.completed
    assert budget.in_use == 0


async def test_abort_stops_parts_in_flight_first(tmp_path: Path) -> None:
    s3 = FailingS3(tmp_path / "out.zip", hold_part=1)
    w, budget = writer(s3, expected=3 * PART)
    await write_in_chunks(w, data(PART + 10))
    await asyncio.wait_for(s3.holding.wait(), timeout=5)
    await w.abort()
    assert s3.aborted and not s3.completed
    assert budget.in_use <= PART  # the half-filled buffer is the writer's, not in flight


async def test_abort_before_any_part_makes_no_call(tmp_path: Path) -> None:
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, _ = writer(s3, expected=3 * PART)
    await w.write(b"x" * 1000)
    await w.abort()
    assert s3.calls == []


async def test_part_buffers_are_bounded_by_the_budget(tmp_path: Path) -> None:
    """With two buffers, one part is in flight while the next one fills (both used)."""
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, budget = writer(s3, expected=6 * PART, buffers=2)
    payload = data(6 * PART)
    await write_in_chunks(w, payload, chunk=MiB)
    await w.finish()
    assert budget.peak == 2 * PART
    assert (tmp_path / "out.zip").read_bytes() == payload


# ------------------------------------------------------------ checksums checked by S3
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
# SyntheticS3 checks them as S3 does (see test_parts_arrive_whole_and_in_order).


async def test_a_part_corrupted_in_transit_is_refused_and_the_upload_aborted(
    tmp_path: Path,
) -> None:
    s3 = SyntheticS3(tmp_path / "out.zip")
    s3.corrupt_part = 2
    w, budget = writer(s3, expected=3 * PART)
    with pytest.raises(ClientError, match="BadDigest"):
        await write_in_chunks(w, data(3 * PART))
        await w.finish()
    await w.abort()
    assert s3.aborted and not s3.completed
    assert budget.in_use == 0


@pytest.mark.parametrize("end", ["finish", "stop", "abort"])
async def test_a_writer_that_is_done_holds_no_buffer(tmp_path: Path, end: str) -> None:
    """Buffers are kept for reuse during the upload, each given back to the budget
    when its part is done; once the upload is over, whatever still holds the
    writer (a callback, a traceback) must not hold them, or the budget stops
    bounding memory (docs/resume.md, "What kept job-level resume off")."""
    payload = data(3 * PART + 4321)
    # finish: the whole archive; stop/abort: two parts up and a third half-filled.
    sent = payload if end == "finish" else payload[: 2 * PART + 99]
    s3 = SyntheticS3(tmp_path / "out.zip")
    tracemalloc.start()
    try:
        w, _ = writer(s3, expected=len(payload) if end == "finish" else None)
        await write_in_chunks(w, sent)
        if end == "finish":
            await w.finish()
        else:
            for _turn in range(10_000):
                if len(w.uploaded_parts) == 2:
                    break
                await asyncio.sleep(0)
            await getattr(w, end)()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(w.uploaded_parts) == (4 if end == "finish" else 2)  # alive, and it did upload
    assert held < PART // 2, f"{held / MiB:.1f} MiB held by a writer that is done"


# ------------------------------------------------------------ CRCs the stream already knows


async def test_known_chunk_crcs_give_the_parts_their_crcs(tmp_path: Path) -> None:
    """Chunks written with their CRC-32 (as the zip stream writes entry data)
    give every part, and the archive, the CRC of the bytes S3 received, also
    where a chunk straddles a part boundary and is split."""
    payload = data(3 * PART + 4321)
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, _ = writer(s3, expected=len(payload))
    view = memoryview(payload)
    sizes = [200_000, 17, 1_000_003, 5, 777_777]  # some chunks cross part boundaries
    start, i = 0, 0
    while start < len(payload):
        chunk = view[start : start + sizes[i % len(sizes)]]
        # every other chunk comes without a CRC, like headers and descriptors
        await w.write(chunk, zlib.crc32(chunk) if i % 2 == 0 else None)
        start += len(chunk)
        i += 1
    result = await w.finish()
    assert (tmp_path / "out.zip").read_bytes() == payload
    assert s3.object_crc32 == result.crc32 == zlib.crc32(payload)
    for p in w.uploaded_parts:
        begin = (p.number - 1) * PART
        assert p.crc32 == zlib.crc32(payload[begin : begin + p.length]) == s3.part_crcs[p.number]


async def test_a_known_crc_is_used_as_given_so_s3_checks_what_was_meant(tmp_path: Path) -> None:
    """The writer combines a chunk's known CRC instead of reading its bytes again:
    a CRC that does not match the bytes reaches S3 as it is and S3 refuses the
    part (BadDigest). The same check refuses a part whose bytes the copy into the
    part buffer got wrong."""
    payload = data(2 * PART + 10)
    s3 = SyntheticS3(tmp_path / "out.zip")
    w, _ = writer(s3, expected=len(payload))
    view = memoryview(payload)
    with pytest.raises(ClientError, match="BadDigest"):
        await w.write(view[:1000], zlib.crc32(view[:1000]))
        await w.write(view[1000:2000], zlib.crc32(view[1000:2000]) ^ 1)  # not these bytes
        await w.write(view[2000:])
        await w.finish()
    await w.abort()
    assert s3.aborted and not s3.completed

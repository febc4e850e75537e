"""Resumed archives against the local S3 endpoint: killed anywhere, same bytes.

A "kill" here is a client that goes dead at a chosen S3 call: from that call
on nothing reaches S3 any more (optionally the fatal call itself does, and
only its answer is lost), which is what S3 sees when a process is SIGKILLed
or a Lambda is frozen at its deadline: no final checkpoint, no abort. The
next attempt uses a live client. The archive after any number of kills must
be byte-identical to an uninterrupted build, read in every reader, with no
upload and no checkpoint left behind. The real SIGKILL of ``zipjobs zip`` is
in test_cli_resume.py.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.engine import Destination, MiB, SourceObject, ZipOptions, ZipResult, build_zip
from service.engine.checkpoint import SUFFIX, Checkpoint, CheckpointStore
from service.engine.uploader import b64_crc32
from tests.support.archive_check import verify_archive
from tests.support.s3_objects import body, download, object_exists, open_uploads

pytestmark = pytest.mark.integration

OPTIONS = ZipOptions(
    range_size=1 * MiB,
    min_part_size=5 * MiB,
    budget_bytes=16 * MiB,
    upload_concurrency=2,
    resume=True,
    checkpoint_interval_s=0,
)
KEY = "out/resumed.zip"


class Killed(Exception):
    """The process died: no handler in the engine expects it, none retries it."""


class DyingS3:
    """Delegates to a real client until call number ``kill_at``; dead from then on.

    ``deliver`` lets the fatal call reach S3 before dying (the answer is lost).
    Counts the source bytes requested by ranged GETs, to show a resumed
    attempt does not read the entries before its checkpoint again.
    """

    def __init__(
        self,
        s3: Any,
        kill_at: int | None,
        deliver: bool = False,
        kill_on: str = "",
        completions: list[dict[str, Any]] | None = None,
    ) -> None:
        self._s3 = s3
        self._kill_at = kill_at
        self._kill_on = kill_on
        self._deliver = deliver
        self.calls: list[str] = []
        self.dead = False
        self.get_bytes = 0
        self.completions = [] if completions is None else completions

    def __getattr__(self, name: str) -> Callable[..., Any]:
        real = getattr(self._s3, name)
        if not callable(real) or name.startswith("get_paginator"):
            return real  # type: ignore[no-any-return]

        async def call(**kwargs: Any) -> Any:
            if self.dead:
                raise Killed(f"{name} after the kill")
            self.calls.append(name)
            at = self._kill_at is not None and len(self.calls) > self._kill_at
            if at or name == self._kill_on:
                self.dead = True
                if self._deliver:
                    self._record(name, kwargs)
                    await real(**kwargs)
                raise Killed(f"killed at {name}")
            self._record(name, kwargs)
            return await real(**kwargs)

        return call

    def _record(self, name: str, kwargs: dict[str, Any]) -> None:
        """What reached S3: completions, and the source bytes ranged GETs asked for."""
        if name == "complete_multipart_upload":
            self.completions.append(kwargs)
        if name == "get_object" and "Range" in kwargs:
            first, last = kwargs["Range"].removeprefix("bytes=").split("-")
            self.get_bytes += int(last) - int(first) + 1


async def _sources(put_objects: Any, bucket: str) -> tuple[list[SourceObject], dict[str, bytes]]:
    # Entries straddle part boundaries, some are empty, one spans several parts.
    sizes = [3 * MiB + 17, 0, 7 * MiB + 5, 123, 2 * MiB, 0, 9 * MiB + 1, 4 * MiB - 3, 555]
    objects = {f"in/{i:02d}-ü.pdf": body(size, i) for i, size in enumerate(sizes)}
    await put_objects(objects)
    return [SourceObject(bucket, k) for k in objects], objects


async def _build(s3: Any, sources: list[SourceObject], bucket: str) -> ZipResult:
    """One attempt; ``Killed`` when the client died (the planner's task group wraps it)."""
    try:
        return await build_zip(sources, Destination(bucket, KEY), s3=s3, options=OPTIONS)
    except ExceptionGroup as group:
        killed, rest = group.split(Killed)
        if rest is not None or killed is None:
            raise
        raise Killed("killed while planning") from group


async def _reference(s3: Any, bucket: str, sources: list[SourceObject], tmp_path: Path) -> bytes:
    plain = ZipOptions(range_size=1 * MiB, min_part_size=5 * MiB, budget_bytes=16 * MiB)
    await build_zip(sources, Destination(bucket, "out/reference.zip"), s3=s3, options=plain)
    path = tmp_path / "reference.zip"
    await download(s3, bucket, "out/reference.zip", path)
    return path.read_bytes()


async def test_killed_at_random_calls_resumes_to_the_same_bytes(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    sources, objects = await _sources(put_objects, bucket)
    want = await _reference(s3, bucket, sources, tmp_path)
    rng = random.Random(11)
    completions: list[dict[str, Any]] = []
    kills = 0
    source_bytes = sum(len(v) for v in objects.values())
    while True:
        client = DyingS3(s3, rng.randrange(10, 45), rng.random() < 0.5, completions=completions)
        try:
            result = await _build(client, sources, bucket)
        except Killed:
            kills += 1
            assert kills < 60, "never finished"
            continue
        break
    # The surviving attempt continued from a checkpoint and skipped what was read.
    assert result.resumed_from > 0
    assert client.get_bytes < source_bytes
    path = tmp_path / "resumed.zip"
    await download(s3, bucket, KEY, path)
    assert path.read_bytes() == want
    verify_archive(path, objects)
    assert await open_uploads(s3, bucket) == []
    assert not await object_exists(s3, bucket, KEY + SUFFIX)
    assert kills >= 1
    # The full-object CRC sent at completion was combined from the CRCs of
    # parts uploaded by several attempts (moto does not check it: we do).
    assert completions[-1]["ChecksumCRC32"] == b64_crc32(zlib.crc32(want))


async def test_each_attempt_dies_once_then_resumes(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    """Kill after a growing number of calls, over several seeds: deaths land
    before, inside and after UploadPart, CompleteMultipartUpload and the
    checkpoint writes; progress never goes backwards."""
    sources, objects = await _sources(put_objects, bucket)
    want = await _reference(s3, bucket, sources, tmp_path)
    store = CheckpointStore(s3, Destination(bucket, KEY))
    fatal: set[str] = set()
    for seed in range(6):
        rng = random.Random(seed)
        offsets: list[int] = []
        budget = 0
        while True:
            budget += rng.randrange(3, 12)
            client = DyingS3(s3, budget, deliver=rng.random() < 0.5)
            try:
                result = await _build(client, sources, bucket)
                break
            except Killed:
                fatal.add(client.calls[-1])
                offsets.append(await _kept(s3, store, bucket, len(want)))
                assert len(offsets) < 80
        assert offsets, "the first attempt was never killed"
        assert offsets == sorted(offsets), offsets  # never backwards
        # ...and the surviving attempt started from exactly what the last kill left.
        assert result.resumed_from == offsets[-1], (result.resumed_from, offsets)
        path = tmp_path / f"resumed-{seed}.zip"
        await download(s3, bucket, KEY, path)
        assert path.read_bytes() == want
        verify_archive(path, objects)
        assert await open_uploads(s3, bucket) == []
        assert not await object_exists(s3, bucket, KEY + SUFFIX)
        await s3.delete_object(Bucket=bucket, Key=KEY)
    assert "upload_part" in fatal, fatal


async def _kept(s3: Any, store: CheckpointStore, bucket: str, length: int) -> int:
    """The archive bytes a killed attempt left for the next: its checkpoint's
    offset, or all of them if it completed the archive and deleted the
    checkpoint before dying (each seed starts with no archive at KEY)."""
    cp = await store.load()
    if cp is not None:
        return cp.state.offset
    return length if await object_exists(s3, bucket, KEY) else 0


async def test_killed_after_the_checkpoint_is_deleted(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    """The last call of a build deletes its checkpoint, after CompleteMultipartUpload.
    Dying once that DELETE reached S3 leaves a finished archive and no checkpoint:
    the next attempt finds the archive by its fingerprint and reads nothing.
    Before: it built the whole archive again from byte 0 (seen once in
    test_each_attempt_dies_once_then_resumes under load; docs/resume.md)."""
    sources, _ = await _sources(put_objects, bucket)
    want = await _reference(s3, bucket, sources, tmp_path)
    dying = DyingS3(s3, None, deliver=True, kill_on="delete_object")
    with pytest.raises(Killed):
        await _build(dying, sources, bucket)
    assert "complete_multipart_upload" in dying.calls
    assert not await object_exists(s3, bucket, KEY + SUFFIX)
    client = DyingS3(s3, None)
    result = await _build(client, sources, bucket)
    assert result.resumed_from == len(want)
    assert client.get_bytes == 0
    assert not {"create_multipart_upload", "upload_part", "complete_multipart_upload"} & set(
        client.calls
    ), client.calls
    path = tmp_path / "resumed.zip"
    await download(s3, bucket, KEY, path)
    assert path.read_bytes() == want
    assert await open_uploads(s3, bucket) == []
    assert not await object_exists(s3, bucket, KEY + SUFFIX)


@pytest.mark.parametrize("delivered", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("call", ["create_multipart_upload", "upload_part", "put_object"])
async def test_killed_at_the_first_call_of_each_kind(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path, call: str, delivered: bool
) -> None:
    """Dying in the create (an upload no checkpoint names), in a part, or in the
    first checkpoint write: the next attempt still ends with the same bytes
    and nothing left behind."""
    sources, _ = await _sources(put_objects, bucket)
    want = await _reference(s3, bucket, sources, tmp_path)
    with pytest.raises(Killed):
        await _build(DyingS3(s3, None, delivered, call), sources, bucket)
    await _build(s3, sources, bucket)
    path = tmp_path / "resumed.zip"
    await download(s3, bucket, KEY, path)
    assert path.read_bytes() == want
    assert await open_uploads(s3, bucket) == []
    assert not await object_exists(s3, bucket, KEY + SUFFIX)


@pytest.mark.parametrize("delivered", [False, True], ids=["before", "after"])
async def test_killed_during_completion(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path, delivered: bool
) -> None:
    """Before S3 completes, the next attempt only completes; after, it finds the
    finished archive by its fingerprint metadata and length, and reads nothing."""
    sources, _ = await _sources(put_objects, bucket)
    want = await _reference(s3, bucket, sources, tmp_path)
    with pytest.raises(Killed):
        await _build(DyingS3(s3, None, delivered, "complete_multipart_upload"), sources, bucket)
    cp = await CheckpointStore(s3, Destination(bucket, KEY)).load()
    assert cp is not None and cp.state.offset == len(want)
    client = DyingS3(s3, None)
    result = await _build(client, sources, bucket)
    assert result.resumed_from == len(want)
    assert client.get_bytes == 0
    assert "upload_part" not in client.calls
    assert ("complete_multipart_upload" in client.calls) is not delivered
    path = tmp_path / "resumed.zip"
    await download(s3, bucket, KEY, path)
    assert path.read_bytes() == want
    assert await open_uploads(s3, bucket) == []
    assert not await object_exists(s3, bucket, KEY + SUFFIX)


async def _kill_until_checkpointed(
    s3: Any, sources: list[SourceObject], bucket: str, parts: int
) -> Checkpoint:
    """Kill attempts after 1, 2, 3... calls until a checkpoint holds ``parts`` parts."""
    calls = 0
    while True:
        calls += 1
        try:
            await _build(DyingS3(s3, calls), sources, bucket)
        except Killed:
            cp = await CheckpointStore(s3, Destination(bucket, KEY)).load()
            if cp is not None and len(cp.parts) >= parts:
                return cp
            continue
        pytest.fail(f"finished before {parts} parts were checkpointed")


async def test_a_changed_source_starts_over_and_aborts_the_old_upload(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    sources, objects = await _sources(put_objects, bucket)
    cp = await _kill_until_checkpointed(s3, sources, bucket, parts=2)
    old_upload = cp.upload_id
    objects["in/03-ü.pdf"] = body(124, 99)  # a new version (and size) of one source
    await put_objects({"in/03-ü.pdf": objects["in/03-ü.pdf"]})
    result = await _build(s3, sources, bucket)
    assert result.resumed_from == 0
    with pytest.raises(ClientError):
        await s3.list_parts(Bucket=bucket, Key=KEY, UploadId=old_upload)
    path = tmp_path / "fresh.zip"
    await download(s3, bucket, KEY, path)
    verify_archive(path, objects)
    assert await open_uploads(s3, bucket) == []


async def test_a_resumed_attempt_reads_only_what_follows_its_checkpoint(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    sources, objects = await _sources(put_objects, bucket)
    want = await _reference(s3, bucket, sources, tmp_path)
    cp = await _kill_until_checkpointed(s3, sources, bucket, parts=3)
    client = DyingS3(s3, None)
    result = await _build(client, sources, bucket)
    assert result.resumed_from == cp.state.offset == len(cp.parts) * 5 * MiB
    # Source bytes already in the archive before the checkpoint, from the
    # reference archive's own offsets: none of them may be read again.
    with zipfile.ZipFile(io.BytesIO(want)) as zf:
        before = 0
        for info in zf.infolist():
            header = want[info.header_offset : info.header_offset + 30]
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            data_at = info.header_offset + 30 + name_len + extra_len
            before += min(max(cp.state.offset - data_at, 0), info.file_size)
    assert before > 10 * MiB
    assert client.get_bytes == sum(len(v) for v in objects.values()) - before
    path = tmp_path / "resumed.zip"
    await download(s3, bucket, KEY, path)
    assert path.read_bytes() == want

"""Property: whatever the file set, the archive round-trips byte for byte in every reader.

Hypothesis draws file sets of 0..200 KB objects whose keys mix unicode,
case-only differences, repeated keys and hostile segments (``..``, ``.``,
empty, drive letters, backslashes, control characters), sometimes with one
object big enough for a multipart upload, stored or deflated. Each example
runs in a fresh bucket on the local endpoint; the archive is downloaded and:

* every reader in ``archive_check`` lists the same names and reads the same bytes;
* entry i holds source i's bytes (the engine keeps the order);
* no name can escape an extraction directory, no two differ only by case,
  and no file has the name of another entry's folder;
* safe, distinct keys keep their name exactly;
* nothing is left in ``list_multipart_uploads``.
"""

from __future__ import annotations

import random
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.engine import (
    Compression,
    Destination,
    MiB,
    SourceObject,
    ZipOptions,
    build_zip,
)
from tests.support.archive_check import verify_archive
from tests.support.aws_backend import AwsEndpoint
from tests.support.names import archive_names, file_folder_clashes, unsafe_name_reasons
from tests.support.s3_objects import create_bucket, download, open_uploads, unique_bucket_name

pytestmark = pytest.mark.integration

OUT = "zz-out/archive.zip"
HOSTILE_SEGMENTS = ["..", ".", "", "C:", "c:", "nul\x00", "tab\t", "\x1f", "del\x7f", " "]
PLAIN_SEGMENTS = ["a.pdf", "A.PDF", "a (1).pdf", "dir", "DIR", "Ünï", "文件", "📄.pdf", "e\u0301"]

segment = st.one_of(
    st.sampled_from(HOSTILE_SEGMENTS),
    st.sampled_from(PLAIN_SEGMENTS),
    st.text(
        # Not Cn: bsdtar lists unassigned code points as octal escapes (they are
        # stored fine; the listing comparison in archive_check is literal).
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cn"]),
        min_size=1,
        max_size=10,
    ),
)
separator = st.sampled_from(["/", "/", "\\", "//"])


@st.composite
def keys(draw: st.DrawFn) -> str:
    parts = draw(st.lists(segment, min_size=1, max_size=4))
    key = parts[0]
    for part in parts[1:]:
        key += draw(separator) + part
    if draw(st.booleans()):
        key = draw(st.sampled_from(["/", "../", "..\\", "./"])) + key
    if not key or key.startswith(OUT.split("/")[0]) or len(key.encode()) > 300:
        key = "fallback"
    return key


sizes = st.one_of(
    st.just(0),
    st.integers(min_value=1, max_value=100),
    st.integers(min_value=0, max_value=200_000),
)


@st.composite
def file_sets(draw: st.DrawFn) -> list[tuple[str, int]]:
    """(key, size) in archive order; a key may repeat (same object listed twice)."""
    files = draw(st.lists(st.tuples(keys(), sizes), min_size=1, max_size=12))
    repeats = draw(st.lists(st.integers(0, len(files) - 1), max_size=2))
    files += [files[i] for i in repeats]
    return files


def _names_are_kept(keys_in_order: list[str]) -> bool:
    """Keys that are already safe, NFC, distinct ignoring case and not a folder of
    another key keep their names."""
    folded = [k.casefold() for k in keys_in_order]
    if file_folder_clashes(keys_in_order):
        return False
    return len(set(folded)) == len(folded) and all(
        not unsafe_name_reasons(k) and unicodedata.normalize("NFC", k) == k for k in keys_in_order
    )


async def _delete_all(s3: Any, bucket: str, keys_: set[str]) -> None:
    """One by one: moto's DeleteObjects answers 500 for keys with control characters."""
    for key in keys_:
        await s3.delete_object(Bucket=bucket, Key=key)
    await s3.delete_bucket(Bucket=bucket)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    files=file_sets(),
    multipart=st.booleans(),
    compression=st.sampled_from(list(Compression)),
    seed=st.integers(0, 2**32 - 1),
)
async def test_any_file_set_round_trips_in_every_reader(
    s3: Any,
    aws_endpoint: AwsEndpoint,
    files: list[tuple[str, int]],
    multipart: bool,
    compression: Compression,
    seed: int,
) -> None:
    rng = random.Random(seed)
    objects: dict[str, bytes] = {}
    for key, size in files:
        objects[key] = rng.randbytes(size)  # a repeated key: the last write wins
    if multipart:
        objects["big/scan.pdf"] = rng.randbytes(5 * MiB + 1000)
        files.insert(len(files) // 2, ("big/scan.pdf", 0))
    order = [k for k, _ in files]

    bucket = unique_bucket_name("zj-prop")
    await create_bucket(s3, bucket, aws_endpoint.region)
    try:
        for key, data in objects.items():
            await s3.put_object(Bucket=bucket, Key=key, Body=data)
        options = ZipOptions(
            range_size=64 * 1024,
            min_part_size=5 * MiB,
            budget_bytes=8 * MiB,
            compression=compression,
        )
        result = await build_zip(
            [SourceObject(bucket, k) for k in order],
            Destination(bucket, OUT),
            s3=s3,
            options=options,
        )
        with tempfile.TemporaryDirectory(prefix="zj-prop-") as tmp:
            path = Path(tmp) / "archive.zip"
            assert await download(s3, bucket, OUT, path) == result.archive_bytes
            names = archive_names(path)
            assert len(names) == len(order) == result.files
            for name in names:
                assert unsafe_name_reasons(name) == [], repr(name)
            assert len({n.casefold() for n in names}) == len(names), names
            assert file_folder_clashes(names) == [], names
            if _names_are_kept(order):
                assert names == order
            verify_archive(path, {n: objects[k] for n, k in zip(names, order, strict=True)})
        assert result.source_bytes == sum(len(objects[k]) for k in order)
        assert result.parts == (2 if multipart else 1)  # 5 MiB parts
        assert await open_uploads(s3, bucket) == []
    finally:
        await _delete_all(s3, bucket, set(objects) | {OUT})

"""build_zip against the local S3 endpoint: what a user gets when everything works.

Archives are small (moto is slow and builds each object in memory at
Complete), but the options make them cross every boundary that matters: many
ranges per object, several multipart parts, the single-PutObject path, and a
read window of a few ranges. Each archive is downloaded and opened by every
reader in ``archive_check``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from service.engine import (
    Budget,
    Compression,
    Destination,
    MiB,
    MissingSourcesError,
    Progress,
    SourceObject,
    ZipOptions,
    ZipResult,
    build_zip,
    list_prefix,
)
from service.engine.uploader import content_disposition
from tests.support.archive_check import verify_archive
from tests.support.names import archive_names, file_folder_clashes, unsafe_name_reasons
from tests.support.s3_objects import body, download, open_uploads

pytestmark = pytest.mark.integration

# Small ranges and S3's minimum part size: a 12 MiB archive is 3 parts and
# dozens of ranged GETs, cheaply.
SMALL = ZipOptions(range_size=256 * 1024, min_part_size=5 * MiB, budget_bytes=16 * MiB)


async def zip_to_file(
    s3: Any,
    bucket: str,
    sources: list[SourceObject],
    tmp_path: Path,
    *,
    key: str = "out/archive.zip",
    options: ZipOptions = SMALL,
    alone: bool = True,
    **kwargs: Any,
) -> tuple[ZipResult, Path]:
    """Run the engine, download its archive, and (``alone``: no other job uses the
    bucket) check nothing was left half-uploaded."""
    result = await build_zip(sources, Destination(bucket, key), s3=s3, options=options, **kwargs)
    path = tmp_path / f"{key.replace('/', '_')}"
    size = await download(s3, bucket, key, path)
    assert size == result.archive_bytes
    if alone:
        assert await open_uploads(s3, bucket) == []
    return result, path


async def test_small_empty_and_multipart_sized_objects(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    objects = {
        "docs/small.pdf": body(100_000, 1),
        "docs/empty.pdf": b"",
        "docs/exactly-one-range.pdf": body(256 * 1024, 2),
        "big/scan.pdf": body(9 * MiB + 3, 3),  # 37 ranges
        "big/second.pdf": body(2 * MiB - 1, 4),
        "last empty.txt": b"",
    }
    await put_objects(objects)
    sources = [SourceObject(bucket, k) for k in objects]

    result, path = await zip_to_file(s3, bucket, sources, tmp_path)

    verify_archive(path, objects)
    assert archive_names(path) == list(objects)  # order kept
    assert result.files == len(objects)
    assert result.source_bytes == sum(len(v) for v in objects.values())
    assert result.archive_bytes == path.stat().st_size
    assert result.part_size == 5 * MiB
    assert result.parts == -(-result.archive_bytes // result.part_size) == 3
    assert result.skipped == ()
    assert result.peak_budget_bytes > 0  # the bound itself: tests/unit/test_memory_bounds.py
    head = await s3.head_object(Bucket=bucket, Key="out/archive.zip")
    assert head["ETag"].strip('"').endswith("-3")  # a real 3-part multipart upload


async def test_archive_below_one_part_is_a_single_put(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    objects = {"a.pdf": body(300_000, 5), "b.pdf": body(1, 6), "c.pdf": b""}
    await put_objects(objects)
    result, path = await zip_to_file(
        s3, bucket, [SourceObject(bucket, k) for k in objects], tmp_path
    )
    verify_archive(path, objects)
    assert result.parts == 1
    head = await s3.head_object(Bucket=bucket, Key="out/archive.zip")
    # PutObject, not a one-part multipart upload (three requests where one does).
    assert "-" not in head["ETag"], "a one-buffer archive went up as a multipart upload"


@pytest.mark.parametrize(
    ("key", "size"),
    [
        ("out/Résumé 文件 📄.zip", 6 * MiB),  # multipart path, unicode name
        ('out/plain "quoted".zip', 100_000),  # single PutObject path
    ],
)
async def test_content_type_and_disposition(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path, key: str, size: int
) -> None:
    await put_objects({"doc.pdf": body(size, 7)})
    _, path = await zip_to_file(s3, bucket, [SourceObject(bucket, "doc.pdf")], tmp_path, key=key)
    verify_archive(path, {"doc.pdf": body(size, 7)})
    head = await s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "application/zip"
    filename = key.rsplit("/", 1)[1]
    disposition = head["ContentDisposition"]
    assert disposition == content_disposition(filename)
    # Independently of our helper: an ASCII fallback and the exact RFC 5987 name.
    assert disposition.isascii() and disposition.startswith("attachment; filename=")
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    from urllib.parse import unquote

    assert unquote(encoded, encoding="utf-8", errors="strict") == filename


async def test_entry_dates_are_the_sources_last_modified_in_utc(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    objects = {"a.pdf": body(1000, 8), "b/c.pdf": b""}
    await put_objects(objects)
    heads = {k: await s3.head_object(Bucket=bucket, Key=k) for k in objects}
    _, path = await zip_to_file(s3, bucket, [SourceObject(bucket, k) for k in objects], tmp_path)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            when: dt.datetime = heads[info.filename]["LastModified"].astimezone(dt.UTC)
            # DOS dates have 2-second resolution.
            expected = (when.year, when.month, when.day, when.hour, when.minute, when.second)
            assert info.date_time == (*expected[:5], when.second - when.second % 2)
    verify_archive(path, objects)


async def test_same_sources_give_byte_identical_archives(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    objects = {f"f{i:02d}.pdf": body(300_000 + i, 10 + i) for i in range(20)}
    await put_objects(objects)
    sources = [SourceObject(bucket, k) for k in objects]
    first, a = await zip_to_file(s3, bucket, sources, tmp_path, key="out/one.zip")
    _, b = await zip_to_file(s3, bucket, sources, tmp_path, key="out/two.zip")
    assert first.parts > 1
    assert a.read_bytes() == b.read_bytes()
    verify_archive(a, objects)


# ------------------------------------------------------------ names


HOSTILE_KEYS = {
    "../../etc/passwd": "etc/passwd",
    "/abs/root.pdf": "abs/root.pdf",
    "win\\dir\\file.pdf": "win/dir/file.pdf",
    "..\\..\\up.pdf": "up.pdf",
    "C:\\Windows\\evil.pdf": "Windows/evil.pdf",
    "./dot/./x.pdf": "dot/x.pdf",
    "a//b.pdf": "a/b.pdf",
    "tab\there.pdf": "tab_here.pdf",
    "ctl\x01\x1f.pdf": "ctl__.pdf",
    "nul\x00byte.pdf": "nul_byte.pdf",
    "del\x7f.pdf": "del_.pdf",
    "../..": "unnamed",
    "Ünïcödé/文件 📄.pdf": "Ünïcödé/文件 📄.pdf",
}

# Caller-given arcnames (a manifest) are cleaned the same way.
HOSTILE_ARCNAMES = {
    "/etc/shadow": "etc/shadow",
    "../../../../tmp/x": "tmp/x",
    "D:evil.pdf": "evil.pdf",
    "..\\..\\..\\boot.ini": "boot.ini",
}


def _extract_tools() -> list[list[str]]:
    tools = []
    if shutil.which("unzip"):
        tools.append(["unzip", "-qq", "-o"])
    if shutil.which("bsdtar"):
        tools.append(["bsdtar", "-xf"])
    return tools


async def test_hostile_names_are_neutralised_and_never_escape(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    objects = {k: body(100 + i, 20 + i) for i, k in enumerate(HOSTILE_KEYS)}
    await put_objects(objects)
    try:
        await _check_hostile(s3, bucket, objects, tmp_path)
    finally:
        # moto's DeleteObjects (the fixture's cleanup) answers 500 for such keys.
        for key in objects:
            await s3.delete_object(Bucket=bucket, Key=key)


async def _check_hostile(s3: Any, bucket: str, objects: dict[str, bytes], tmp_path: Path) -> None:
    sources = [SourceObject(bucket, k) for k in HOSTILE_KEYS]
    sources += [SourceObject(bucket, "../../etc/passwd", arcname=a) for a in HOSTILE_ARCNAMES]
    _, path = await zip_to_file(s3, bucket, sources, tmp_path)

    expected_names = list(HOSTILE_KEYS.values()) + list(HOSTILE_ARCNAMES.values())
    assert archive_names(path) == expected_names
    for name in expected_names:
        assert unsafe_name_reasons(name) == [], name
    expected = {HOSTILE_KEYS[k]: objects[k] for k in HOSTILE_KEYS}
    expected |= {n: objects["../../etc/passwd"] for n in HOSTILE_ARCNAMES.values()}
    verify_archive(path, expected)  # every reader lists exactly these names

    # And for real: extract deep inside a sandbox; nothing may land outside it.
    sandbox = tmp_path / "sandbox"
    for argv in _extract_tools():
        out = sandbox / argv[0] / "a" / "b" / "out"
        out.mkdir(parents=True)
        proc = subprocess.run(
            [*argv, str(path)] if argv[0] == "bsdtar" else [*argv, str(path), "-d", str(out)],
            cwd=out,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        outside = [p for p in (sandbox / argv[0]).rglob("*") if out not in p.parents and p != out]
        assert sorted(outside) == sorted([out.parent.parent, out.parent]), outside
        extracted = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert extracted == sorted(expected_names)


async def test_duplicate_names_are_renamed_case_insensitively(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    objects = {"x/a.pdf": body(10, 1), "y/A.PDF": body(20, 2), "z/a.pdf": body(30, 3)}
    objects |= {"w/a (1).pdf": body(40, 4), "v/README": body(50, 5), "u/readme": body(60, 6)}
    await put_objects(objects)
    sources = [
        SourceObject(bucket, "x/a.pdf", arcname="a.pdf"),
        SourceObject(bucket, "y/A.PDF", arcname="A.PDF"),
        SourceObject(bucket, "z/a.pdf", arcname="a.pdf"),
        SourceObject(bucket, "w/a (1).pdf", arcname="a (1).pdf"),  # an original wins its name
        SourceObject(bucket, "v/README", arcname="README"),
        SourceObject(bucket, "u/readme", arcname="readme"),
        SourceObject(bucket, "x/a.pdf"),  # the same key twice: both kept
        SourceObject(bucket, "x/a.pdf"),
    ]
    _, path = await zip_to_file(s3, bucket, sources, tmp_path)
    names = archive_names(path)
    assert names == [
        "a.pdf",
        "A (2).PDF",
        "a (3).pdf",
        "a (1).pdf",
        "README",
        "readme (1)",
        "x/a.pdf",
        "x/a (1).pdf",
    ]
    assert len({n.casefold() for n in names}) == len(names)
    contents = [objects[s.key] for s in sources]
    verify_archive(path, dict(zip(names, contents, strict=True)))


async def test_a_file_never_takes_a_folders_name(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    """``docs`` next to ``docs/x.pdf``: no extractor can create both."""
    objects = {"docs": body(10, 1), "docs/x.pdf": body(20, 2), "Reports": body(30, 3)}
    objects |= {"reports/2024/q1.pdf": body(40, 4)}
    await put_objects(objects)
    _, path = await zip_to_file(s3, bucket, [SourceObject(bucket, k) for k in objects], tmp_path)
    names = archive_names(path)
    assert names == ["docs (1)", "docs/x.pdf", "Reports (1)", "reports/2024/q1.pdf"]
    assert file_folder_clashes(names) == []
    verify_archive(path, dict(zip(names, objects.values(), strict=True)))


# ------------------------------------------------------------ options and callbacks


async def test_deflate_round_trips(s3: Any, bucket: str, put_objects: Any, tmp_path: Path) -> None:
    objects = {
        "text.txt": b"the quick brown fox jumps over the lazy dog\n" * 40_000,
        "random.bin": body(700_000, 30),
        "empty.txt": b"",
    }
    await put_objects(objects)
    options = ZipOptions(
        range_size=256 * 1024,
        min_part_size=5 * MiB,
        budget_bytes=16 * MiB,
        compression=Compression.DEFLATE,
    )
    result, path = await zip_to_file(
        s3, bucket, [SourceObject(bucket, k) for k in objects], tmp_path, options=options
    )
    verify_archive(path, objects)
    with zipfile.ZipFile(path) as zf:
        text = zf.getinfo("text.txt")
    assert text.compress_type == zipfile.ZIP_DEFLATED
    assert text.compress_size < text.file_size // 20
    assert result.archive_bytes < result.source_bytes


async def test_progress_is_exact_monotone_and_ends_at_the_totals(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    objects = {f"p/{i:03d}.pdf": body(50_000 + 997 * i, i) for i in range(40)}
    objects["p/empty.pdf"] = b""
    await put_objects(objects)
    seen: list[Progress] = []
    options = ZipOptions(
        range_size=64 * 1024, min_part_size=5 * MiB, budget_bytes=6 * MiB, progress_interval_s=0
    )
    _, path = await zip_to_file(
        s3,
        bucket,
        [SourceObject(bucket, k) for k in objects],
        tmp_path,
        options=options,
        on_progress=seen.append,
    )
    verify_archive(path, objects)
    total = sum(len(v) for v in objects.values())
    assert len(seen) > 2
    assert {(p.bytes_total, p.files_total) for p in seen} == {(total, len(objects))}
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert [p.files_done for p in seen] == sorted(p.files_done for p in seen)
    assert all(0 <= p.bytes_done <= total and 0 <= p.fraction <= 1 for p in seen)
    assert (seen[-1].bytes_done, seen[-1].files_done) == (total, len(objects))
    assert seen[-1].fraction == 1.0
    assert any(0 < p.bytes_done < total for p in seen)


async def test_two_concurrent_jobs_share_one_budget(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    one = {f"one/{i}.pdf": body(700_000, 100 + i) for i in range(10)}
    two = {f"two/{i}.pdf": body(600_000, 200 + i) for i in range(12)}
    await put_objects(one | two)
    options = ZipOptions(range_size=256 * 1024, min_part_size=5 * MiB, budget_bytes=12 * MiB)
    budget = Budget(20 * MiB)  # room for one 12 MiB lease and part of another
    (r1, p1), (r2, p2) = await asyncio.gather(
        zip_to_file(
            s3, bucket, [SourceObject(bucket, k) for k in one], tmp_path,
            key="out/one.zip", options=options, budget=budget, alone=False,
        ),
        zip_to_file(
            s3, bucket, [SourceObject(bucket, k) for k in two], tmp_path,
            key="out/two.zip", options=options, budget=budget, alone=False,
        ),
    )  # fmt: skip
    assert await open_uploads(s3, bucket) == []
    verify_archive(p1, one)
    verify_archive(p2, two)
    assert r1.parts > 1 and r2.parts > 1
    # Each job leases what it needs, up to its options' budget; two such leases
    # do not fit in 20 MiB, so the peak is one lease (the second job waited).
    assert options.budget_bytes // 2 < budget.peak <= options.budget_bytes
    assert budget.in_use == 0


async def test_list_prefix_then_zip(s3: Any, bucket: str, put_objects: Any, tmp_path: Path) -> None:
    objects = {
        "in/b.pdf": body(10, 1),
        "in/a.pdf": body(20, 2),
        "in/sub/c.pdf": body(30, 3),
        "in/": b"",  # a folder marker
        "in/sub/": b"",
        "inbox/not-this.pdf": body(40, 4),
        "other/x.pdf": body(50, 5),
    }
    await put_objects(objects)
    sources = await list_prefix(s3, bucket, "in/")
    assert [s.key for s in sources] == ["in/a.pdf", "in/b.pdf", "in/sub/c.pdf"]
    _, path = await zip_to_file(s3, bucket, sources, tmp_path)
    verify_archive(path, {k: objects[k] for k in ("in/a.pdf", "in/b.pdf", "in/sub/c.pdf")})


async def test_many_keys_in_one_directory_use_listing_and_stay_exact(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    """>= 20 keys in a directory are described by ListObjectsV2 instead of HEADs."""
    objects = {f"many/{i:03d}.pdf": body(i * 37, i) for i in range(120)}
    objects |= {f"many/z-unrequested-{i}": b"x" for i in range(5)}
    await put_objects(objects)
    wanted = [k for k in objects if "unrequested" not in k][::-1]  # reverse order
    _, path = await zip_to_file(s3, bucket, [SourceObject(bucket, k) for k in wanted], tmp_path)
    assert archive_names(path) == wanted
    verify_archive(path, {k: objects[k] for k in wanted})


async def test_listing_pages_past_the_first_thousand_keys(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    """Requested keys on the second ListObjectsV2 page (S3 returns 1,000 per page)."""
    objects = {f"d/{i:04d}.pdf": body(i % 50, i) for i in range(1030)}
    await put_objects(objects)
    wanted = [f"d/{i:04d}.pdf" for i in (*range(0, 1030, 50), 1001, 1015, 1029)]
    with pytest.raises(MissingSourcesError) as caught:
        await build_zip(
            [SourceObject(bucket, k) for k in [*wanted, "d/1030.pdf"]],
            Destination(bucket, "out/x.zip"),
            s3=s3,
            options=SMALL,
        )
    assert [p.key for p in caught.value.problems] == ["d/1030.pdf"]
    _, path = await zip_to_file(s3, bucket, [SourceObject(bucket, k) for k in wanted], tmp_path)
    verify_archive(path, {k: objects[k] for k in wanted})

"""The archives Locust kept, opened by every independent ZIP reader.

The locustfile checks each archive with Python's zipfile (every CRC, count,
sizes); that alone trusts the central directory. One archive per job shape is
therefore also put through tests/support/archive_check.py (unzip, 7z, bsdtar,
jar and zipfile, against each source's size and CRC-32 read back from moto).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from tests.support.archive_check import ArchiveCheckError, ExpectedEntry, verify_archive


def source_entry(s3: Any, bucket: str, key: str) -> ExpectedEntry:
    """Size and CRC-32 of one source object, streamed (large scans stay out of memory)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    crc, size = 0, 0
    for chunk in body.iter_chunks(1024 * 1024):
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    return ExpectedEntry(size=size, crc32=crc)


def verify_kept(keep_dir: Path, s3: Any, bucket: str) -> tuple[list[str], list[str]]:
    """(one line per archive checked, one line per problem). Entry names are the keys."""
    checked: list[str] = []
    problems: list[str] = []
    for meta in sorted(keep_dir.glob("*.json")):
        archive = meta.with_suffix(".zip")
        keys: list[str] = json.loads(meta.read_text())["keys"]
        expected = {key: source_entry(s3, bucket, key) for key in keys}
        try:
            ran = verify_archive(archive, expected)
        except ArchiveCheckError as err:
            problems.append(f"{archive.name} refused by an independent reader: {err}"[:2000])
            continue
        checked.append(f"{archive.name} ({len(keys)} entries): {', '.join(ran)}")
    return checked, problems

"""The archive checker fails when it should: a checker that always passes proves nothing.

Each damaged archive below is one that some real reader accepts, which is why
the checker asks all of them (see the table in each test's docstring).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.support import archive_check
from tests.support.archive_check import (
    ArchiveCheckError,
    ExpectedEntry,
    verify_archive,
    verify_archive_bytes,
)

FILES = {
    "hello.txt": b"hello there " * 40,
    "docs/ünï 日本.pdf": b"%PDF-1.7 " + bytes(range(256)),
}


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _installed(name: str) -> None:
    reader = archive_check.reader(name)
    if reader.locate() is None:
        pytest.skip(f"ZIP reader {name} not installed ({reader.package_hint})")


def _only(name: str, data: bytes, expected: archive_check.Expected) -> None:
    """Assert that reader ``name`` on its own rejects ``data``."""
    _installed(name)
    with pytest.raises(ArchiveCheckError, match=rf"\b{name}\b"):
        verify_archive_bytes(data, expected, readers=[name])


def test_a_good_archive_passes_every_installed_reader() -> None:
    ran = verify_archive_bytes(_zip(FILES, zipfile.ZIP_DEFLATED), FILES)
    assert ran[0] == "zipfile"
    assert set(ran) <= set(archive_check.READER_NAMES)


def test_expected_entry_by_size_and_crc_passes() -> None:
    expected = {name: ExpectedEntry.of(data) for name, data in FILES.items()}
    assert "zipfile" in verify_archive_bytes(_zip(FILES), expected)


@pytest.mark.parametrize("name", archive_check.READER_NAMES)
def test_every_reader_notices_a_missing_name(name: str) -> None:
    _only(name, _zip(FILES), {**FILES, "absent.pdf": b"x"})


@pytest.mark.parametrize("name", archive_check.READER_NAMES)
def test_every_reader_notices_an_unexpected_name(name: str) -> None:
    _only(name, _zip(FILES), {"hello.txt": FILES["hello.txt"]})


@pytest.mark.parametrize("name", archive_check.READER_NAMES)
def test_every_reader_notices_a_duplicate_name(name: str) -> None:
    buf = io.BytesIO()
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.pdf", b"one")
        zf.writestr("a.pdf", b"two")
    _only(name, buf.getvalue(), {"a.pdf": b"one"})


def test_unicode_name_must_match_exactly() -> None:
    """NFD vs NFC is a different name: the checker must not normalise it away."""
    nfd = "docs/u\u0308.pdf"  # u + combining diaeresis
    with pytest.raises(ArchiveCheckError, match="missing entries"):
        verify_archive_bytes(_zip({"docs/ü.pdf": b"x"}), {nfd: b"x"}, readers=["zipfile"])


def test_zipfile_notices_wrong_content_of_the_same_size() -> None:
    wrong = {**FILES, "hello.txt": FILES["hello.txt"].upper()}
    with pytest.raises(ArchiveCheckError, match=r"hello\.txt"):
        verify_archive_bytes(_zip(FILES), wrong, readers=["zipfile"])


def test_zipfile_notices_a_wrong_expected_crc() -> None:
    data = FILES["hello.txt"]
    bad = ExpectedEntry(size=len(data), crc32=zlib.crc32(data) ^ 1)
    with pytest.raises(ArchiveCheckError, match="CRC"):
        verify_archive_bytes(_zip({"hello.txt": data}), {"hello.txt": bad}, readers=["zipfile"])


def _flip_first_data_byte(archive: bytes) -> bytes:
    """Corrupt entry 0's data, leaving every header (and so every listing) intact."""
    name_len, extra_len = struct.unpack_from("<HH", archive, 26)
    damaged = bytearray(archive)
    damaged[30 + name_len + extra_len] ^= 0xFF
    return bytes(damaged)


@pytest.mark.parametrize("name", ["zipfile", "unzip", "7z", "bsdtar"])
def test_data_corruption_is_caught(name: str) -> None:
    """jar tf only lists, so it is the one reader not asked to catch bad data."""
    _only(name, _flip_first_data_byte(_zip(FILES)), FILES)


@pytest.mark.parametrize("name", ["unzip", "7z", "bsdtar"])
def test_local_header_crc_mismatch_is_caught(name: str) -> None:
    """zipfile trusts the central directory and passes this one; the others must not."""
    damaged = bytearray(_zip(FILES))
    damaged[14] ^= 0xFF  # CRC-32 field of the first local header
    _only(name, bytes(damaged), FILES)
    assert verify_archive_bytes(bytes(damaged), FILES, readers=["zipfile"]) == ("zipfile",)


def test_7z_warning_with_exit_code_zero_is_a_failure(tmp_path: Path) -> None:
    """Trailing bytes after the end record: 7-Zip prints WARNINGS yet exits 0."""
    _installed("7z")
    path = tmp_path / "trailing.zip"
    path.write_bytes(_zip(FILES) + b"trailing garbage")
    with pytest.raises(ArchiveCheckError, match="There are data after the end of archive"):
        verify_archive(path, FILES, readers=["7z"])


@pytest.mark.parametrize("name", ["zipfile", "unzip"])
def test_local_and_central_names_must_agree(name: str) -> None:
    damaged = bytearray(_zip(FILES))
    damaged[30] = ord("j")  # first byte of the local header's name: "jello.txt"
    _only(name, bytes(damaged), FILES)


@pytest.mark.parametrize("name", ["zipfile", "unzip", "7z", "jar"])
def test_truncated_archive_is_caught(name: str) -> None:
    """The end record is cut off. bsdtar accepts this (it falls back to reading the
    local headers in order), one more reason no single reader is trusted."""
    data = _zip(FILES)
    _only(name, data[: len(data) - 30], FILES)


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ArchiveCheckError) as err:
        verify_archive_bytes(_zip(FILES), {"other.pdf": b"x"})
    text = str(err.value)
    assert "missing entries ['other.pdf']" in text
    assert "unexpected entries" in text
    for name in archive_check.READER_NAMES:
        if archive_check.reader(name).locate() is not None:
            assert name in text

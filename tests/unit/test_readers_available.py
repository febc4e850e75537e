"""Each independent ZIP reader is installed and reads a plain, known-good archive.

A missing reader shows up here as one skipped test with a one-line reason
(or as a failure when ZIPJOBS_REQUIRE_READERS=1, as in CI), so a thinner
check of every archive in the suite never goes unnoticed.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import pytest

from tests.support import archive_check
from tests.support.archive_check import ArchiveCheckError, MissingReaderWarning, verify_archive

GOOD = {
    "report.pdf": b"%PDF-1.4\n" + bytes(range(256)) * 64,
    "dir/ünïcødé 日本.pdf": b"unicode name",
    "dir/sub/a (1).pdf": b"",
    "dir/ spaced .txt": b"spaces at both ends",
}


def _good_archive(path: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, data) in enumerate(GOOD.items()):
            compression = zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED
            zf.writestr(name, data, compress_type=compression)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("name", archive_check.READER_NAMES)
def test_reader_is_installed_and_reads_a_good_archive(name: str, tmp_path: Path) -> None:
    reader = archive_check.reader(name)
    if reader.locate() is None:
        message = f"ZIP reader {name} not installed ({reader.package_hint})"
        if archive_check.require_readers():
            pytest.fail(message + f" and {archive_check.REQUIRE_READERS_ENV}=1")
        pytest.skip(message)
    assert verify_archive(_good_archive(tmp_path / "good.zip"), GOOD, readers=[name]) == (name,)


def test_missing_reader_fails_when_readers_are_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _good_archive(tmp_path / "good.zip")
    monkeypatch.setenv("PATH", str(tmp_path))  # no tool on an empty PATH
    monkeypatch.setenv(archive_check.REQUIRE_READERS_ENV, "1")
    with pytest.raises(ArchiveCheckError, match=r"missing: unzip: apt-get install unzip"):
        verify_archive(archive, GOOD)


def test_missing_reader_warns_when_not_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _good_archive(tmp_path / "good.zip")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(archive_check.REQUIRE_READERS_ENV, raising=False)
    monkeypatch.setattr(archive_check, "_warned_missing", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ran = verify_archive(archive, GOOD)
    assert ran == ("zipfile",)
    messages = [str(w.message) for w in caught if issubclass(w.category, MissingReaderWarning)]
    for name in ("unzip", "7z", "bsdtar", "jar"):
        assert any(f"{name!r} is not installed" in m for m in messages), name


def test_unknown_reader_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown reader"):
        verify_archive(_good_archive(tmp_path / "good.zip"), GOOD, readers=["winzip"])


def test_ci_requires_readers() -> None:
    """Under .ci/run every reader must be present; elsewhere this documents the switch."""
    if os.environ.get("CI") != "true":
        pytest.skip("only meaningful under CI=true")
    assert archive_check.require_readers(), ".ci/run must export ZIPJOBS_REQUIRE_READERS=1"

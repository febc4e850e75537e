"""Open an archive with every independent ZIP reader we can find, and demand they all agree.

One reader accepting an archive proves little: Python's ``zipfile`` trusts the
central directory and ignores a wrong CRC in a local header, ``7z t`` exits 0
on trailing garbage (it only prints WARNINGS), Info-ZIP ignores a local name
that differs from the central one's... Users of other zippers found their
archives "corrupt" in exactly one of these (docs/DESIGN.md: ZIP64 refusals,
7-Zip "Headers Error"). So each archive a test produces goes through:

* Python ``zipfile``: names, sizes, CRC-32 and content, entry by entry;
* Info-ZIP ``unzip -t`` (integrity) and ``unzip -Z1`` (names);
* 7-Zip ``7z t`` (integrity and names; any warning or error text fails);
* libarchive ``bsdtar -tf`` (names) and ``bsdtar -xOf`` (integrity);
* Java ``jar tf`` (names; the JDK's strict central-directory checks).

A reader that is not installed is reported, not silently ignored: with
``ZIPJOBS_REQUIRE_READERS=1`` (set by ``.ci/run``) it fails the check, and
otherwise it raises a ``MissingReaderWarning`` that pytest lists at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REQUIRE_READERS_ENV = "ZIPJOBS_REQUIRE_READERS"
TOOL_TIMEOUT_S = 900  # multi-GiB ZIP64 archives take a while to test
_CHUNK = 1024 * 1024

# Names go through stdout: a UTF-8 locale makes each tool print them as UTF-8.
_TOOL_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

# Text in 7-Zip's output that means trouble even when it exits 0.
SEVEN_ZIP_BAD_MARKERS = (
    "WARNING",
    "Warnings:",
    "Headers Error",
    "ERROR",
    "Unexpected end",
    "There are data after",
    "Can not open",
    "Cannot open",
    "Unsupported",
    "CRC Failed",
)


@dataclass(frozen=True, slots=True)
class ExpectedEntry:
    """An entry known by size and CRC-32 only, for contents too big to hold in memory."""

    size: int
    crc32: int

    @classmethod
    def of(cls, data: bytes) -> ExpectedEntry:
        return cls(size=len(data), crc32=zlib.crc32(data))


Expected = Mapping[str, "bytes | ExpectedEntry"]


class ArchiveCheckError(AssertionError):
    """At least one reader disagreed with the expectation (message lists every problem)."""


class MissingReaderWarning(UserWarning):
    """A ZIP reader is not installed here, so archives were checked by fewer readers."""


@dataclass(frozen=True, slots=True)
class Reader:
    """A ZIP reader: its name and the executables that provide it (first found wins)."""

    name: str
    executables: tuple[str, ...]
    package_hint: str

    def locate(self) -> str | None:
        """Path of the executable, or None when absent (``zipfile`` is always present)."""
        if not self.executables:
            return "python"
        for exe in self.executables:
            if found := shutil.which(exe):
                return found
        return None


READERS: tuple[Reader, ...] = (
    Reader("zipfile", (), "Python standard library"),
    Reader("unzip", ("unzip",), "apt-get install unzip"),
    # 7zz is the upstream 7-Zip binary; 7z/7za come with p7zip-full.
    Reader("7z", ("7z", "7zz", "7za"), "apt-get install p7zip-full"),
    Reader("bsdtar", ("bsdtar",), "apt-get install libarchive-tools"),
    Reader("jar", ("jar",), "apt-get install default-jdk-headless"),
)
READER_NAMES = tuple(r.name for r in READERS)


def reader(name: str) -> Reader:
    for r in READERS:
        if r.name == name:
            return r
    raise KeyError(f"unknown reader {name!r}; known: {', '.join(READER_NAMES)}")


def require_readers() -> bool:
    return os.environ.get(REQUIRE_READERS_ENV, "") == "1"


# ---------------------------------------------------------------- comparing


def _compare_names(reader_name: str, listed: Sequence[str], expected: Expected) -> list[str]:
    """Exact, order-insensitive name comparison; duplicates in the archive are problems."""
    problems = []
    dupes = sorted(n for n, c in Counter(listed).items() if c > 1)
    if dupes:
        problems.append(f"{reader_name}: duplicate entries {dupes!r}")
    missing = sorted(set(expected) - set(listed))
    extra = sorted(set(listed) - set(expected))
    if missing:
        problems.append(f"{reader_name}: missing entries {missing[:20]!r} ({len(missing)} total)")
    if extra:
        problems.append(f"{reader_name}: unexpected entries {extra[:20]!r} ({len(extra)} total)")
    return problems


def _want(value: bytes | ExpectedEntry) -> ExpectedEntry:
    return ExpectedEntry.of(value) if isinstance(value, bytes) else value


# ---------------------------------------------------------------- readers


def _check_zipfile(path: Path, expected: Expected) -> list[str]:
    """Every entry is read in full: zipfile verifies each CRC itself, and we compare ours.

    This is what ``ZipFile.testzip()`` does, plus sizes and contents against the
    expectation, streamed so multi-GiB entries never sit in memory.
    """
    problems: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            problems += _compare_names("zipfile", [i.filename for i in infos], expected)
            for info in infos:
                if info.filename not in expected:
                    continue
                problems += _check_zipfile_entry(zf, info, expected[info.filename])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        problems.append(f"zipfile: cannot read archive: {type(exc).__name__}: {exc}")
    return problems


def _check_zipfile_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, value: bytes | ExpectedEntry
) -> list[str]:
    want = _want(value)
    name = info.filename
    problems = []
    if info.file_size != want.size:
        problems.append(f"zipfile: {name!r} central size {info.file_size} != expected {want.size}")
    if want.crc32 != info.CRC:
        problems.append(f"zipfile: {name!r} central CRC {info.CRC:#010x} != {want.crc32:#010x}")
    crc, size, same = 0, 0, True
    try:
        with zf.open(info) as fh:  # raises BadZipFile on a CRC or local-header mismatch
            while chunk := fh.read(_CHUNK):
                if isinstance(value, bytes) and chunk != value[size : size + len(chunk)]:
                    same = False
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        return [*problems, f"zipfile: {name!r} unreadable: {type(exc).__name__}: {exc}"]
    if (size, crc) != (want.size, want.crc32):
        problems.append(
            f"zipfile: {name!r} data has size {size} crc {crc:#010x}, "
            f"expected size {want.size} crc {want.crc32:#010x}"
        )
    elif not same:
        problems.append(f"zipfile: {name!r} content differs from expected bytes")
    return problems


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, **_TOOL_ENV},
        stdin=subprocess.DEVNULL,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def _tail(text: str, lines: int = 15) -> str:
    return "\n    ".join(text.strip().splitlines()[-lines:])


def _lines(stdout: str) -> list[str]:
    """Output lines without the newline, keeping leading/trailing spaces (they are names)."""
    return [line for line in stdout.split("\n") if line != ""]


def _check_unzip(exe: str, path: Path, expected: Expected) -> list[str]:
    problems = []
    test = _run([exe, "-t", "-qq", str(path)])
    if test.returncode != 0:
        problems.append(f"unzip -t: exit {test.returncode}\n    {_tail(test.stdout + test.stderr)}")
    listing = _run([exe, "-Z1", str(path)])
    if listing.returncode != 0 and not (not expected and "Empty zipfile" in listing.stdout):
        problems.append(f"unzip -Z1: exit {listing.returncode}\n    {_tail(listing.stderr)}")
    else:
        names = [] if not expected else _lines(listing.stdout)
        problems += _compare_names("unzip -Z1", names, expected)
    return problems


def _check_7z(exe: str, path: Path, expected: Expected) -> list[str]:
    """``-bb1`` prints one ``T name`` line per tested entry: names and integrity in one pass."""
    proc = _run([exe, "t", "-bb1", "-bd", "-y", str(path)])
    out = proc.stdout + proc.stderr
    # Entry lines are names, not messages: a file called WARNING.txt is fine.
    messages = "\n".join(line for line in out.split("\n") if not line.startswith("T "))
    problems = []
    bad = [m for m in SEVEN_ZIP_BAD_MARKERS if m in messages]
    if proc.returncode != 0 or bad or "Everything is Ok" not in out:
        problems.append(f"7z t: exit {proc.returncode}, markers {bad!r}\n    {_tail(out, 25)}")
        return problems
    names = [line[2:] for line in proc.stdout.split("\n") if line.startswith("T ")]
    problems += _compare_names("7z t", names, expected)
    return problems


def _check_bsdtar(exe: str, path: Path, expected: Expected) -> list[str]:
    problems = []
    listing = _run([exe, "-tf", str(path)])
    if listing.returncode != 0 or listing.stderr.strip():
        problems.append(f"bsdtar -tf: exit {listing.returncode}\n    {_tail(listing.stderr)}")
    else:
        problems += _compare_names("bsdtar -tf", _lines(listing.stdout), expected)
    # Extract to stdout (discarded): libarchive checks sizes and CRC-32 of every entry.
    with open(os.devnull, "wb") as sink:
        extract = subprocess.run(
            [exe, "-xOf", str(path)],
            stdout=sink,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **_TOOL_ENV},
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    err = extract.stderr.decode("utf-8", "replace")
    if extract.returncode != 0 or err.strip():
        problems.append(f"bsdtar -xOf: exit {extract.returncode}\n    {_tail(err)}")
    return problems


def _check_jar(exe: str, path: Path, expected: Expected) -> list[str]:
    argv = [
        exe,
        "-J-Dfile.encoding=UTF-8",
        "-J-Dsun.stdout.encoding=UTF-8",
        "-J-XX:TieredStopAtLevel=1",  # a listing needs no optimising JIT; starts faster
        "tf",
        str(path),
    ]
    proc = _run(argv)
    if proc.returncode != 0 or proc.stderr.strip():
        return [f"jar tf: exit {proc.returncode}\n    {_tail(proc.stderr)}"]
    return _compare_names("jar tf", _lines(proc.stdout), expected)


_CHECKS: dict[str, Callable[[str, Path, Expected], list[str]]] = {
    "zipfile": lambda _exe, p, e: _check_zipfile(p, e),
    "unzip": _check_unzip,
    "7z": _check_7z,
    "bsdtar": _check_bsdtar,
    "jar": _check_jar,
}

_warned_missing: set[str] = set()


def _missing_readers(names: Iterable[str]) -> list[str]:
    return [n for n in names if reader(n).locate() is None]


def verify_archive(
    path: str | os.PathLike[str],
    expected: Expected,
    *,
    readers: Iterable[str] | None = None,
) -> tuple[str, ...]:
    """Check ``path`` with every available reader; return the names of those that ran.

    ``expected`` maps each entry name to its bytes, or to an ``ExpectedEntry``
    (size + CRC-32) when the content is too large to keep. The archive must
    hold exactly these names, once each. All readers run (in parallel) and all
    their problems are reported together in one ``ArchiveCheckError``.
    ``readers`` narrows the set, for the checker's own tests.
    """
    archive = Path(path)
    wanted = tuple(readers) if readers is not None else READER_NAMES
    for name in wanted:
        reader(name)  # unknown names fail fast
    missing = _missing_readers(wanted)
    if missing and require_readers():
        hints = "; ".join(f"{m}: {reader(m).package_hint}" for m in missing)
        raise ArchiveCheckError(
            f"{REQUIRE_READERS_ENV}=1 but these ZIP readers are missing: {hints}"
        )
    for m in missing:
        if m not in _warned_missing:
            _warned_missing.add(m)
            warnings.warn(
                f"ZIP reader {m!r} is not installed ({reader(m).package_hint}); "
                "archives are checked without it",
                MissingReaderWarning,
                stacklevel=2,
            )
    ran = tuple(n for n in wanted if n not in missing)
    with ThreadPoolExecutor(max_workers=max(1, len(ran))) as pool:
        futures = {
            n: pool.submit(_CHECKS[n], reader(n).locate() or "", archive, expected) for n in ran
        }
        problems = [p for n in ran for p in futures[n].result()]
    if problems:
        raise ArchiveCheckError(
            f"{archive.name}: {len(problems)} problem(s) from readers {', '.join(ran)}:\n  - "
            + "\n  - ".join(problems)
        )
    return ran


def verify_archive_bytes(
    data: bytes,
    expected: Expected,
    *,
    readers: Iterable[str] | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, ...]:
    """``verify_archive`` for an archive held in memory (written to a temporary file)."""
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="zipcheck-") as d:
        path = Path(d) / "archive.zip"
        path.write_bytes(data)
        return verify_archive(path, expected, readers=readers)

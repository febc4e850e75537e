"""An incremental ZIP verifier: bytes in (in order, any chunking), verdict out.

The benchmark endpoint discards uploaded bytes, so it cannot hand a finished
archive to ``zipfile``. Instead the archive is checked as it streams past:
local headers, entry data, data descriptors, the central directory and the
(ZIP64) end records, each compared with what came before, and every entry's
content compared with the source it claims to be (size and CRC-32 from the
deterministic generator). Nothing but a few bytes of headers is kept.

STORED entries written with a data descriptor carry no size in their local
header (zipstream-ng writes zeros), so their end is found by scanning for a
descriptor whose size and CRC match the bytes seen so far; a false match
would need a 32-bit CRC and the exact length to collide.

Pure logic, no I/O: ``feed()`` chunks, then ``finish()``.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
DESCRIPTOR_SIG = b"PK\x07\x08"
ZIP64_EOCD_SIG = b"PK\x06\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
EOCD_SIG = b"PK\x05\x06"

FLAG_DESCRIPTOR = 0x08
FLAG_UTF8 = 0x800
STORED, DEFLATED = 0, 8
U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF
ZIP64_EXTRA = 0x0001
PARSE_SLICE = 64 * 1024

# name -> (size, crc32) of the source the entry should hold, or None if unknown.
ExpectFn = Callable[[str], tuple[int, int] | None]


@dataclass(slots=True)
class Entry:
    """One entry as the local header and its data described it."""

    name: str
    offset: int
    method: int
    flags: int
    zip64: bool
    crc: int = 0  # computed over the (uncompressed) data
    size: int = 0  # uncompressed bytes
    csize: int = 0  # bytes in the archive
    declared: tuple[int, int, int] | None = None  # (crc, csize, size) from header/descriptor


@dataclass(slots=True)
class ZipReport:
    """What the verifier concluded; ``zip_ok`` is False if anything is wrong."""

    length: int
    entries: int
    zip_ok: bool
    errors: list[str]
    names_sha256: str
    zip64: bool
    unknown_entries: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "entries": self.entries,
            "zip_ok": self.zip_ok,
            "errors": self.errors,
            "names_sha256": self.names_sha256,
            "zip64": self.zip64,
            "unknown_entries": self.unknown_entries,
        }


def names_digest(names: list[str]) -> str:
    """The digest ``ZipReport.names_sha256`` holds for entries named ``names``, in order."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\n")
    return h.hexdigest()


@dataclass(slots=True)
class _Central:
    start: int | None = None
    count: int = 0
    end: int | None = None
    zip64_eocd_at: int | None = None
    zip64_values: tuple[int, int, int] | None = None  # (entries, cd size, cd offset)


class ZipChecker:
    """Feed the archive's bytes in order; ``finish()`` returns the report."""

    def __init__(self, expect: ExpectFn | None = None, max_errors: int = 20) -> None:
        self._expect = expect
        self._max_errors = max_errors
        self._buf = bytearray()
        self._i = 0  # parse position inside _buf
        self._base = 0  # archive offset of _buf[0]
        self._state: Callable[[], bool] = self._signature
        self._entries: list[Entry] = []
        self._entry: Entry | None = None
        self._inflate: Any = None
        self._search_from = 0
        self._central = _Central()
        self._names = hashlib.sha256()
        self._unknown = 0
        self._done = False
        self._broken = False
        self.errors: list[str] = []
        self.error_count = 0

    # -- public ---------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse the next bytes of the archive.

        Entry data whose length is known is checksummed straight from the
        caller's buffer (no copy); only headers go through the small parse
        buffer, fed in slices so a large chunk is never copied whole.
        """
        view = memoryview(data).cast("B")
        while view:
            if self._broken:
                self._base += len(view)
                return
            if self._state == self._known_data and self._inflate is None:
                self._compact()
                if not self._buf:
                    view = self._direct(view)
                    continue
            self._buf += view[:PARSE_SLICE]
            view = view[PARSE_SLICE:]
            while not self._broken and self._state():
                pass
            if self._broken:
                self._base += len(self._buf)
                self._buf.clear()
                self._i = 0
                continue
            self._compact()

    def _compact(self) -> None:
        """Drop what has been parsed; keep the unparsed tail."""
        if self._i:
            del self._buf[: self._i]
            self._base += self._i
            self._search_from = max(0, self._search_from - self._i)
            self._i = 0

    def _direct(self, view: memoryview) -> memoryview:
        """Known-length STORED data, straight from the caller's buffer."""
        entry = self._entry
        assert entry is not None
        take = min(self._remaining, len(view))
        entry.crc = zlib.crc32(view[:take], entry.crc)
        entry.size += take
        entry.csize += take
        self._remaining -= take
        self._base += take
        if not self._remaining:
            self._after_known()
        return view[take:]

    def finish(self) -> ZipReport:
        length = self._base + len(self._buf)
        if not self._broken and not self._done:
            where = self._state.__name__.lstrip("_")
            if self._entry is not None:
                where += f" of entry {self._entry.name!r} at {self._entry.offset}"
            self._error(f"archive ends early at byte {length} (while reading {where})")
        if not self._entries and not self._broken:
            self._error("archive has no entries")
        return ZipReport(
            length=length,
            entries=len(self._entries),
            zip_ok=self.error_count == 0,
            errors=list(self.errors),
            names_sha256=self._names.hexdigest(),
            zip64=self._central.zip64_eocd_at is not None,
            unknown_entries=self._unknown,
        )

    # -- helpers ----------------------------------------------------------------

    def _error(self, msg: str) -> None:
        self.error_count += 1
        if len(self.errors) < self._max_errors:
            self.errors.append(msg)

    def _fatal(self, msg: str) -> bool:
        """A structural error: nothing after it can be parsed meaningfully."""
        self._error(msg)
        self._broken = True
        return False

    def _have(self, n: int) -> bool:
        return len(self._buf) - self._i >= n

    @property
    def _offset(self) -> int:
        return self._base + self._i

    # -- states: each returns True if it made progress --------------------------

    def _signature(self) -> bool:
        if not self._have(4):
            return False
        sig = bytes(self._buf[self._i : self._i + 4])
        if sig == LOCAL_SIG:
            if self._central.start is not None:
                return self._fatal(f"local header at {self._offset} after the central directory")
            self._state = self._local
        elif sig == CENTRAL_SIG:
            if self._central.start is None:
                self._central.start = self._offset
            self._state = self._central_header
        elif sig == ZIP64_EOCD_SIG:
            self._state = self._zip64_eocd
        elif sig == ZIP64_LOCATOR_SIG:
            self._state = self._zip64_locator
        elif sig == EOCD_SIG:
            self._state = self._eocd
        else:
            return self._fatal(f"no ZIP signature at byte {self._offset} (found {sig.hex()})")
        return True

    def _local(self) -> bool:
        if not self._have(30):
            return False
        (_, _, flags, method, _, _, crc, csize, size, nlen, elen) = struct.unpack_from(
            "<IHHHHHIIIHH", self._buf, self._i
        )
        if not self._have(30 + nlen + elen):
            return False
        raw_name = bytes(self._buf[self._i + 30 : self._i + 30 + nlen])
        name = raw_name.decode("utf-8" if flags & FLAG_UTF8 else "cp437", errors="replace")
        extra = bytes(self._buf[self._i + 30 + nlen : self._i + 30 + nlen + elen])
        z64 = _zip64_fields(extra)
        entry = Entry(name, self._offset, method, flags, zip64=z64 is not None)
        self._names.update(name.encode() + b"\n")
        self._i += 30 + nlen + elen
        if method not in (STORED, DEFLATED):
            return self._fatal(f"{name}: compression method {method} not supported here")
        self._entry = entry
        self._inflate = zlib.decompressobj(-15) if method == DEFLATED else None
        if flags & FLAG_DESCRIPTOR:
            want = self._lookup(name)
            if method == STORED and want is not None:
                # The source's size says where the data ends: no scanning. A
                # wrong length then shows up as a missing descriptor.
                self._remaining = want[0]
                self._state = self._known_data
            elif method == STORED:
                self._search_from = self._i
                self._state = self._scan_stored
            else:
                self._state = self._inflate_until_end
            return True
        if z64 is not None and (csize == U32_MAX or size == U32_MAX):
            values = list(z64)
            size = values.pop(0) if size == U32_MAX and values else size
            csize = values.pop(0) if csize == U32_MAX and values else csize
        entry.declared = (crc, csize, size)
        self._remaining = csize
        self._state = self._known_data
        return True

    def _consume(self, stop: int) -> None:
        """Account entry bytes ``_buf[_i:stop]`` and move past them."""
        entry = self._entry
        assert entry is not None
        view = memoryview(self._buf)[self._i : stop]
        entry.csize += len(view)
        if self._inflate is None:
            entry.crc = zlib.crc32(view, entry.crc)
            entry.size += len(view)
        else:
            out = self._inflate.decompress(view)
            entry.crc = zlib.crc32(out, entry.crc)
            entry.size += len(out)
        view.release()
        self._i = stop

    def _known_data(self) -> bool:
        take = min(self._remaining, len(self._buf) - self._i)
        if take:
            self._consume(self._i + take)
            self._remaining -= take
        if self._remaining:
            return False
        self._after_known()
        return True

    def _after_known(self) -> None:
        assert self._entry is not None
        if self._entry.flags & FLAG_DESCRIPTOR:
            self._state = self._descriptor
        else:
            self._end_entry()

    def _inflate_until_end(self) -> bool:
        if self._i >= len(self._buf):
            return False
        self._consume(len(self._buf))
        if not self._inflate.eof:
            return False
        # Whatever zlib did not use belongs to the descriptor and beyond.
        unused = len(self._inflate.unused_data)
        assert self._entry is not None
        self._entry.csize -= unused
        self._i = len(self._buf) - unused
        self._state = self._descriptor
        return True

    def _descriptor_len(self) -> int:
        assert self._entry is not None
        return 20 if self._entry.zip64 else 12  # without the optional signature

    def _descriptor_matches(self, at: int) -> bool:
        """Is there a descriptor at ``at`` that describes exactly _buf[_i:at]?"""
        entry = self._entry
        assert entry is not None
        fmt = "<IQQ" if entry.zip64 else "<III"
        crc, csize, size = struct.unpack_from(fmt, self._buf, at + 4)
        grown = entry.size + (at - self._i)
        if csize != grown or size != grown:
            return False
        return bool(crc == zlib.crc32(memoryview(self._buf)[self._i : at], entry.crc))

    def _scan_stored(self) -> bool:
        need = 4 + self._descriptor_len()
        while True:
            at = self._buf.find(DESCRIPTOR_SIG, max(self._search_from, self._i))
            if at < 0:
                stop = max(self._i, len(self._buf) - 3)  # a signature may straddle chunks
                if stop > self._i:
                    self._consume(stop)
                self._search_from = self._i
                return False
            if len(self._buf) < at + need:
                if at > self._i:
                    self._consume(at)
                self._search_from = at
                return False
            if self._descriptor_matches(at):
                self._consume(at)
                self._state = self._descriptor
                return True
            self._search_from = at + 1

    def _descriptor(self) -> bool:
        if not self._have(4):
            return False
        has_sig = self._buf[self._i : self._i + 4] == DESCRIPTOR_SIG
        n = self._descriptor_len() + (4 if has_sig else 0)
        if not self._have(n):
            return False
        fmt = "<IQQ" if self._descriptor_len() == 20 else "<III"
        assert self._entry is not None
        self._entry.declared = struct.unpack_from(fmt, self._buf, self._i + (4 if has_sig else 0))
        self._i += n
        self._end_entry()
        return True

    def _end_entry(self) -> None:
        entry = self._entry
        assert entry is not None and entry.declared is not None
        crc, csize, size = entry.declared
        if (crc, csize, size) != (entry.crc, entry.csize, entry.size):
            self._error(
                f"{entry.name}: header/descriptor says crc={crc:08x} csize={csize} size={size}, "
                f"data has crc={entry.crc:08x} csize={entry.csize} size={entry.size}"
            )
        self._check_source(entry)
        self._entries.append(entry)
        self._entry = None
        self._inflate = None
        self._state = self._signature

    def _lookup(self, name: str) -> tuple[int, int] | None:
        return None if self._expect is None else self._expect(name)

    def _check_source(self, entry: Entry) -> None:
        if self._expect is None:
            return
        want = self._lookup(entry.name)
        if want is None:
            self._unknown += 1
            self._error(f"{entry.name}: no source object of that name")
            return
        size, crc = want
        if (size, crc) != (entry.size, entry.crc):
            self._error(
                f"{entry.name}: content differs from its source "
                f"(source size={size} crc={crc:08x}, entry size={entry.size} crc={entry.crc:08x})"
            )

    def _central_header(self) -> bool:
        if not self._have(46):
            return False
        fields = struct.unpack_from("<IHHHHHHIIIHHHHHII", self._buf, self._i)
        (_, _, _, flags, method, _, _, crc, csize, size, nlen, elen, clen) = fields[:13]
        offset = fields[16]
        if not self._have(46 + nlen + elen + clen):
            return False
        start = self._i + 46
        raw_name = bytes(self._buf[start : start + nlen])
        name = raw_name.decode("utf-8" if flags & FLAG_UTF8 else "cp437", errors="replace")
        z64 = list(_zip64_fields(bytes(self._buf[start + nlen : start + nlen + elen])) or ())
        if size == U32_MAX and z64:
            size = z64.pop(0)
        if csize == U32_MAX and z64:
            csize = z64.pop(0)
        if offset == U32_MAX and z64:
            offset = z64.pop(0)
        self._i += 46 + nlen + elen + clen
        index = self._central.count
        self._central.count += 1
        if index >= len(self._entries):
            self._error(f"central directory lists {name!r} beyond the {len(self._entries)} entries")
            return True
        e = self._entries[index]
        got = (name, method, crc, csize, size, offset)
        want = (e.name, e.method, e.crc, e.csize, e.size, e.offset)
        if got != want:
            self._error(
                f"central directory record {index} is (name, method, crc, csize, size, offset)"
                f"={got}, the local entry is {want}"
            )
        self._state = self._signature
        return True

    def _close_central(self) -> None:
        if self._central.end is None:
            self._central.end = self._offset
            if self._central.start is None:
                self._central.start = self._offset
            if self._central.count != len(self._entries):
                self._error(
                    f"central directory has {self._central.count} records "
                    f"for {len(self._entries)} entries"
                )

    def _zip64_eocd(self) -> bool:
        if not self._have(12):
            return False
        (rest,) = struct.unpack_from("<Q", self._buf, self._i + 4)
        if not self._have(12 + rest):
            return False
        self._close_central()
        if rest < 44:
            return self._fatal(f"ZIP64 end record at {self._offset} too short ({rest})")
        _, _, _, _, on_disk, total, cd_size, cd_offset = struct.unpack_from(
            "<HHIIQQQQ", self._buf, self._i + 12
        )
        self._central.zip64_eocd_at = self._offset
        self._central.zip64_values = (total, cd_size, cd_offset)
        self._check_directory("ZIP64 end record", on_disk, total, cd_size, cd_offset)
        self._i += 12 + rest
        self._state = self._signature
        return True

    def _zip64_locator(self) -> bool:
        if not self._have(20):
            return False
        _, _, at, _ = struct.unpack_from("<IIQI", self._buf, self._i)
        if at != self._central.zip64_eocd_at:
            self._error(
                f"ZIP64 locator points at {at}, the ZIP64 end record is at "
                f"{self._central.zip64_eocd_at}"
            )
        self._i += 20
        self._state = self._signature
        return True

    def _eocd(self) -> bool:
        if not self._have(22):
            return False
        _, _, _, on_disk, total, cd_size, cd_offset, clen = struct.unpack_from(
            "<IHHHHIIH", self._buf, self._i
        )
        if not self._have(22 + clen):
            return False
        self._close_central()
        z64 = self._central.zip64_values
        if z64 is not None:
            # Fields that overflowed are 0xFFFF/0xFFFFFFFF and live in the ZIP64 record.
            total = z64[0] if total == U16_MAX else total
            on_disk = z64[0] if on_disk == U16_MAX else on_disk
            cd_size = z64[1] if cd_size == U32_MAX else cd_size
            cd_offset = z64[2] if cd_offset == U32_MAX else cd_offset
        self._check_directory("end record", on_disk, total, cd_size, cd_offset)
        self._i += 22 + clen
        self._done = True
        self._state = self._trailing
        return True

    def _check_directory(
        self, what: str, on_disk: int, total: int, cd_size: int, cd_offset: int
    ) -> None:
        c = self._central
        assert c.start is not None and c.end is not None
        want = (len(self._entries), len(self._entries), c.end - c.start, c.start)
        got = (on_disk, total, cd_size, cd_offset)
        if got != want:
            self._error(f"{what}: (entries, total, cd size, cd offset)={got}, expected {want}")

    def _trailing(self) -> bool:
        if self._i < len(self._buf):
            return self._fatal(f"{len(self._buf) - self._i} bytes after the end record")
        return False


def _zip64_fields(extra: bytes) -> tuple[int, ...] | None:
    """The 8-byte values of a ZIP64 extra field, or None if there is none."""
    at = 0
    while at + 4 <= len(extra):
        hid, hlen = struct.unpack_from("<HH", extra, at)
        if hid == ZIP64_EXTRA:
            body = extra[at + 4 : at + 4 + hlen]
            return tuple(v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8]))
        at += 4 + hlen
    return None


Chunks = list[bytes]


# Held parts past this many bytes go to a temporary file instead of memory.
# A fan-out build sends its ranges' parts at once, so the parts ahead of the
# next expected one can be most of the archive (about 24 GiB of a 32 GiB
# archive with 4 workers, which got the endpoint OOM-killed when they were
# all held in memory).
REORDER_MEMORY_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class Reorder:
    """Parts arriving out of order are held until the ones before them are in.

    Only the parts ahead of the next expected one are held: for one uploader
    with N parts in flight about N parts, kept in memory as the list of
    chunks they arrived in (no joining copy). Past ``memory_bytes`` (a
    fan-out build, whose later ranges run ahead) further parts are written
    to a temporary file and read back when their turn comes.
    """

    next_part: int = 1
    held: dict[int, tuple[Chunks | Path, int]] = field(default_factory=dict)
    held_bytes: int = 0
    peak_bytes: int = 0
    memory_bytes: int = REORDER_MEMORY_BYTES
    in_memory: int = 0
    spilled_bytes: int = 0  # in all, for the report
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def add(self, number: int, chunks: Chunks, length: int) -> list[Chunks]:
        """Accept part ``number``; return the parts that are now next, in order."""
        if number != self.next_part and self.in_memory + length > self.memory_bytes:
            self.held[number] = (self._spill(number, chunks), length)
        else:
            self.held[number] = (chunks, length)
            self.in_memory += length
        self.held_bytes += length
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        out: list[Chunks] = []
        while self.next_part in self.held:
            out.append(self._take(self.next_part))
            self.next_part += 1
        return out

    def flush(self, order: list[int]) -> list[Chunks]:
        """At Complete: the held parts that the final part list includes, in its order."""
        out = [self._take(n) for n in order if n >= self.next_part and n in self.held]
        for n in list(self.held):
            self._take(n)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        return out

    def _spill(self, number: int, chunks: Chunks) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="bench-endpoint-reorder-")
        path = Path(self._dir.name) / f"{number}.part"
        with path.open("wb") as f:
            f.writelines(chunks)
        return path

    def _take(self, number: int) -> Chunks:
        part, length = self.held.pop(number)
        self.held_bytes -= length
        if isinstance(part, Path):
            data = part.read_bytes()
            part.unlink()
            self.spilled_bytes += length
            return [data]
        self.in_memory -= length
        return part

"""CRC-32 of a concatenation from the CRCs of its pieces (zlib's crc32_combine).

Used wherever a CRC-32 is known only piecewise: a multipart object's
full-object checksum from its parts' CRCs, an entry resumed or split across
workers from the CRCs of its pieces, and the benchmark endpoint's own check.
Python's zlib does not expose crc32_combine. The C library behind it does:
where it can be loaded (``libz.so.1`` is already mapped into the process by
the ``zlib`` module on Linux), combining costs about a microsecond, cheap
enough to take a part's CRC-32 from the CRCs its entry data already has
instead of reading every byte a second time (``uploader.PartWriter``;
docs/performance.md). Elsewhere the same function runs as the GF(2) matrix
form below (our own code because the standard library has no binding),
which is fast only for lengths it has seen (``fast_combine()`` is False there,
and callers that would combine per piece compute CRCs directly instead).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache


def _load_isal_crc32() -> Callable[[bytes | bytearray | memoryview, int], int] | None:
    """ISA-L's CRC-32 (carry-less multiply), about 5x zlib's on the same core."""
    try:
        from isal.isal_zlib import crc32 as isal_crc32
    except ImportError:  # pragma: no cover - isal is a dependency; kept working without it
        return None
    return isal_crc32


_isal_crc32 = _load_isal_crc32()

_POLY = 0xEDB88320


def _times(mat: Sequence[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _square(mat: list[int]) -> list[int]:
    return [_times(mat, mat[n]) for n in range(32)]


@lru_cache(maxsize=256)
def _operator(len2: int) -> tuple[int, ...]:
    """The shift by len2 bytes as a 32x32 GF(2) matrix.

    zlib's squaring ladder (crc1 advanced over len2 zero bytes), applied to
    all 32 basis vectors at once: about 3 ms (32 separate ladders took about
    50 ms, a visible 2% of a small archive's CPU). Parts of one upload share
    one length (all but the last), so caching the matrix per length makes
    each combine a 32-step product (~5 us).
    """
    cols = [1 << n for n in range(32)]  # identity: column n is the image of bit n
    odd = [_POLY] + [1 << n for n in range(31)]  # one zero bit
    even = _square(odd)  # two zero bits
    odd = _square(even)  # four zero bits
    while True:
        even = _square(odd)  # first pass: one zero byte
        if len2 & 1:
            cols = [_times(even, c) for c in cols]
        len2 >>= 1
        if not len2:
            break
        odd = _square(even)
        if len2 & 1:
            cols = [_times(odd, c) for c in cols]
        len2 >>= 1
        if not len2:
            break
    return tuple(cols)


def matrix_crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of A+B given crc(A), crc(B) and len(B), in pure Python."""
    if len2 <= 0:
        return crc1
    return (_times(_operator(len2), crc1) ^ crc2) & 0xFFFFFFFF


# Shared-library names of zlib, tried in order (no ``ctypes.util.find_library``:
# on Linux it runs ``ldconfig -p``, a process start-up would pay for it).
_LIBZ_NAMES = ("libz.so.1", "libz.1.dylib", "libz.so")


@lru_cache(maxsize=1)
def _libz_combine() -> Callable[[int, int, int], int] | None:
    """zlib's own ``crc32_combine64`` (zlib >= 1.2.3.3), or None where it cannot be loaded.

    Loaded on first use: ctypes is not imported by a process that never combines.
    """
    import ctypes

    for name in _LIBZ_NAMES:
        try:
            lib = ctypes.CDLL(name)
            func = lib.crc32_combine64
        except (OSError, AttributeError):
            continue
        func.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_int64)
        func.restype = ctypes.c_ulong
        return func
    return None


def fast_combine() -> bool:
    """Is combining a C call (about 1 us) rather than Python matrix work?"""
    return _libz_combine() is not None


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """``zlib.crc32`` (same results, same running-value argument), computed by ISA-L
    where it is installed.

    Why: every archive byte goes through one CRC-32 (the entry's, for its data
    descriptor; parts and the archive combine it), and zlib's ran at about
    0.8-2.4 GB/s here against ISA-L's 4.4-10 (docs/performance.md).
    """
    if _isal_crc32 is not None:
        return int(_isal_crc32(data, value))
    return zlib.crc32(data, value)


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of A+B given crc(A), crc(B) and len(B)."""
    if len2 <= 0:
        return crc1
    libz = _libz_combine()
    if libz is not None:
        return int(libz(crc1, crc2, len2)) & 0xFFFFFFFF
    return matrix_crc32_combine(crc1, crc2, len2)

"""CRC-32 of a concatenation from the CRCs of its pieces (zlib's crc32_combine).

Used wherever a CRC-32 is known only piecewise: a multipart object's
full-object checksum from its parts' CRCs, an entry resumed or split across
workers from the CRCs of its pieces, and the benchmark endpoint's own check.
Python's zlib does not expose crc32_combine; this is its GF(2) matrix form
(our own code because the standard library has no binding).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

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


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of A+B given crc(A), crc(B) and len(B)."""
    if len2 <= 0:
        return crc1
    return (_times(_operator(len2), crc1) ^ crc2) & 0xFFFFFFFF

"""crc32_combine against zlib itself, on fixed edge cases and random splits."""

from __future__ import annotations

import itertools
import random
import zlib

from hypothesis import given
from hypothesis import strategies as st

from service.engine.crc import crc32_combine


def test_crc32_combine_matches_zlib_on_edges() -> None:
    rnd = random.Random(7)
    for n1, n2 in [(0, 0), (1, 0), (0, 1), (10, 3), (1000, 65_537), (5, 1 << 20)]:
        a, b = rnd.randbytes(n1), rnd.randbytes(n2)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), n2) == zlib.crc32(a + b)


@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=6))
def test_crc32_combine_of_any_split_equals_crc_of_whole(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    crc = 0
    for lo, hi in itertools.pairwise(bounds):
        crc = crc32_combine(crc, zlib.crc32(data[lo:hi]), hi - lo)
    assert crc == zlib.crc32(data)

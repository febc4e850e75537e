"""crc32_combine against zlib itself, on fixed edge cases and random splits."""

from __future__ import annotations

import itertools
import random
import zlib

from hypothesis import given
from hypothesis import strategies as st

from service.engine.crc import crc32, crc32_combine, fast_combine, matrix_crc32_combine


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


def test_zlib_combine_is_loaded_here_and_both_forms_agree() -> None:
    """The C combine (what makes taking part CRCs from entry CRCs cheap) loads on
    this platform, and the pure-Python form gives the same answers."""
    assert fast_combine()
    rnd = random.Random(11)
    for _ in range(200):
        a, b = rnd.randbytes(rnd.randrange(0, 3000)), rnd.randbytes(rnd.randrange(0, 3000))
        whole = zlib.crc32(a + b)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == whole
        assert matrix_crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == whole
    big = 5 * 2**32 + 3  # lengths past 32 bits (64-bit z_off_t)
    assert crc32_combine(0x12345678, 0x9ABCDEF0, big) == matrix_crc32_combine(
        0x12345678, 0x9ABCDEF0, big
    )


@given(
    data=st.binary(min_size=1, max_size=2048),
    cut=st.integers(0, 2048),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_piece_crc_follows_from_the_running_crcs(data: bytes, cut: int, seed: int) -> None:
    """crc(B) = crc32_combine(crc(A), crc(A+B), len(B)) for a non-empty piece B: how
    the zip stream hands the part writer each piece's own CRC-32 from the entry's
    running CRC."""
    cut %= len(data)
    before = zlib.crc32(data[:cut], seed)
    after = zlib.crc32(data[cut:], before)
    assert crc32_combine(before, after, len(data) - cut) == zlib.crc32(data[cut:])


def test_crc32_is_zlibs_crc32_computed_faster() -> None:
    """The engine's CRC-32 (ISA-L here) gives zlib's answers, running value included,
    over every buffer type the engine hands it."""
    from service.engine import crc as crc_module

    assert crc_module._isal_crc32 is not None  # the dependency is installed and used
    rnd = random.Random(5)
    for size in (0, 1, 15, 16, 17, 255, 4096, 65_537, 1 << 20):
        data = rnd.randbytes(size)
        seed = rnd.randrange(2**32)
        assert crc32(data) == zlib.crc32(data)
        assert crc32(data, seed) == zlib.crc32(data, seed)
        assert crc32(memoryview(bytearray(data))[1:], seed) == zlib.crc32(data[1:], seed)

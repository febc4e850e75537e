"""The link proxy's shared cap (``--total-mbps``): one worker's network, all connections together.

Pure arithmetic of the pacing clock; the proxy's byte forwarding is tested in
test_bench_endpoint.py.
"""

from __future__ import annotations

import pytest

from loadtest.s3_link_proxy import BURST_S, SharedCap


def test_connections_share_one_clock() -> None:
    cap = SharedCap(rate_bps=1e6)
    # Two connections each ready to send 1 MB at t=0: the second waits for the first.
    assert cap.reserve(0.0, 1_000_000, now=0.0) == 0.0
    assert cap.reserve(0.0, 1_000_000, now=0.0) == pytest.approx(1.0)
    # A chunk that may not leave before t=5 (its delay) leaves then, not earlier.
    assert cap.reserve(5.0, 500_000, now=0.0) == 5.0
    assert cap.clock == pytest.approx(5.5)


def test_an_idle_link_saves_no_more_than_a_burst() -> None:
    cap = SharedCap(rate_bps=1e6)
    cap.reserve(0.0, 1000, now=0.0)
    # After 10 s idle, sending starts now, not back at the old clock.
    assert cap.reserve(0.0, 1000, now=10.0) == pytest.approx(10.0 - BURST_S)

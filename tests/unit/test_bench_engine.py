"""The benchmark's bookkeeping: interleaved rounds, per-round ratios, targets.

No run happens here; these are the pure parts of loadtest/bench_engine.py
that decide what is compared with what.
"""

from __future__ import annotations

import random

from loadtest.bench_engine import FULL, RunRecord, plan_round, summarize


def test_each_round_runs_every_group_once_with_a_fresh_contender_order() -> None:
    workloads = [FULL["small"], FULL["large"]]
    wanted = {"ours", "seed", "streamzip", "copy"}
    rng = random.Random(12)
    orders = []
    for _ in range(4):
        plan = plan_round(workloads, ["on"], ["https", "http"], wanted, {"https"}, rng)
        groups = [(wl.name, link, scheme) for wl, link, scheme, _ in plan]
        assert sorted(groups) == sorted(
            (w, "on", s) for w in ("small", "large") for s in ("https", "http")
        )
        for _, _, scheme, order in plan:
            expected = wanted if scheme == "https" else {"ours", "copy"}  # slow ones: https only
            assert sorted(order) == sorted(expected)
        orders.append(tuple(tuple(order) for *_, order in plan))
    assert len(set(orders)) > 1, "the order must change between rounds"


def record(contender: str, run: int, seconds: float, cpu: float) -> RunRecord:
    rec = RunRecord("large", "on", contender, run, "https", seconds=seconds, cpu_seconds=cpu)
    rec.verified = True
    rec.source_mb_s = 2147.0 / seconds
    rec.extra = {"source_gb": 2.147}
    return rec


def test_ratios_are_taken_within_a_round_then_the_median() -> None:
    # Round 2 is slow for everyone (a busy machine): per-round ratios cancel that.
    records = [
        record("ours", 1, 10.0, 8.0),
        record("copy", 1, 9.6, 8.0),
        record("ours", 2, 30.0, 9.0),
        record("copy", 2, 29.4, 7.5),
        record("ours", 3, 11.0, 8.0),
        record("copy", 3, 10.0, 8.0),
    ]
    out = summarize(records, 64)
    ratios = out["ratios"]["large/on/https"]
    assert ratios["vs_copy_runs"] == [0.96, 0.98, 0.909]
    assert ratios["vs_copy"] == 0.96
    assert ratios["cpu_vs_copy"] == 1.0
    target = next(t for t in out["targets"] if "plain copy" in t["target"])
    assert target["met"] is True and target["per_round"] == [0.96, 0.98, 0.909]
    cpu = next(t for t in out["targets"] if "CPU" in t["target"])
    assert cpu["met"] is True and cpu["measured"] == 1.0


def test_a_failed_run_contributes_no_number() -> None:
    bad = record("copy", 1, 1.0, 1.0)
    bad.verified = False
    out = summarize([record("ours", 1, 10.0, 8.0), bad], 64)
    assert "vs_copy" not in out["ratios"].get("large/on/https", {})
    assert [r["contender"] for r in out["rows"]] == ["ours"]

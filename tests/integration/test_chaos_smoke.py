"""The short chaos run of ``make test`` (the long one is ``tox -e chaos``).

zipjobs serve + two zipjobs workers, each behind its own fault layer
(tests/chaos/), against moto: 5xx, throttling, cut answers and hangs on 4%
of all AWS calls, DynamoDB's atomic 400 KB item limit, the API killed
between writing a job and sending its message, a worker killed mid-part and
a job that kills its worker in every attempt, and some jobs cancelled. Then
every invariant of tests/chaos/invariants.py must hold. A failure prints the
report and the seed to replay it with: ``tox -e chaos -- --seed N``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.faults import ChaosConfig
from tests.chaos.harness import run_chaos
from tests.chaos.invariants import markdown

pytestmark = pytest.mark.integration

SMOKE = ChaosConfig(
    seed=8,
    jobs=8,
    fault_rate=0.04,
    hang_s=6.0,
    workers=2,
    api_kills=1,
    part_kills=1,
    poison_jobs=1,
    oversized_jobs=1,
    bound_s=90.0,
    submit_over_s=6.0,
    cancel_share=0.3,
)


async def test_every_job_ends_and_leaves_nothing_behind_under_chaos(tmp_path: Path) -> None:
    report = await run_chaos(SMOKE, tmp_path)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=2))
    kinds = report["faults_injected"]
    # The run must have been a chaotic one, or passing proves nothing.
    for kind in ("kill-api-between-write-and-send", "kill-worker-every-attempt"):
        assert kinds.get(kind, 0) >= 1, (kind, markdown(report))
    # DynamoDB's 400 KB rule is always on; the oversized job's FAILED record
    # must fit (the invariants check it ended FAILED, MissingSources).
    assert any(j["kind"] == "oversized" for j in report["jobs"]), markdown(report)
    assert sum(kinds.get(k, 0) for k in ("5xx", "throttle", "reset", "hang")) >= 10, kinds
    assert not report["violations"], markdown(report)
    assert report["orphans"] == 0

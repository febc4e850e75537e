"""Pure pieces of job-level fan-out: range messages, the record's fan-out attributes,
how many ranges a job gets, range progress, the saved plan (docs/resume.md,
"Job-level fan-out")."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import random

import pytest

from service.engine import Compression, MiB, MissingPolicy, Progress, SourceObject
from service.engine.fanout import range_span, split_parts
from service.engine.layout import part_size_for
from service.engine.models import Plan, PlannedEntry, SourceProblem
from service.jobs.codec import decode, encode, fanout_item, to_attr
from service.jobs.fanout import RangeProgress, workers_wanted
from service.jobs.fanout_store import decode_plan, encode_plan, plan_key, range_key
from service.jobs.messages import job_message, parse_message
from service.jobs.models import FanOut, JobRecord, JobRequest, JobStatus
from service.settings import MAX_FANOUT_WORKERS, Settings

T0 = dt.datetime(2026, 12, 1, 3, 0, 0, tzinfo=dt.UTC)


def record() -> JobRecord:
    return JobRecord(
        job_id="cd" * 16,
        status=JobStatus.RUNNING,
        request=JobRequest(
            "src", ("a.pdf",), None, "x.zip", MissingPolicy.FAIL, Compression.STORED
        ),
        dst_bucket="dst",
        dst_key="archives/x.zip",
        created_at=T0,
        updated_at=T0,
        expires_at=1_900_000_000,
    )


def test_a_range_message_round_trips_and_a_job_message_has_no_range() -> None:
    msg = parse_message(job_message("j1", 3), "m", 2)
    assert msg is not None and (msg.job_id, msg.range, msg.receive_count) == ("j1", 3, 2)
    plain = parse_message(job_message("j1"), "m", 1)
    assert plain is not None and plain.range is None
    assert json.loads(job_message("j1")) == {"jobId": "j1"}  # unchanged for older workers


@pytest.mark.parametrize("bad", ['"1"', "-1", "true", "1.5", "[0]"])
def test_a_range_that_is_not_a_non_negative_integer_is_poison(bad: str) -> None:
    assert parse_message(f'{{"jobId": "j", "range": {bad}}}', "m", 1) is None


def test_the_record_carries_the_split_and_sums_the_ranges_progress() -> None:
    fan = FanOut("up-1", 3, 8 * MiB, 30 * MiB, "f" * 64)
    item = encode(dataclasses.replace(record(), progress=Progress(5, 100, 1, 9)))
    item.update({name: to_attr(value) for name, value in fanout_item(fan).items()})
    assert decode(item).fanout == FanOut(
        "up-1", 3, 8 * MiB, 30 * MiB, "f" * 64, frozenset(), (0, 0, 0), (0, 0, 0)
    )
    assert decode(item).progress == Progress(5, 100, 1, 9)  # nothing reported by a range yet
    item["rangesDone"] = {"NS": ["2", "0"]}
    item["fanBytes"] = to_attr({"r0": 40, "r1": 7, "r2": 30})
    item["fanFiles"] = to_attr({"r0": 3, "r2": 4})
    got = decode(item)
    assert got.fanout is not None and got.fanout.done == {0, 2} and not got.fanout.finished
    assert got.fanout.bytes_done == (40, 7, 30) and got.fanout.files_done == (3, 0, 4)
    assert got.progress == Progress(77, 100, 7, 9)
    item["rangesDone"] = {"NS": ["2", "0", "1"]}
    finished = decode(item).fanout
    assert finished is not None and finished.finished


def test_a_record_without_a_split_has_no_fanout() -> None:
    assert decode(encode(record())).fanout is None


def _settings(**kw: int) -> Settings:
    base = Settings(table="t", queue_url="q", src_buckets=("src",), dst_bucket="dst")
    return dataclasses.replace(base, **kw)


def test_how_many_ranges_a_job_gets() -> None:
    part = 8 * MiB
    on = _settings(fanout_min_mb=8, fanout_max_workers=8)
    assert workers_wanted(on, 30 * MiB, part) == 4  # one per 8 MiB, one per part
    assert workers_wanted(on, part, part) == 1  # one part: a single PutObject
    assert workers_wanted(on, 200 * MiB, part) == 8  # the per-job cap
    assert workers_wanted(_settings(fanout_min_mb=8, fanout_max_workers=1), 200 * MiB, part) == 1
    default = _settings()
    assert (default.fanout_min_mb, default.fanout_max_workers) == (8192, 8)
    assert workers_wanted(default, 8 * 1024 * MiB, 8 * MiB) == 1  # up to 8 GiB: single
    assert workers_wanted(default, 8 * 1024 * MiB + 1, 8 * MiB) == 2


def _largest_range(length: int, part: int, workers: int) -> int:
    """Bytes in the largest of ``workers`` ranges, as the split gives them out."""
    ranges = split_parts(math.ceil(length / part), workers)
    return max(end - start for start, end in (range_span(f, la, part, length) for f, la in ranges))


GB = 10**9


def test_a_split_job_gets_enough_ranges_that_none_is_over_the_ceiling() -> None:
    """500 GB at the defaults: more than the 8 the cap gives (62.5 GB each, 625-1,250 s
    at 50-100 MB/s: past one ~880 s attempt at the low end), so that no range passes
    32 GiB (about 690 s at 50 MB/s)."""
    default = _settings()
    assert default.fanout_range_max_mb == 32 * 1024
    ceiling = default.fanout_range_max_mb * MiB
    for length in (500 * GB, 300 * GB, 5 * 1024**4 // 8):
        part = part_size_for(length)
        n = workers_wanted(default, length, part)
        assert n > default.fanout_max_workers, (length, n)
        assert _largest_range(length, part, n) <= ceiling, (length, n)
        assert _largest_range(length, part, n - 1) > ceiling, (length, n)  # and no more ranges
    part = part_size_for(500 * GB)
    assert workers_wanted(default, 500 * GB, part) == 15


def test_below_the_ceiling_the_configured_cap_and_threshold_decide() -> None:
    default = _settings()
    assert workers_wanted(default, 64 * 1024 * MiB, 8 * MiB) == 8  # 8 ranges of 8 GiB
    assert workers_wanted(default, 200 * GB, part_size_for(200 * GB)) == 8  # 25 GB each
    assert workers_wanted(default, 8 * 1024 * MiB, 8 * MiB) == 1  # not split at all
    off = _settings(fanout_max_workers=1)
    assert workers_wanted(off, 500 * GB, part_size_for(500 * GB)) == 1  # off stays off


def test_the_ceiling_never_gives_more_than_the_hard_cap_or_one_range_per_part() -> None:
    tight = _settings(fanout_min_mb=8, fanout_max_workers=2, fanout_range_max_mb=8)
    assert workers_wanted(tight, 200 * MiB, 8 * MiB) == 25  # 25 parts of 8 MiB
    assert workers_wanted(tight, 400 * MiB, 8 * MiB) == MAX_FANOUT_WORKERS
    below_a_part = _settings(fanout_min_mb=8, fanout_range_max_mb=1)
    assert workers_wanted(below_a_part, 24 * MiB, 8 * MiB) == 3  # a part per range at most


@pytest.mark.parametrize("seed", range(5))
def test_no_range_passes_the_ceiling_while_under_the_hard_cap(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        settings = _settings(
            fanout_min_mb=rng.choice([8, 64, 8192]),
            fanout_max_workers=rng.randint(2, 32),
            fanout_range_max_mb=rng.choice([16, 100, 4096, 32768]),
        )
        length = rng.randint(1, 5 * 1024**4)
        part = part_size_for(length)
        n = workers_wanted(settings, length, part)
        if 1 < n < MAX_FANOUT_WORKERS and settings.fanout_range_max_mb * MiB >= part:
            assert _largest_range(length, part, n) <= settings.fanout_range_max_mb * MiB


def test_range_progress_never_goes_below_what_the_record_holds() -> None:
    progress = RangeProgress(owned=(2, 5), floor=(1000, 2))
    assert progress.value == (1000, 2)  # a rebuilt range starts from zero: not shown
    progress.step(10, 2)
    assert progress.value == (1000, 2)
    progress.step(5000, 4)
    assert progress.value == (5000, 2)
    progress.step(9000, 99)
    assert progress.value == (9000, 3)  # never more than the files it owns


def test_the_saved_plan_round_trips() -> None:
    entries = (
        PlannedEntry(SourceObject("b", "k/1.pdf"), "1.pdf", 10, '"e1"', T0),
        PlannedEntry(SourceObject("b", "k/2.pdf", "two.pdf"), "two.pdf", 0, '"e2"', T0),
    )
    plan = Plan(entries, (SourceProblem("b", "k/3.pdf", "NoSuchKey"),))
    assert decode_plan(encode_plan(plan, "fp")) == (plan, "fp")
    with pytest.raises(ValueError):
        decode_plan(b'{"format": 99}')
    assert plan_key("a/x.zip") == "a/x.zip.zipjobs-plan"
    assert range_key("a/x.zip", 3) == "a/x.zip.zipjobs-range-3"

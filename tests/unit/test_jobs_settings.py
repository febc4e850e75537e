"""Settings from the environment: defaults, parsing, and all problems at once."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError
from service.units import MiB

BASE = {
    "ZIPJOBS_TABLE": "jobs",
    "ZIPJOBS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/jobs",
    "ZIPJOBS_SRC_BUCKETS": "docs-a, docs-b",
    "ZIPJOBS_DST_BUCKET": "archives",
}


def test_defaults() -> None:
    s = Settings.from_env(BASE)
    assert s.src_buckets == ("docs-a", "docs-b") and s.default_bucket == "docs-a"
    assert s.src_prefixes == ()
    assert s.dst_prefix == "archives/" and s.manifest_bucket_or_dst == "archives"
    assert s.api_token is None and s.endpoint_url is None
    assert s.job_budget_bytes == 64 * MiB  # 128 MiB shared by 2 jobs


def test_everything_set() -> None:
    env = {
        **BASE,
        "ZIPJOBS_SRC_PREFIXES": "in/,scans/",
        "ZIPJOBS_DST_PREFIX": "out/",
        "ZIPJOBS_PRESIGN_TTL_SECONDS": "600",
        "ZIPJOBS_JOB_TTL_DAYS": "3",
        "ZIPJOBS_MAX_KEYS": "10",
        "ZIPJOBS_MAX_BODY_BYTES": "2048",
        "ZIPJOBS_BUDGET_MB": "96",
        "ZIPJOBS_WORKER_CONCURRENCY": "3",
        "ZIPJOBS_LEASE_SECONDS": "5",
        "ZIPJOBS_MANIFEST_BUCKET": "manifests",
        "ZIPJOBS_MANIFEST_PREFIX": "m/",
        "ZIPJOBS_API_TOKEN": "s3cret",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "AWS_REGION": "eu-west-1",
    }
    s = Settings.from_env(env)
    assert s.src_prefixes == ("in/", "scans/") and s.presign_ttl_seconds == 600
    assert (s.max_keys, s.max_body_bytes, s.lease_seconds, s.job_ttl_days) == (10, 2048, 5, 3)
    assert s.job_budget_bytes == 32 * MiB
    assert s.manifest_bucket_or_dst == "manifests" and s.api_token == "s3cret"
    assert s.aws.endpoint_url == "http://127.0.0.1:5000" and s.aws.region == "eu-west-1"
    assert "s3cret" not in repr(s)


def test_all_problems_reported_together() -> None:
    env = {
        "ZIPJOBS_SRC_BUCKETS": "Bad_Bucket",
        "ZIPJOBS_QUEUE_URL": "jobs",
        "ZIPJOBS_LEASE_SECONDS": "soon",
        "ZIPJOBS_PRESIGN_TTL_SECONDS": "9999999",
        "ZIPJOBS_DST_PREFIX": "no-slash",
        "ZIPJOBS_BUDGET_MB": "32",
        "ZIPJOBS_WORKER_CONCURRENCY": "4",
    }
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    text = str(info.value)
    for words in (
        "ZIPJOBS_TABLE is required",
        "ZIPJOBS_DST_BUCKET is required",
        "bad bucket name 'Bad_Bucket'",
        "ZIPJOBS_QUEUE_URL must be a URL",
        "ZIPJOBS_LEASE_SECONDS must be an integer",
        "ZIPJOBS_PRESIGN_TTL_SECONDS must be",
        "ZIPJOBS_DST_PREFIX must end with '/'",
        "at least 16 MiB",
    ):
        assert words in text, words
    assert len(info.value.problems) == 8


@pytest.mark.parametrize("prefixes", ["docs", "docs/,scans", "/docs/"])
def test_source_prefixes_must_be_folders(prefixes: str) -> None:
    """``docs`` would admit ``docs-private/...``: refused like a destination prefix."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**BASE, "ZIPJOBS_SRC_PREFIXES": prefixes})
    assert "ZIPJOBS_SRC_PREFIXES must end with '/'" in str(info.value)


@pytest.mark.parametrize("token", [" ", "\t", "  \n "])
def test_blank_api_token_is_refused(token: str) -> None:
    """A whitespace token used to mean "no authentication" without a word."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**BASE, "ZIPJOBS_API_TOKEN": token})
    assert "ZIPJOBS_API_TOKEN is set but blank" in str(info.value)


def test_unset_or_empty_token_means_open_and_a_real_one_is_kept() -> None:
    assert Settings.from_env({**BASE, "ZIPJOBS_API_TOKEN": ""}).api_token is None
    assert Settings.from_env({**BASE, "ZIPJOBS_API_TOKEN": " t0k "}).api_token == "t0k"


def test_sweeper_settings_default_to_a_two_minute_resend_and_are_validated() -> None:
    s = Settings.from_env(BASE)
    assert s.resend_after_seconds + s.sweep_interval_seconds == 120
    assert s.max_resends == 5 and s.dlq_url is None
    s = Settings.from_env(
        {
            **BASE,
            "ZIPJOBS_SWEEP_INTERVAL_SECONDS": "0",
            "ZIPJOBS_RESEND_AFTER_SECONDS": "5",
            "ZIPJOBS_MAX_RESENDS": "2",
            "ZIPJOBS_DLQ_URL": "https://sqs.example/1/dlq",
        }
    )
    assert (s.sweep_interval_seconds, s.resend_after_seconds, s.max_resends) == (0, 5, 2)
    assert s.dlq_url == "https://sqs.example/1/dlq"
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "ZIPJOBS_RESEND_AFTER_SECONDS": "0", "ZIPJOBS_MAX_RESENDS": "x"})
    assert len(err.value.problems) == 2


def test_job_resume_is_on_by_default_and_can_be_switched_off() -> None:
    assert Settings.from_env(BASE).resume_jobs is True
    assert Settings.from_env({**BASE, "ZIPJOBS_RESUME_JOBS": "0"}).resume_jobs is False
    assert Settings.from_env({**BASE, "ZIPJOBS_RESUME_JOBS": "1"}).resume_jobs is True
    with pytest.raises(SettingsError, match="ZIPJOBS_RESUME_JOBS"):
        Settings.from_env({**BASE, "ZIPJOBS_RESUME_JOBS": "2"})


def test_checkpoint_seconds_default_to_five_and_are_validated() -> None:
    assert Settings.from_env(BASE).checkpoint_seconds == 5
    assert Settings.from_env({**BASE, "ZIPJOBS_CHECKPOINT_SECONDS": "0"}).checkpoint_seconds == 0
    with pytest.raises(SettingsError, match="ZIPJOBS_CHECKPOINT_SECONDS"):
        Settings.from_env({**BASE, "ZIPJOBS_CHECKPOINT_SECONDS": "-1"})


def test_fanout_settings() -> None:
    """Job-level fan-out (docs/resume.md): 8 GiB per range, at most 8; at most 32 allowed."""
    default = Settings.from_env(BASE)
    assert (default.fanout_min_mb, default.fanout_max_workers) == (8192, 8)
    env = {**BASE, "ZIPJOBS_FANOUT_MIN_MB": "64", "ZIPJOBS_FANOUT_MAX_WORKERS": "3"}
    got = Settings.from_env(env)
    assert (got.fanout_min_mb, got.fanout_max_workers) == (64, 3)
    with pytest.raises(ValueError, match="ZIPJOBS_FANOUT_MAX_WORKERS"):
        Settings.from_env({**env, "ZIPJOBS_FANOUT_MAX_WORKERS": "33"})

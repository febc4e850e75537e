"""Pure pieces of the job layer: item codec, views, problems, error classes, messages."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from service.engine import (
    ArchiveTooLargeError,
    BudgetTooSmallError,
    Compression,
    EmptyArchiveError,
    LengthMismatchError,
    MissingPolicy,
    MissingSourcesError,
    Progress,
    ReadFailedError,
    SourceChangedError,
    ZipJobError,
)
from service.engine.models import SourceProblem
from service.jobs.bounds import REPORTED_KEYS_BYTES, cap_keys, cap_message
from service.jobs.codec import decode, encode, error_item, iso, parse_iso
from service.jobs.messages import parse_message
from service.jobs.models import (
    FailureReason,
    JobRecord,
    JobRequest,
    JobStatus,
    Manifest,
)
from service.jobs.problems import ApiError, Problem
from service.jobs.runner import arcname_under, classify, retry_delay
from service.jobs.views import accepted_view, job_view

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)


def record(**kw: object) -> JobRecord:
    base: dict[str, object] = dict(
        job_id="ab" * 16,
        status=JobStatus.PENDING,
        request=JobRequest(
            "src", ("a/1.pdf", "a/2.pdf"), None, "x.zip", MissingPolicy.SKIP, Compression.DEFLATE
        ),
        dst_bucket="dst",
        dst_key="archives/" + "ab" * 16 + "/x.zip",
        created_at=T0,
        updated_at=T0,
        expires_at=1_800_000_000,
        keys_count=2,
    )
    base.update(kw)
    return JobRecord(**base)  # type: ignore[arg-type]


def test_codec_round_trip_of_a_new_job() -> None:
    rec = record()
    item = encode(rec)
    assert item["jobId"] == {"S": rec.job_id}
    assert item["ttl"] == {"N": "1800000000"}
    assert decode(item) == rec


def test_codec_round_trip_with_manifest_prefix_and_error() -> None:
    rec = record(
        request=JobRequest("src", None, "docs/", "y.zip"),
        manifest=None,
        status=JobStatus.FAILED,
        error=FailureReason("MissingSources", "2 missing", ("a", "b")),
    )
    assert decode(encode(rec)) == rec
    with_manifest = record(manifest=Manifest("m", "manifests/x.json", 2))
    item = encode(with_manifest)
    assert "keys" not in item  # the keys live in S3, only the reference in the item
    back = decode(item)
    assert back.manifest == Manifest("m", "manifests/x.json", 2)
    assert back.request.keys is None


def test_iso_timestamps_are_utc_z_and_round_trip() -> None:
    assert iso(T0) == "2026-01-02T03:04:05.678Z"
    assert parse_iso(iso(T0)) == T0


def test_view_of_a_pending_job_has_no_url_or_error() -> None:
    view = job_view(record(), base_path="/prod")
    assert view["statusUrl"] == "/prod/zip-jobs/" + "ab" * 16
    assert view["progress"] == {"bytesDone": 0, "bytesTotal": 0, "filesDone": 0, "filesTotal": 0}
    assert not {"downloadUrl", "expiresAt", "error", "startedAt", "finishedAt"} & set(view)


def test_view_of_a_ready_job_carries_the_url_it_is_given() -> None:
    rec = record(
        status=JobStatus.READY,
        archive_bytes=10,
        finished_at=T0,
        progress=Progress(5, 5, 2, 2),
        skipped_keys=("a/3.pdf",),
    )
    exp = T0 + dt.timedelta(hours=1)
    view = job_view(rec, download_url="https://signed", url_expires_at=exp)
    assert view["downloadUrl"] == "https://signed"
    assert view["expiresAt"] == "2026-01-02T04:04:05.678Z"
    assert view["skippedKeys"] == ["a/3.pdf"]
    assert view["archiveBytes"] == 10


def test_view_of_a_failed_job_names_missing_keys() -> None:
    rec = record(status=JobStatus.FAILED, error=FailureReason("MissingSources", "m", ("k1", "k2")))
    assert job_view(rec)["error"] == {
        "code": "MissingSources",
        "message": "m",
        "missingKeys": ["k1", "k2"],
    }


def test_accepted_view() -> None:
    assert accepted_view("id1", JobStatus.PENDING) == {
        "jobId": "id1",
        "status": "PENDING",
        "statusUrl": "/zip-jobs/id1",
    }


def test_problem_document_shape() -> None:
    doc = json.loads(ApiError(422, "invalid-request", "bad", errors=[]).problem.body())
    assert doc == {
        "type": "https://zipjobs.dev/problems/invalid-request",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "bad",
        "errors": [],
    }
    assert Problem(418, "teapot", "x").title == "Error"


def test_classify_permanent_and_transient() -> None:
    permanent, err = classify(
        MissingSourcesError(
            [SourceProblem("b", "k1", "NoSuchKey"), SourceProblem("b", "k2", "AccessDenied")]
        )
    )
    assert permanent and err.code == "MissingSources" and err.missing_keys == ("k1", "k2")
    for exc in (
        SourceChangedError("b", "k"),
        BudgetTooSmallError("x"),
        EmptyArchiveError("x"),
        ArchiveTooLargeError("x"),
        LengthMismatchError("x"),
    ):
        assert classify(exc) == (True, FailureReason(exc.code, str(exc)))
    for exc2 in (ReadFailedError("x"), ConnectionError("reset"), RuntimeError("boom")):
        permanent, err = classify(exc2)
        assert not permanent and err.code == "Transient" and type(exc2).__name__ in err.message


def test_missing_keys_are_capped_in_bytes_when_stored_and_the_rest_counted() -> None:
    problems = [SourceProblem("b", f"k{i:04d}".ljust(500, "x"), "NoSuchKey") for i in range(5000)]
    error = classify(MissingSourcesError(problems))[1]
    stored = error_item(error)
    assert 0 < len(stored["missingKeys"]) < 5000
    assert len(stored["missingKeys"]) + stored["missingKeysOmitted"] == 5000
    size = sum(len(k.encode()) + 3 for k in stored["missingKeys"])
    assert REPORTED_KEYS_BYTES - 503 < size <= REPORTED_KEYS_BYTES
    assert stored["missingKeys"] == [p.key for p in problems[: len(stored["missingKeys"])]]


def test_cap_keys_counts_multibyte_keys_in_bytes() -> None:
    kept, omitted = cap_keys(["é" * 10, "a", "b"], limit=2 * 10 + 3 + 4)
    assert kept == ("é" * 10, "a") and omitted == 1
    assert cap_keys([], limit=10) == ((), 0)


def test_cap_message_bounds_bytes_and_marks_the_cut() -> None:
    assert cap_message("short") == "short"
    cut = cap_message("ü" * 5000, limit=100)
    assert len(cut.encode()) <= 100 and cut.endswith("[...]")


def test_a_new_engine_error_is_permanent_unless_it_says_otherwise() -> None:
    """Other branches add ZipJobError subclasses; the runner must never retry them."""

    class SomethingNew(ZipJobError):
        code = "SomethingNew"

    assert classify(SomethingNew("no")) == (True, FailureReason("SomethingNew", "no"))


def test_read_failed_is_a_connection_error() -> None:
    """Like aiohttp's client errors (OSError), so generic network handling applies."""
    assert isinstance(ReadFailedError("x"), ConnectionError)
    assert isinstance(ReadFailedError("x"), ZipJobError)


def test_parse_message() -> None:
    assert parse_message('{"jobId": "x"}', "m1", 2).job_id == "x"  # type: ignore[union-attr]
    for body in ("", "nope", "[]", '{"job": 1}', '{"jobId": 5}'):
        assert parse_message(body, "m", 1) is None


def test_retry_delay_backs_off_and_caps() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 10)] == [2, 4, 8, 60]


@pytest.mark.parametrize(
    ("prefix", "key", "arcname"),
    [
        ("docs/2024/", "docs/2024/a.pdf", "a.pdf"),
        ("docs/2024/inv-", "docs/2024/inv-1.pdf", "inv-1.pdf"),
        ("", "a/b.pdf", "a/b.pdf"),
        ("docs/", "docs/x/y.pdf", "x/y.pdf"),
    ],
)
def test_arcname_under_prefix(prefix: str, key: str, arcname: str) -> None:
    assert arcname_under(prefix, key) == arcname


def test_lease_live() -> None:
    running = record(status=JobStatus.RUNNING, lease_expires_at=100.0)
    assert running.lease_live(99.0) and not running.lease_live(100.0)
    assert not record(lease_expires_at=200.0).lease_live(99.0)  # PENDING has no live lease

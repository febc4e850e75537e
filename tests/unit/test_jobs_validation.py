"""Request validation: every refusal names what is wrong, with the right status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.engine import Compression, MissingPolicy
from service.jobs.problems import ApiError
from service.jobs.validation import (
    check_content_type,
    check_idempotency_key,
    is_job_id,
    name_problem,
    parse_job_request,
)
from service.settings import Settings


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        table="t",
        queue_url="http://q",
        src_buckets=("src-a", "src-b"),
        dst_bucket="dst",
        src_prefixes=("docs/", "scans/"),
        max_keys=5,
        max_body_bytes=4096,
    )
    base.update(kw)
    return Settings(**base)


def refuse(doc: Any, s: Settings | None = None, raw: bytes | None = None) -> ApiError:
    body = raw if raw is not None else json.dumps(doc).encode()
    with pytest.raises(ApiError) as info:
        parse_job_request(body, s or settings())
    return info.value


def test_minimal_request_gets_defaults() -> None:
    req = parse_job_request(b'{"keys": ["docs/a.pdf"]}', settings())
    assert req.bucket == "src-a"
    assert req.keys == ("docs/a.pdf",)
    assert req.prefix is None
    assert req.name == "archive.zip"
    assert req.missing is MissingPolicy.FAIL
    assert req.compression is Compression.STORED


def test_full_request() -> None:
    doc = {
        "prefix": "scans/2024/",
        "bucket": "src-b",
        "name": "Scans.ZIP",
        "missing": "skip",
        "compression": "deflate",
    }
    req = parse_job_request(json.dumps(doc).encode(), settings())
    assert (req.bucket, req.prefix, req.keys) == ("src-b", "scans/2024/", None)
    assert req.name == "Scans.ZIP"
    assert req.missing is MissingPolicy.SKIP and req.compression is Compression.DEFLATE


@pytest.mark.parametrize("raw", [b"", b"{", b"{'keys': []}", b"[1,", b"\xff\xfe"])
def test_malformed_json_is_400(raw: bytes) -> None:
    err = refuse(None, raw=raw)
    assert err.problem.status == 400
    assert "not valid JSON" in err.problem.detail


@pytest.mark.parametrize(
    ("doc", "pointer", "words"),
    [
        ([], "", "JSON object"),
        ({"keys": "docs/a.pdf"}, "/keys", "array"),
        ({"keys": []}, "/keys", "must not be empty"),
        ({"keys": [1]}, "/keys/0", "must be a string"),
        ({"keys": [""]}, "/keys/0", "must not be empty"),
        ({"keys": ["docs/a\x00b"]}, "/keys/0", "NUL"),
        ({"keys": ["docs/" + "x" * 1020]}, "/keys/0", "1024"),
        ({"keys": ["docs/\ud800.pdf"]}, "/keys/0", "surrogate"),
        ({"keys": ["docs/a"] * 6}, "/keys", "the limit is 5"),
        ({}, "/keys", "required"),
        ({"keys": ["docs/a"], "prefix": "docs/"}, "", "not both"),
        ({"keys": ["docs/a"], "bucket": 7}, "/bucket", "string"),
        ({"keys": ["docs/a"], "name": "a.tar"}, "/name", ".zip"),
        ({"keys": ["docs/a"], "name": "dir/a.zip"}, "/name", "slashes"),
        ({"keys": ["docs/a"], "name": ".zip"}, "/name", ".zip"),
        ({"keys": ["docs/a"], "name": "a\nb.zip"}, "/name", "control"),
        ({"keys": ["docs/a"], "name": "x" * 300 + ".zip"}, "/name", "200"),
        ({"keys": ["docs/a"], "missing": "ignore"}, "/missing", "'fail' or 'skip'"),
        ({"keys": ["docs/a"], "compression": 9}, "/compression", "'stored' or 'deflate'"),
        ({"keys": ["docs/a"], "colour": "red"}, "/colour", "unknown field"),
        ({"prefix": 3}, "/prefix", "string"),
    ],
)
def test_invalid_requests_are_422_with_a_pointer(doc: Any, pointer: str, words: str) -> None:
    err = refuse(doc)
    assert err.problem.status == 422, err.problem
    errors = err.problem.extra.get("errors", [])
    assert any(e["pointer"] == pointer and words in e["detail"] for e in errors) or (
        not errors and words in err.problem.detail
    ), err.problem


@pytest.mark.parametrize(
    ("doc", "pointer"),
    [
        ({"keys": ["docs/a"], "bucket": "elsewhere"}, "/bucket"),
        ({"keys": ["docs/a", "private/b"]}, "/keys/1"),
        ({"prefix": "private/"}, "/prefix"),
        ({"prefix": ""}, "/prefix"),
        ({"prefix": "doc"}, "/prefix"),
    ],
)
def test_outside_the_allow_list_is_403(doc: Any, pointer: str) -> None:
    err = refuse(doc)
    assert err.problem.status == 403
    assert [e["pointer"] for e in err.problem.extra["errors"]] == [pointer]


def test_no_prefix_allow_list_means_any_key() -> None:
    req = parse_job_request(b'{"prefix": ""}', settings(src_prefixes=()))
    assert req.prefix == ""


def test_a_malformed_field_wins_over_a_permission_problem() -> None:
    err = refuse({"keys": ["private/a", 5]})
    assert err.problem.status == 422
    assert len(err.problem.extra["errors"]) == 2


def test_every_bad_key_is_reported() -> None:
    err = refuse({"keys": ["docs/ok", "", "x/y", "docs/\x00"]}, settings(max_keys=100))
    assert [e["pointer"] for e in err.problem.extra["errors"]] == ["/keys/1", "/keys/2", "/keys/3"]
    assert "and 2 more" in err.problem.detail


def test_body_over_the_limit_is_413() -> None:
    err = refuse(None, raw=b'{"keys": ["' + b"a" * 5000 + b'"]}')
    assert err.problem.status == 413
    assert err.problem.extra["limit"] == 4096


@pytest.mark.parametrize(
    "ct", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_non_json_content_type_is_415(ct: str) -> None:
    with pytest.raises(ApiError) as info:
        check_content_type(ct)
    assert info.value.problem.status == 415


@pytest.mark.parametrize(
    "ct",
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ],
)
def test_json_or_absent_content_type_passes(ct: str | None) -> None:
    check_content_type(ct)


@pytest.mark.parametrize("key", ["", " a", "x" * 256, "é", "a\tb"])
def test_bad_idempotency_keys(key: str) -> None:
    with pytest.raises(ApiError) as info:
        check_idempotency_key(key)
    assert info.value.problem.status == 400


def test_good_idempotency_key() -> None:
    assert check_idempotency_key("order-42:retry") == "order-42:retry"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.zip", True),
        ("Bericht März.zip", True),
        ("a.ZIP", True),
        ("a.zip.txt", False),
        ("..zip", False),
        ("a\\b.zip", False),
        ("a\u202eb.zip", False),
    ],
)
def test_names(name: str, ok: bool) -> None:
    assert (name_problem(name) is None) is ok


def test_job_ids() -> None:
    assert is_job_id("0123456789abcdef0123456789abcdef")
    assert not is_job_id("0123456789ABCDEF0123456789ABCDEF")
    assert not is_job_id("../etc/passwd")
    assert not is_job_id("")


def test_a_trailing_newline_is_not_a_job_id_or_key() -> None:
    assert not is_job_id("0123456789abcdef0123456789abcdef\n")
    with pytest.raises(ApiError):
        check_idempotency_key("abc\n")

"""The API Gateway 2.0 translation: pure, no AWS needed."""

from __future__ import annotations

import json

from lambda_adapter.apigw import to_request, to_result
from lambda_adapter.runtime import default_budget_mb, settings_from_env
from service.jobs import HttpResponse
from tests.lambda_.events import http_event


def test_default_stage_keeps_the_path() -> None:
    req = to_request(http_event("GET", "/zip-jobs/abc"))
    assert (req.method, req.path, req.base_path) == ("GET", "/zip-jobs/abc", "")


def test_named_stage_becomes_the_base_path() -> None:
    req = to_request(http_event("DELETE", "/zip-jobs/abc", stage="prod"))
    assert (req.method, req.path, req.base_path) == ("DELETE", "/zip-jobs/abc", "/prod")


def test_base64_body_is_decoded_and_headers_lowercased() -> None:
    event = http_event(
        "POST",
        "/zip-jobs",
        body={"keys": ["a.pdf"]},
        base64_body=True,
        headers={"Idempotency-Key": "k1"},
    )
    req = to_request(event)
    assert json.loads(req.body) == {"keys": ["a.pdf"]}
    assert req.header("Idempotency-Key") == "k1"


def test_result_shape() -> None:
    out = to_result(HttpResponse.json(202, {"jobId": "j"}, {"Location": "/zip-jobs/j"}))
    assert out["statusCode"] == 202
    assert out["isBase64Encoded"] is False
    assert out["headers"]["Location"] == "/zip-jobs/j"
    assert json.loads(out["body"]) == {"jobId": "j"}


def test_budget_defaults_to_a_share_of_function_memory() -> None:
    """The numbers follow service/memory.py: (memory - 128 - 1,280 B x keys) / 1.25."""
    assert default_budget_mb(128, 100_000) == 16  # floor: the smallest job budget
    assert default_budget_mb(1024, 100_000) == 619
    assert default_budget_mb(10240, 0) == 8089
    env = {
        "ZIPJOBS_TABLE": "t",
        "ZIPJOBS_QUEUE_URL": "https://q",
        "ZIPJOBS_SRC_BUCKETS": "src",
        "ZIPJOBS_DST_BUCKET": "dst",
        "ZIPJOBS_WORKER_CONCURRENCY": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
    }
    assert settings_from_env(env).budget_mb == default_budget_mb(2048, 100_000)
    assert settings_from_env({**env, "ZIPJOBS_BUDGET_MB": "100"}).budget_mb == 100

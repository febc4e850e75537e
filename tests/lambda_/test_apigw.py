"""The API Gateway 2.0 translation: pure, no AWS needed."""

from __future__ import annotations

import json

from lambda_adapter.apigw import to_request, to_result
from lambda_adapter.runtime import default_budget_mb, settings_from_env
from service.jobs import HttpResponse
from service.memory import budget_for_memory_mib, process_ceiling_mib
from tests.lambda_.events import http_event


def test_default_stage_keeps_the_path() -> None:
    req = to_request(http_event("GET", "/zip-jobs/abc"))
    assert (req.method, req.path, req.base_path) == ("GET", "/zip-jobs/abc", "")


def test_named_stage_becomes_the_base_path() -> None:
    req = to_request(http_event("DELETE", "/zip-jobs/abc", stage="prod"))
    assert (req.method, req.path, req.base_path) == ("DELETE", "/zip-jobs/abc", "/prod")


def test_a_custom_domain_mapping_path_is_routed_by_the_route_key() -> None:
    """Under an API mapping (api.example.com/v1 -> this API) rawPath keeps the mapping's
    path; routeKey and pathParameters do not.
    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-mappings.html
    """
    event = http_event("GET", "/zip-jobs/abc")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/zip-jobs/abc"
    req = to_request(event)
    assert (req.method, req.path, req.base_path) == ("GET", "/zip-jobs/abc", "/v1")
    post = http_event("POST", "/zip-jobs", body={"keys": ["a.pdf"]})
    post["rawPath"] = "/tenant/a/zip-jobs"
    assert (to_request(post).path, to_request(post).base_path) == ("/zip-jobs", "/tenant/a")


def test_the_catch_all_route_falls_back_to_the_raw_path() -> None:
    event = http_event("GET", "/openapi.json")
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["pathParameters"] = None
    assert to_request(event).path == "/openapi.json"


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
    # Every job of a batch may hold max_keys entries' metadata at once.
    batch = {**env, "ZIPJOBS_WORKER_CONCURRENCY": "2", "ZIPJOBS_MAX_KEYS": "50000"}
    assert settings_from_env(batch).budget_mb == budget_for_memory_mib(2048, files=100_000)
    assert process_ceiling_mib(settings_from_env(batch).budget_mb, files=100_000) <= 2048

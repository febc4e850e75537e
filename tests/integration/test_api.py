"""The HTTP API's refusals and bookkeeping, through aiohttp's test client and local AWS.

No worker runs in this module, so a job stays PENDING for as long as a test
needs it to; the PENDING -> READY flow is in test_api_flow.py.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api import make_app
from service.jobs import JobService
from service.jobs.manifest import INLINE_KEYS_LIMIT
from service.local.stack import Provisioned, StackNames, provision
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def endpoint_url(aws_endpoint: AwsEndpoint) -> str:
    return aws_endpoint.endpoint_url


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"api-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    settings = stack.settings(
        ZIPJOBS_MAX_KEYS="20000",
        ZIPJOBS_MAX_BODY_BYTES=str(1024 * 1024),
        ZIPJOBS_SRC_PREFIXES="docs/,more/",
    )
    async with JobService.open(settings) as service:
        yield service


@pytest.fixture(scope="module")
async def client(svc: JobService) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(svc))) as c:
        yield c


async def post(client: TestClient[Any, Any], doc: Any, **headers: str) -> Any:
    return await client.post(
        "/zip-jobs", data=json.dumps(doc), headers={"Content-Type": "application/json", **headers}
    )


async def problem(resp: Any, status: int) -> dict[str, Any]:
    """Assert a problem+json response with ``status``; return its document."""
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith(PROBLEM)
    doc: dict[str, Any] = await resp.json(content_type=None)
    assert doc["status"] == status and doc["detail"] and doc["type"].startswith("https://")
    return doc


async def queued_job_ids(svc: JobService) -> list[str]:
    """Job ids of the messages waiting in the queue (made visible again at once)."""
    resp = await svc.sqs.receive_message(
        QueueUrl=svc.settings.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    ids = []
    for m in resp.get("Messages", []):
        ids.append(json.loads(m["Body"])["jobId"])
        await svc.sqs.change_message_visibility(
            QueueUrl=svc.settings.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    return ids


async def drain_queue(svc: JobService) -> None:
    while True:
        resp = await svc.sqs.receive_message(
            QueueUrl=svc.settings.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        if not resp.get("Messages"):
            return
        for m in resp["Messages"]:
            await svc.sqs.delete_message(
                QueueUrl=svc.settings.queue_url, ReceiptHandle=m["ReceiptHandle"]
            )


# --- the happy path of POST and GET ------------------------------------------------


async def test_post_creates_a_pending_job_and_queues_it(
    client: TestClient[Any, Any], svc: JobService
) -> None:
    await drain_queue(svc)
    resp = await post(client, {"keys": ["docs/a.pdf", "more/b.pdf"], "name": "out.zip"})
    assert resp.status == 202
    doc = await resp.json()
    assert set(doc) == {"jobId", "status", "statusUrl"}
    assert doc["status"] == "PENDING"
    assert resp.headers["Location"] == doc["statusUrl"] == f"/zip-jobs/{doc['jobId']}"
    assert await queued_job_ids(svc) == [doc["jobId"]]

    got = await client.get(doc["statusUrl"])
    assert got.status == 200
    job = await got.json()
    assert job["status"] == "PENDING" and job["name"] == "out.zip"
    assert job["progress"] == {"bytesDone": 0, "bytesTotal": 0, "filesDone": 0, "filesTotal": 0}
    assert "downloadUrl" not in job and "error" not in job
    record = await svc.store.get(doc["jobId"])
    assert record is not None
    assert record.dst_key == f"archives/{doc['jobId']}/out.zip"
    assert record.request.keys == ("docs/a.pdf", "more/b.pdf")
    await drain_queue(svc)


async def test_healthz_and_openapi(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert {"/zip-jobs", "/zip-jobs/{jobId}", "/healthz", "/openapi.json"} <= set(spec["paths"])


# --- every refusal ---------------------------------------------------------------------


async def test_malformed_json_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/zip-jobs", data=b'{"keys": [', headers={"Content-Type": "application/json"}
    )
    doc = await problem(resp, 400)
    assert "not valid JSON" in doc["detail"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"keys": "docs/a.pdf"}, "/keys"),
        ({"keys": [1, 2]}, "/keys/0"),
        ({"keys": []}, "/keys"),
        ({"keys": ["docs/a"], "name": "a.rar"}, "/name"),
        ({"keys": ["docs/a"], "missing": "maybe"}, "/missing"),
        ({"keys": ["docs/a"], "compression": "lzma"}, "/compression"),
        ({"keys": ["docs/a\u0000"]}, "/keys/0"),
        ({"keys": ["docs/" + "k" * 1100]}, "/keys/0"),
        ({"prefix": "docs/", "keys": ["docs/a"]}, ""),
        ({"bucket": "x"}, "/keys"),
    ],
)
async def test_wrong_types_and_values_are_422(
    client: TestClient[Any, Any], body: Any, pointer: str
) -> None:
    doc = await problem(await post(client, body), 422)
    assert pointer in [e["pointer"] for e in doc["errors"]]


async def test_not_an_object_is_422(client: TestClient[Any, Any]) -> None:
    doc = await problem(await post(client, ["docs/a.pdf"]), 422)
    assert "JSON object" in doc["detail"]


async def test_more_keys_than_the_maximum_is_422(
    client: TestClient[Any, Any], svc: JobService
) -> None:
    app = make_app(
        JobService(
            dataclasses.replace(svc.settings, max_keys=3),
            s3=svc.s3,
            dynamodb=svc.dynamodb,
            sqs=svc.sqs,
        )
    )
    async with TestClient(TestServer(app)) as small:
        doc = await problem(await post(small, {"keys": ["docs/a"] * 4}), 422)
    assert "the limit is 3" in doc["detail"]


async def test_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    huge = {"keys": ["docs/" + "x" * 1000] * 1100}  # ~1.1 MB > 1 MiB limit
    doc = await problem(await post(client, huge), 413)
    assert doc["limit"] == 1024 * 1024


async def test_body_over_the_limit_without_content_length_is_413(
    client: TestClient[Any, Any],
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 100_000

    resp = await client.post(
        "/zip-jobs", data=chunks(), headers={"Content-Type": "application/json"}
    )
    await problem(resp, 413)


async def test_non_json_content_type_is_415(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/zip-jobs", data="keys=a", headers={"Content-Type": "text/plain"})
    await problem(resp, 415)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"keys": ["docs/a.pdf"], "bucket": "someone-elses-bucket"}, "/bucket"),
        ({"keys": ["docs/a.pdf", "secret/b.pdf"]}, "/keys/1"),
        ({"prefix": "secret/"}, "/prefix"),
    ],
)
async def test_outside_the_allow_list_is_403(
    client: TestClient[Any, Any], body: Any, pointer: str
) -> None:
    doc = await problem(await post(client, body), 403)
    assert [e["pointer"] for e in doc["errors"]] == [pointer]


async def test_unknown_job_is_404(client: TestClient[Any, Any]) -> None:
    for path in (f"/zip-jobs/{uuid.uuid4().hex}", "/zip-jobs/not-a-job-id"):
        await problem(await client.get(path), 404)
        await problem(await client.delete(path), 404)
    await problem(await client.get("/nothing-here"), 404)


async def test_wrong_method_is_405(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/zip-jobs")
    await problem(resp, 405)
    assert resp.headers["Allow"] == "POST"


async def test_bad_idempotency_key_is_400(client: TestClient[Any, Any]) -> None:
    await problem(await post(client, {"keys": ["docs/a"]}, **{"Idempotency-Key": "x" * 300}), 400)


# --- idempotency ----------------------------------------------------------------------


async def test_idempotency_same_key_same_body_returns_the_same_job(
    client: TestClient[Any, Any], svc: JobService
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = await post(client, {"keys": ["docs/a.pdf"]}, **key)
    assert first.status == 202 and "Idempotent-Replayed" not in first.headers
    job_id = (await first.json())["jobId"]
    # Same request, written differently (defaults spelled out, other order): same job.
    again = await post(client, {"name": "archive.zip", "keys": ["docs/a.pdf"]}, **key)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["jobId"] == job_id
    # Another key: another job.
    other = await post(
        client, {"keys": ["docs/a.pdf"]}, **{"Idempotency-Key": "other-" + key["Idempotency-Key"]}
    )
    assert (await other.json())["jobId"] != job_id
    await drain_queue(svc)


async def test_idempotency_same_key_other_body_is_409(
    client: TestClient[Any, Any], svc: JobService
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    assert (await post(client, {"keys": ["docs/a.pdf"]}, **key)).status == 202
    doc = await problem(await post(client, {"keys": ["docs/b.pdf"]}, **key), 409)
    assert "different request body" in doc["detail"]
    await drain_queue(svc)


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_a_pending_job_then_cancel_again_is_409(
    client: TestClient[Any, Any], svc: JobService
) -> None:
    job_id = (await (await post(client, {"keys": ["docs/a.pdf"]})).json())["jobId"]
    resp = await client.delete(f"/zip-jobs/{job_id}")
    assert resp.status == 202
    job = await resp.json()
    assert job["status"] == "CANCELLED" and "finishedAt" in job
    doc = await problem(await client.delete(f"/zip-jobs/{job_id}"), 409)
    assert doc["jobStatus"] == "CANCELLED"
    assert (await (await client.get(f"/zip-jobs/{job_id}")).json())["status"] == "CANCELLED"
    await drain_queue(svc)


# --- enqueue failure: never a PENDING job nobody runs -------------------------------------


async def test_enqueue_failure_marks_the_job_failed_and_answers_503(
    client: TestClient[Any, Any], svc: JobService
) -> None:
    bad_queue = svc.settings.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    broken = JobService(
        dataclasses.replace(svc.settings, queue_url=bad_queue),
        s3=svc.s3,
        dynamodb=svc.dynamodb,
        sqs=svc.sqs,
    )
    async with TestClient(TestServer(make_app(broken))) as c:
        doc = await problem(await post(c, {"keys": ["docs/a.pdf"]}), 503)
    job = await (await client.get(f"/zip-jobs/{doc['jobId']}")).json()
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "EnqueueFailed"


# --- auth --------------------------------------------------------------------------------------


async def test_bearer_token(svc: JobService) -> None:
    token = "t0ken-" + uuid.uuid4().hex
    guarded = JobService(
        dataclasses.replace(svc.settings, api_token=token),
        s3=svc.s3,
        dynamodb=svc.dynamodb,
        sqs=svc.sqs,
    )
    async with TestClient(TestServer(make_app(guarded))) as c:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": token},
            {"Authorization": f"Basic {token}"},
        ):
            resp = await post(c, {"keys": ["docs/a.pdf"]}, **headers)
            await problem(resp, 401)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        await problem(await c.get(f"/zip-jobs/{uuid.uuid4().hex}"), 401)
        ok = await post(c, {"keys": ["docs/a.pdf"]}, Authorization=f"Bearer {token}")
        assert ok.status == 202
        job_id = (await ok.json())["jobId"]
        got = await c.get(f"/zip-jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
        assert got.status == 200
        assert (await c.get("/healthz")).status == 200  # probes need no token
    await drain_queue(svc)


# --- keys too many for one DynamoDB item -----------------------------------------------------


async def test_many_keys_go_to_an_s3_manifest(
    client: TestClient[Any, Any], svc: JobService
) -> None:
    keys = [f"docs/{i:06d}-{'x' * 40}.pdf" for i in range(6000)]  # ~300 KB of keys
    assert sum(len(k) for k in keys) > INLINE_KEYS_LIMIT
    resp = await post(client, {"keys": keys})
    assert resp.status == 202
    record = await svc.store.get((await resp.json())["jobId"])
    assert record is not None and record.manifest is not None
    assert record.request.keys is None and record.keys_count == 6000
    from service.jobs.manifest import read_manifest

    assert list(await read_manifest(svc.s3, record.manifest)) == keys
    await drain_queue(svc)

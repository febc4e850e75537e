"""Real-shaped Lambda events and context, as API Gateway HTTP API and SQS send them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


def http_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    stage: str = "$default",
    base64_body: bool = False,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload format 2.0 event for one of our routes."""
    raw = "" if body is None else (body if isinstance(body, str) else json.dumps(body))
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    route = "/zip-jobs" if path == "/zip-jobs" else "/zip-jobs/{id}"
    return http_api_event(
        method,
        raw_path,
        route_key=f"{method} {route}",
        path_parameters={"id": path.rsplit("/", 1)[-1]} if route.endswith("{id}") else None,
        headers={"content-type": "application/json", **(headers or {})},
        body=base64.b64encode(raw.encode()) if base64_body else raw.encode(),
        base64_body=base64_body,
        stage=stage,
    )


def http_api_event(
    method: str,
    raw_path: str,
    *,
    route_key: str,
    path_parameters: dict[str, str] | None,
    headers: dict[str, str],
    body: bytes,
    base64_body: bool,
    raw_query: str = "",
    stage: str = "$default",
    authorizer: dict[str, Any] | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway builds for a request a route matched.

    ``body`` is what goes into the event's ``body`` field (already base64 when
    ``base64_body``); ``headers`` have lower-case names, repeated ones joined
    with commas; ``authorizer`` is the ``requestContext.authorizer`` block.
    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
    """
    context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": "api1",
        "domainName": headers.get("host", "api1.execute-api.us-east-1.amazonaws.com"),
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent", "pytest"),
        },
        "requestId": uuid.uuid4().hex,
        "routeKey": route_key,
        "stage": stage,
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "timeEpoch": int(time.time() * 1000),
    }
    if authorizer is not None:
        context["authorizer"] = authorizer
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": context,
        "pathParameters": path_parameters,
        "body": body.decode("utf-8"),
        "isBase64Encoded": base64_body,
    }
    return event


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """An SQS event from messages received with AttributeNames=["All"]."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


@dataclass
class FakeContext:
    """The attributes of LambdaContext that our handlers and powertools read."""

    seconds: float = 900.0
    function_name: str = "zipjobs-zipper"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:zipjobs-zipper"
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.seconds - (time.monotonic() - self._started)) * 1000)

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
    """An API Gateway HTTP API payload format 2.0 event."""
    raw = "" if body is None else (body if isinstance(body, str) else json.dumps(body))
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    route = "/zip-jobs" if path == "/zip-jobs" else "/zip-jobs/{id}"
    return {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api1",
            "domainName": "api1.execute-api.us-east-1.amazonaws.com",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": f"{method} {route}",
            "stage": stage,
            "time": "29/Nov/2026:04:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "pathParameters": {"id": path.rsplit("/", 1)[-1]} if route.endswith("{id}") else None,
        "body": base64.b64encode(raw.encode()).decode() if base64_body else raw,
        "isBase64Encoded": base64_body,
    }


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

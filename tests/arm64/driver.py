"""Plays the Lambda runtime inside the arm64 interpreter: stand-alone, stdlib only.

Run as ``python driver.py`` with only the unzipped package on PYTHONPATH, so
every import comes from the package under test. It reads one JSON request
per line on stdin and answers one JSON line on its stdout:

    {"handler": "enqueue", "event": {...}, "function": "zj-enqueue"} -> the handler's result
    {"report": true}                                                 -> the cold-start report

The handlers' own logs (Lambda's stdout) go to stderr, so the answers stay
parseable and the test can read the cold-start log line from stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

answers = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # from here on, print() and the JSON log handler write to stderr
sys.stdout = sys.stderr

from lambda_adapter import handlers  # noqa: E402 - after the redirect, on purpose
from lambda_adapter.integrity import cold_start_report  # noqa: E402


class Context:
    """What our handlers and powertools read of LambdaContext."""

    def __init__(self, function: str, seconds: float) -> None:
        self.function_name = function
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function}"
        self.aws_request_id = uuid.uuid4().hex
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self._deadline - time.monotonic()) * 1000)


def answer(request: dict[str, Any]) -> Any:
    if request.get("report"):
        return cold_start_report().as_log()
    handler = getattr(handlers, request["handler"])
    context = Context(request.get("function", request["handler"]), request.get("seconds", 300))
    return handler(request["event"], context)


for line in sys.stdin:
    try:
        reply = {"ok": answer(json.loads(line))}
    except Exception as err:  # reported to the test, which fails on it
        reply = {"error": f"{type(err).__name__}: {err}"}
    answers.write(json.dumps(reply) + "\n")

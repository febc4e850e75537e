"""The one rule that turns a job's Outcome into SQS calls (worker and Lambda)."""

from __future__ import annotations

from typing import Any

import pytest

from service.jobs.messages import Action, Outcome
from service.jobs.queue import MAX_VISIBILITY_SECONDS, settle


class RecordingSqs:
    def __init__(self, fail_visibility: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_visibility = fail_visibility

    async def delete_message(self, **kw: Any) -> None:
        self.calls.append(("DeleteMessage", kw))

    async def change_message_visibility(self, **kw: Any) -> None:
        self.calls.append(("ChangeMessageVisibility", kw))
        if self.fail_visibility:
            raise ConnectionError("reset")


async def run(outcome: Outcome, *, delete: bool, sqs: RecordingSqs | None = None) -> Any:
    sqs = sqs or RecordingSqs()
    done = await settle(sqs, "q", "r", outcome, delete=delete)  # type: ignore[arg-type]
    return done, sqs.calls


async def test_delete_deletes_only_where_the_caller_owns_deletion() -> None:
    assert await run(Outcome(Action.DELETE, "x"), delete=True) == (
        True,
        [("DeleteMessage", {"QueueUrl": "q", "ReceiptHandle": "r"})],
    )
    # Lambda's event source mapping deletes what the handler does not report.
    assert await run(Outcome(Action.DELETE, "x"), delete=False) == (True, [])


@pytest.mark.parametrize(("delay", "sent"), [(0, 0), (7, 7), (-3, 0), (10**6, 43_200)])
@pytest.mark.parametrize("delete", [True, False])
async def test_retry_returns_the_message_after_its_delay(
    delay: int, sent: int, delete: bool
) -> None:
    done, calls = await run(Outcome(Action.RETRY, "x", delay=delay), delete=delete)
    assert done is False
    assert calls == [
        (
            "ChangeMessageVisibility",
            {"QueueUrl": "q", "ReceiptHandle": "r", "VisibilityTimeout": sent},
        )
    ]
    assert sent <= MAX_VISIBILITY_SECONDS


async def test_a_failed_visibility_change_is_not_fatal() -> None:
    """The message still comes back after the queue's timeout."""
    sqs = RecordingSqs(fail_visibility=True)
    assert (await run(Outcome(Action.RETRY, "x", delay=1), delete=True, sqs=sqs))[0] is False


async def test_leave_touches_nothing() -> None:
    assert await run(Outcome(Action.LEAVE, "x"), delete=True) == (False, [])

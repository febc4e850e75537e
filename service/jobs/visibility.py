"""Keep a job's queue message hidden only while its job runs here, a short time at a time.

A queue's own visibility timeout must cover the longest job (for a Lambda
event source AWS asks for 6x the function timeout: 90 minutes with a 900 s
zipper), so a message whose worker died would otherwise wait that long
before anyone retries the job. Instead the message is hidden for a short
window (twice the lease) and the window is extended while the job runs:
if the process dies, the extensions stop with it and the job is retried
within about a minute. docs/lifecycle.md ("Bounds").
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger(__name__)


def visibility_window(lease_seconds: int) -> int:
    """At least the lease, so a redelivery after a crash finds the lease expired."""
    return max(2 * lease_seconds, 6)


async def keep_invisible(sqs: SQSClient, queue_url: str, receipt: str, window: int) -> None:
    """Set the message's visibility to ``window`` now and every ``window / 3`` s until cancelled."""
    while True:
        try:
            await sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=window
            )
        except Exception as err:  # the message may come back early: the lease still guards
            log.warning("could not extend message visibility: %s", err)
        await asyncio.sleep(window / 3)

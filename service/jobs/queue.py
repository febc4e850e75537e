"""What a job's ``Outcome`` does to its SQS message, for the worker and the Lambda alike.

The runner decides (delete, retry after a delay, leave alone) without
touching SQS; this is the one place that turns that decision into SQS calls.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .messages import Action, Outcome

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger(__name__)

# ChangeMessageVisibility accepts 0 to 43,200 seconds (12 hours).
MAX_VISIBILITY_SECONDS = 43_200


async def settle(
    sqs: SQSClient, queue_url: str, receipt: str, outcome: Outcome, *, delete: bool
) -> bool:
    """Act on the message as ``outcome`` says; True when the message is done with.

    ``delete`` is False under Lambda's event source mapping, which deletes
    every message the handler does not report as failed (and the function's
    role has no sqs:DeleteMessage). A RETRY makes the message visible again
    after ``outcome.delay`` seconds instead of the queue's long visibility
    timeout; if that call fails the message still comes back, only later.
    LEAVE does nothing: another worker owns the job, and the message returns
    after its visibility timeout to be recognised as a duplicate.
    """
    if outcome.action is Action.DELETE:
        if delete:
            await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt)
        return True
    if outcome.action is Action.RETRY:
        try:
            await sqs.change_message_visibility(
                QueueUrl=queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=max(0, min(outcome.delay, MAX_VISIBILITY_SECONDS)),
            )
        except Exception as err:
            log.warning("could not shorten a message's visibility: %s", err)
    return False

"""Which failures of AWS mean "try again shortly" (503) rather than "we broke" (500).

The API answers within ZIPJOBS_API_DEADLINE_SECONDS whatever DynamoDB, SQS
or S3 do. A dependency that hangs, refuses connections, throttles or answers
5xx is the service being unavailable for a moment: the client should retry
after ``Retry-After`` (with its Idempotency-Key), and an API Gateway in front
must never turn our slowness into its own 504. See docs/lifecycle.md.
"""

from __future__ import annotations

from typing import Final

import aiohttp
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .problems import ApiError

RETRY_AFTER_SECONDS: Final = 5

# Error codes botocore's standard retry mode treats as throttling.
_THROTTLING: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "LimitExceededException",
    }
)


def is_unavailable(err: BaseException) -> bool:
    """True for timeouts, connection failures, throttling and 5xx answers from AWS."""
    if isinstance(err, TimeoutError | HTTPClientError | BotoConnectionError | aiohttp.ClientError):
        return True
    if isinstance(err, ConnectionError):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = err.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in _THROTTLING
    return False


def unavailable(reason: str) -> ApiError:
    """The 503 problem every front end sends when a dependency fails or is too slow."""
    return ApiError(
        503,
        "service-unavailable",
        f"{reason}; nothing may have been created: retry after {RETRY_AFTER_SECONDS} s "
        "(with the same Idempotency-Key for a POST)",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )

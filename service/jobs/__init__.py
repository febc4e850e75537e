"""Jobs: validation, the DynamoDB job store, create/view/cancel, and running one message.

Front ends (service/api.py, service/worker.py, lambda_adapter/handlers.py)
call only what is exported here:

- ``JobService.open(settings)``: the clients, once per process.
- ``handle(svc, HttpRequest) -> HttpResponse``: the whole HTTP API.
- ``parse_message`` + ``run_job_message(svc, msg, owner=, budget=) -> Outcome``:
  one queue message; the caller deletes, returns or leaves the message.
"""

from .http import HttpRequest, HttpResponse, handle, problem_response
from .messages import Action, JobMessage, Outcome, parse_message
from .models import FailureReason, JobRecord, JobRequest, JobStatus
from .problems import PROBLEM_CONTENT_TYPE, ApiError, Problem
from .runner import run_job_message
from .service import JobService, Submitted

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "Action",
    "ApiError",
    "FailureReason",
    "HttpRequest",
    "HttpResponse",
    "JobMessage",
    "JobRecord",
    "JobRequest",
    "JobService",
    "JobStatus",
    "Outcome",
    "Problem",
    "Submitted",
    "handle",
    "parse_message",
    "problem_response",
    "run_job_message",
]

"""One root exception; each subclass carries its HTTP status and a stable error code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.models import Job


class SchedulerError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(SchedulerError):
    status = 400
    code = "bad_request"


class ValidationFailed(SchedulerError):
    status = 400
    code = "validation_error"


class Unauthorized(SchedulerError):
    status = 401
    code = "unauthorized"


class Forbidden(SchedulerError):
    """A valid API key that may not do this (a tenant's key changing budgets: an admin's job)."""

    status = 403
    code = "forbidden"


class NotFound(SchedulerError):
    status = 404
    code = "not_found"


class JobFinished(SchedulerError):
    status = 409
    code = "job_finished"


class RequestTimeout(SchedulerError):
    """The request body did not arrive in time."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(SchedulerError):
    status = 413
    code = "payload_too_large"


class RateLimited(SchedulerError):
    """Too many requests from one API key (or, without a valid key, one address)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retryAfter=retry_after)
        self.retry_after = retry_after


class Conflict(SchedulerError):
    """A compare-and-set update lost: someone else changed the job first."""

    status = 409
    code = "conflict"


class DuplicateKey(SchedulerError):
    """A job with the same dedup or idempotency key exists; `existing` is that job."""

    status = 200
    code = "duplicate"

    def __init__(self, message: str, existing: Job) -> None:
        super().__init__(message)
        self.existing = existing


class Overbooked(SchedulerError):
    """A scheduled job whose window has no free slot under a cap (SCHEDULER_OVERBOOKING=reject,
    core/reservations.py); `earliestStart`: the earliest joinAt that fits, or null."""

    status = 409
    code = "overbooked"

    def __init__(self, message: str, earliest_start: str | None) -> None:
        super().__init__(message, earliestStart=earliest_start)
        self.earliest_start = earliest_start


class BudgetExceeded(SchedulerError):
    """A submit whose expected bot-minutes exceed what is left of its tenant's budget for the
    day or the month (core/budgets.py): 402, with what is left and when the period resets."""

    status = 402
    code = "budget_exceeded"


class MeetingTaken(SchedulerError):
    """A queued job moved onto a meeting (and time) another unfinished job of its tenant has a
    bot for (core/moves.py); `jobId`: that job."""

    status = 409
    code = "meeting_taken"

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message, jobId=job_id)
        self.job_id = job_id


class ConfigError(SchedulerError):
    code = "config_error"


class BackendError(SchedulerError):
    """A backend could not do what was asked; the scheduler retries the job."""

    status = 502
    code = "backend_error"


class ExecutionLost(BackendError):
    """The backend does not know the run any more (it vanished or was never there)."""

    code = "execution_lost"


class StartRefused(BackendError):
    """The backend refuses this job's start for good (an invalid request, a bot command that
    does not exist): retrying cannot succeed, so the job fails at once."""

    code = "start_refused"


class NotSupported(SchedulerError):
    """The backend cannot do this (for example serve logs); the job itself is fine."""

    status = 404
    code = "not_supported"

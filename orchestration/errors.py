"""Podium's domain errors: what was refused and why, as a code. Never an HTTP status: the doors choose
that (api/errors.py holds the one table from code to status)."""
from __future__ import annotations


class GatewayError(Exception):
    """A request Podium refuses or cannot serve. `code` says why (OpenAI's codes where they exist); `type` is the
    error's family on OpenAI's wire; `param` names the field at fault; `retry_after` is in seconds; `run_id` is
    the run that recorded the attempt, if any."""

    def __init__(self, message: str, *, code: str, type: str = "invalid_request_error", param: str | None = None,
                 retry_after: float | None = None, run_id: str | None = None):
        super().__init__(message)
        self.message, self.code, self.type = message, code, type
        self.param, self.retry_after, self.run_id = param, retry_after, run_id


class ReviewError(Exception):
    """A review action Podium refuses; `details` say who holds the item or what it is now."""

    code = "review_invalid"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class ReviewNotFound(ReviewError):
    code = "review_not_found"


class ReviewForbidden(ReviewError):
    code = "review_forbidden"


class ReviewConflict(ReviewError):
    """Someone else holds the claim or already decided the item."""

    code = "review_conflict"

"""The one table from a domain error's code (orchestration/errors.py) to its HTTP status, for /v1 and /api."""
from __future__ import annotations

STATUS_BY_CODE = {
    # the request itself
    "invalid_request": 400, "invalid_json": 400, "invalid_host": 400, "unsupported_model": 400,
    "unsupported_parameter": 400, "review_invalid": 400,
    "missing_api_key": 401, "invalid_api_key": 401,
    "budget_exceeded": 402,  # a workflow run's own budget
    "insufficient_scope": 403, "data_class_not_allowed": 403, "review_forbidden": 403,
    "model_not_found": 404, "unknown_url": 404, "review_not_found": 404,
    "method_not_allowed": 405,
    "run_cancelled": 409, "review_conflict": 409, "idempotency_conflict": 409, "idempotency_in_progress": 409,
    "request_too_large": 413,
    "rate_limit_exceeded": 429, "insufficient_quota": 429,
    # Podium or what it depends on
    "internal_error": 500,
    "upstream_error": 502, "workflow_failed": 502,
    "route_unavailable": 503,
    "deadline_exceeded": 504,
}
# A code missing above is a request Podium refused: a client error, never a 500.
DEFAULT_STATUS = 400


def http_status(exc) -> int:
    """The HTTP status for a GatewayError or ReviewError."""
    return STATUS_BY_CODE.get(exc.code, DEFAULT_STATUS)

"""One rule for a model's status, shared by the control room and podium_top so both screens agree."""
from __future__ import annotations

DEGRADED_ERROR_RATE = 0.05
DEGRADED_MIN_FAILURES = 3


def model_status(enabled: bool, metrics: dict) -> str:
    """healthy | degraded | circuit_open | disabled, for the status grid."""
    if not enabled:
        return "disabled"
    circuit = metrics.get("circuit", "closed")
    if circuit == "open":
        return "circuit_open"
    if circuit == "half_open" or (metrics.get("failures", 0) >= DEGRADED_MIN_FAILURES
                                  and metrics.get("error_rate", 0) >= DEGRADED_ERROR_RATE):
        return "degraded"
    return "healthy"

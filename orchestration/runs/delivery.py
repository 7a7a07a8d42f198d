"""How long one delivery of a run may take under Celery, from the broker's visibility timeout.

The Redis transport re-delivers an unacknowledged message after `visibility_timeout`, so a task must
end before it: the hard time limit is derived from it and stays below it (config/celery.py applies
these limits; the run leases and the stalled-run sweep use them too).
"""
from __future__ import annotations

from django.conf import settings


def time_limits(visibility_timeout_s: int) -> tuple[int, int]:
    """(soft, hard) task time limits that end a task before Redis would hand it to another worker."""
    hard = max(1, visibility_timeout_s - min(60, visibility_timeout_s // 5))
    return max(1, hard - min(30, hard // 10)), hard


VISIBILITY_TIMEOUT_S = int(settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"])  # PODIUM_VISIBILITY_TIMEOUT
SOFT_LIMIT_S, HARD_LIMIT_S = time_limits(VISIBILITY_TIMEOUT_S)

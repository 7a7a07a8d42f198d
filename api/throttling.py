"""Per-key limits on /api (orchestration/access/limits.py): 429 with Retry-After, shared with /v1's counters.

Every API-key request counts against requests/min; only writes (starting a run, deciding a review)
are refused for an exhausted budget or tokens/min, so a key can still read its runs.
"""
from rest_framework import exceptions, permissions, throttling

from orchestration.access import limits
from orchestration.access.apikeys import KeyInfo


class KeyLimitsThrottle(throttling.BaseThrottle):
    def allow_request(self, request, view):
        if not isinstance(request.auth, KeyInfo):
            return True  # sessions: people in the admin and dashboards
        try:
            limits.admit(request.auth, spending=request.method not in permissions.SAFE_METHODS)
        except limits.LimitExceeded as exc:
            raise exceptions.Throttled(wait=exc.retry_after, detail=exc.message, code=exc.code) from None
        return True

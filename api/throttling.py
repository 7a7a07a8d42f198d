"""Per-key limits on /api (orchestration/access/limits.py, budgets.py): 429, shared with /v1's counters.

Every API-key request counts against requests/min; only writes (starting a run, deciding a review)
are refused for a used-up budget or a full tokens/min window, so a key can still read its runs. (A run's
steps then reserve their own calls against the budgets: budgets.RunBudgets.)
"""
from rest_framework import exceptions, permissions, throttling

from orchestration.access import budgets, limits
from orchestration.access.apikeys import KeyInfo


class KeyLimitsThrottle(throttling.BaseThrottle):
    def allow_request(self, request, view):
        if not isinstance(request.auth, KeyInfo):
            return True  # sessions: people in the admin and dashboards
        try:
            limits.admit(request.auth, spending=False)
            if request.method not in permissions.SAFE_METHODS:
                budgets.check_open(request.auth)
        except limits.LimitExceeded as exc:
            raise exceptions.Throttled(wait=exc.retry_after, detail=exc.message, code=exc.code) from None
        return True

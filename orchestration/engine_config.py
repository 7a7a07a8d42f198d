"""The gateway's Engine, configured from settings.PODIUM: retries, circuit breakers, Django's cache."""
from __future__ import annotations

from django.conf import settings

from orchestration.engine.circuit_breaker import circuit_breakers
from orchestration.engine.executor import Engine
from orchestration.engine.resilience import RetryPolicy
from orchestration.response_cache import DjangoResponseCache


def configured_engine() -> Engine:
    podium = settings.PODIUM
    # The breakers are process-wide (shared by every Engine), so their settings are applied once here.
    circuit_breakers.configure(failures=podium["CIRCUIT_FAILURES"], cooldown_s=podium["CIRCUIT_COOLDOWN_S"])
    return Engine(retry=RetryPolicy(max_retries=podium["RETRY_MAX"], base_delay_s=podium["RETRY_BASE_DELAY_S"]),
                  cache=DjangoResponseCache())


engine = configured_engine()  # the process's one Engine: the gateway's calls and workflow runs share it

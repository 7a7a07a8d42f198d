"""Per-key requests per minute, shared by every process; budgets and tokens/min are in budgets.py.

With REDIS_URL the counters live in Redis and one Lua script checks and counts a request
atomically, so N processes enforce one limit, not N. Without Redis (embedded mode), or while
Redis is unreachable, a lock-protected in-process copy of the same logic answers instead:
a Redis blip degrades limits to per-process, it never fails a request.

Windows are fixed minutes (`floor(now / 60)`); a refusal says how long until the window ends.
USD budgets and tokens per minute are reserved before each model call and settled after it
(orchestration/access/budgets.py).
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from orchestration.errors import GatewayError
from orchestration.instruments import RATE_LIMITED

logger = logging.getLogger(__name__)
WINDOW_S = 60
REDIS_TIMEOUT_S = 0.5
stats = {"refused": 0, "fallbacks": 0}

# KEYS: requests counter. ARGV: requests limit, window ttl -> {0, 0} admitted; {1, 0} over the limit
ADMIT_SCRIPT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return {1, 0} end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {0, 0}
"""


class LimitExceeded(GatewayError):
    """A 429 in OpenAI's format; rate limits carry Retry-After, an exhausted budget does not."""


@dataclass(frozen=True)
class KeyLimits:
    key_id: int
    requests_per_minute: int | None

    @classmethod
    def of(cls, key) -> "KeyLimits":
        """From an APIKey row or a KeyInfo."""
        return cls(key_id=key.id, requests_per_minute=key.requests_per_minute)

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None


def _window(now: float) -> tuple[int, int]:
    """(window number, seconds until it ends)."""
    number = int(now // WINDOW_S)
    return number, max(1, math.ceil((number + 1) * WINDOW_S - now))


def _key(key_id: int, window: int) -> str:
    # The hash tag keeps one key's counters in one Redis Cluster slot.
    return f"podium:limits:{{{key_id}}}:req:{window}"


def _refusal(retry_after: float, limits: KeyLimits) -> LimitExceeded:
    stats["refused"] += 1
    RATE_LIMITED.labels("requests").inc()
    return LimitExceeded(f"Rate limit reached for requests per minute (limit {limits.requests_per_minute}). "
                         f"Please try again in {retry_after:.0f}s.", code="rate_limit_exceeded",
                         type="requests", retry_after=retry_after)


class LocalLimiter:
    """The same rule in one process: embedded mode, and the fallback while Redis is unreachable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple, int] = {}

    def admit(self, limits: KeyLimits, now: float) -> tuple[int, float]:
        window, retry_after = _window(now)
        with self._lock:
            if len(self._counts) > 50_000:  # old windows of many keys: drop them all rather than grow
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            requests = self._counts.get((limits.key_id, window), 0)
            if limits.requests_per_minute is not None and requests >= limits.requests_per_minute:
                return 1, retry_after
            self._counts[(limits.key_id, window)] = requests + 1
            return 0, 0

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


local = LocalLimiter()
_redis_clients: dict[str, object] = {}


def _redis():
    """A sync client with short timeouts, or None in embedded mode."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    client = _redis_clients.get(url)
    if client is None:
        import redis

        client = _redis_clients[url] = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S, health_check_interval=30)
    return client


def _fallback(exc: Exception) -> None:
    stats["fallbacks"] += 1
    if stats["fallbacks"] % 100 == 1:
        logger.warning("rate limits fall back to this process (%s so far): Redis unavailable (%s)",
                       stats["fallbacks"], type(exc).__name__)


def admit(key, *, spending: bool = True) -> None:
    """Count one request for `key` (APIKey or KeyInfo), or raise LimitExceeded (429). Sync; may read the DB.

    `spending` is kept for callers: budgets are budgets.py's (`check_open` refuses a used-up one)."""
    limits = KeyLimits.of(key)
    if not limits.unlimited:
        now = time.time()
        client = _redis()
        if client is not None:
            try:
                code, retry_after = _admit_redis(client, limits, now)
            except Exception as exc:
                _fallback(exc)
                code, retry_after = local.admit(limits, now)
        else:
            code, retry_after = local.admit(limits, now)
        if code:
            raise _refusal(float(retry_after), limits)


def _admit_redis(client, limits: KeyLimits, now: float) -> tuple[int, int]:
    window, retry_after = _window(now)
    code, _ = client.eval(ADMIT_SCRIPT, 1, _key(limits.key_id, window), limits.requests_per_minute, WINDOW_S * 2)
    return int(code), retry_after


async def admit_async(key) -> None:
    """Requests/min for async callers (/v1: a call's budgets are reserved with the call, budgets.holding);
    free for keys without a requests/min limit. The in-process count (embedded mode) is a dict under a lock:
    answered in the event loop. Redis's round trip runs in the default thread pool (redis-py's pool is
    thread-safe), not in Django's one thread-sensitive thread, where it would queue behind ORM calls."""
    if KeyLimits.of(key).unlimited:
        return
    if _redis() is None:
        admit(key, spending=False)
        return
    await asyncio.get_running_loop().run_in_executor(None, lambda: admit(key, spending=False))

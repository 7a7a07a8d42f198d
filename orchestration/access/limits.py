"""Per-key rate limits (requests/min, tokens/min) and USD budgets, shared by every process.

With REDIS_URL the counters live in Redis and one Lua script checks and counts a request
atomically, so N processes enforce one limit, not N. Without Redis (embedded mode), or while
Redis is unreachable, a lock-protected in-process copy of the same logic answers instead:
a Redis blip degrades limits to per-process, it never fails a request.

Windows are fixed minutes (`floor(now / 60)`); a refusal says how long until the window ends.
Admission counts the request; tokens and cost are settled after the call (the batched writer
does it for /v1 calls as it records them), so the tokens/min limit refuses the request after
the one that crossed it, and a budget can be overshot by the calls already in flight.
The budget counter starts from `APIKey.spent_usd` and re-syncs from it every BUDGET_RESYNC_S.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace

from django.conf import settings

from orchestration.errors import GatewayError
from orchestration.instruments import RATE_LIMITED
from orchestration.models import APIKey

logger = logging.getLogger(__name__)
WINDOW_S = 60
BUDGET_RESYNC_S = 60
REDIS_TIMEOUT_S = 0.5
stats = {"refused": 0, "fallbacks": 0}

# KEYS: requests counter, tokens counter, spend counter
# ARGV: requests limit, tokens limit, budget (-1 = none), window ttl
# -> {0, 0} admitted; {1, 0} requests; {2, 0} tokens; {3, 0} budget; {4, 0} spend unknown (Redis keeps the
#    counters two windows, so the wait is computed from the window, not from a key's TTL)
ADMIT_SCRIPT = """
local rpm, tpm, budget, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if budget >= 0 then
  local spent = redis.call('GET', KEYS[3])
  if not spent then return {4, 0} end
  if tonumber(spent) >= budget then return {3, 0} end
end
if rpm >= 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return {1, 0} end
if tpm >= 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return {2, 0} end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ttl) end
return {0, 0}
"""
# KEYS: tokens counter, spend counter; ARGV: tokens, cost, window ttl
SETTLE_SCRIPT = """
if tonumber(ARGV[1]) > 0 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
if tonumber(ARGV[2]) > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
end
return 1
"""


class LimitExceeded(GatewayError):
    """A 429 in OpenAI's format; rate limits carry Retry-After, an exhausted budget does not."""


@dataclass(frozen=True)
class KeyLimits:
    key_id: int
    requests_per_minute: int | None
    tokens_per_minute: int | None
    budget_usd: float | None

    @classmethod
    def of(cls, key) -> "KeyLimits":
        """From an APIKey row or a KeyInfo."""
        budget = key.budget_usd
        return cls(key_id=key.id, requests_per_minute=key.requests_per_minute,
                   tokens_per_minute=key.tokens_per_minute, budget_usd=float(budget) if budget is not None else None)

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None and self.budget_usd is None


def _window(now: float) -> tuple[int, int]:
    """(window number, seconds until it ends)."""
    number = int(now // WINDOW_S)
    return number, max(1, math.ceil((number + 1) * WINDOW_S - now))


def _keys(key_id: int, window: int) -> list[str]:
    # The hash tag keeps one key's counters in one Redis Cluster slot.
    return [f"podium:limits:{{{key_id}}}:req:{window}", f"podium:limits:{{{key_id}}}:tok:{window}",
            f"podium:limits:{{{key_id}}}:spent"]


def _refusal(code: int, retry_after: float, limits: KeyLimits) -> LimitExceeded:
    stats["refused"] += 1
    RATE_LIMITED.labels({1: "requests", 2: "tokens"}.get(code, "budget")).inc()
    if code == 1:
        return LimitExceeded(f"Rate limit reached for requests per minute (limit {limits.requests_per_minute}). "
                             f"Please try again in {retry_after:.0f}s.", code="rate_limit_exceeded",
                             type="requests", retry_after=retry_after)
    if code == 2:
        return LimitExceeded(f"Rate limit reached for tokens per minute (limit {limits.tokens_per_minute}). "
                             f"Please try again in {retry_after:.0f}s.", code="rate_limit_exceeded",
                             type="tokens", retry_after=retry_after)
    return LimitExceeded(f"This API key has used its budget of ${limits.budget_usd:g}.",
                         code="insufficient_quota", type="insufficient_quota")


def spent_in_database(key_id: int) -> float:
    value = APIKey.objects.filter(pk=key_id).values_list("spent_usd", flat=True).first()
    return float(value or 0)


class LocalLimiter:
    """The same rules in one process: embedded mode, and the fallback while Redis is unreachable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple, float] = {}
        self._spent: dict[int, tuple[float, float]] = {}  # key id -> (spent, synced at)

    def admit(self, limits: KeyLimits, now: float, spent_loader) -> tuple[int, float]:
        window, retry_after = _window(now)
        if limits.budget_usd is not None:
            with self._lock:
                spent = self._spent.get(limits.key_id)
            if spent is None or now - spent[1] > BUDGET_RESYNC_S:
                spent = (spent_loader(limits.key_id), now)  # outside the lock: a database read
                with self._lock:
                    self._spent[limits.key_id] = spent
            if spent[0] >= limits.budget_usd:
                return 3, 0
        with self._lock:
            if len(self._counts) > 50_000:  # old windows of many keys: drop them all rather than grow
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            requests = self._counts.get((limits.key_id, window, "req"), 0)
            if limits.requests_per_minute is not None and requests >= limits.requests_per_minute:
                return 1, retry_after
            tokens = self._counts.get((limits.key_id, window, "tok"), 0)
            if limits.tokens_per_minute is not None and tokens >= limits.tokens_per_minute:
                return 2, retry_after
            self._counts[(limits.key_id, window, "req")] = requests + 1
            return 0, 0

    def settle(self, key_id: int, tokens: int, cost_usd: float, now: float) -> None:
        window, _ = _window(now)
        with self._lock:
            slot = (key_id, window, "tok")
            self._counts[slot] = self._counts.get(slot, 0) + tokens
            if key_id in self._spent:
                spent, synced = self._spent[key_id]
                self._spent[key_id] = (spent + cost_usd, synced)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._spent.clear()


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

    `spending=False` (reading runs, listing models) counts against requests/min only: a key over its
    budget may still read what it already paid for."""
    limits = KeyLimits.of(key)
    if not spending:
        limits = replace(limits, tokens_per_minute=None, budget_usd=None)
    if limits.unlimited:
        return
    now = time.time()
    client = _redis()
    if client is not None:
        try:
            code, retry_after = _admit_redis(client, limits, now)
        except Exception as exc:
            _fallback(exc)
            code, retry_after = local.admit(limits, now, spent_in_database)
    else:
        code, retry_after = local.admit(limits, now, spent_in_database)
    if code:
        raise _refusal(code, float(retry_after), limits)


def _admit_redis(client, limits: KeyLimits, now: float) -> tuple[int, int]:
    window, retry_after = _window(now)
    keys = _keys(limits.key_id, window)
    args = [_limit(limits.requests_per_minute), _limit(limits.tokens_per_minute), _limit(limits.budget_usd),
            WINDOW_S * 2]
    code, _ = client.eval(ADMIT_SCRIPT, 3, *keys, *args)
    if code == 4:  # no spend counter yet (or it expired for a re-sync): start it from the database
        client.set(keys[2], repr(spent_in_database(limits.key_id)), ex=BUDGET_RESYNC_S, nx=True)
        code, _ = client.eval(ADMIT_SCRIPT, 3, *keys, *args)
    return int(code), retry_after


def _limit(value) -> str:
    return "-1" if value is None else repr(value)


async def admit_async(key) -> None:
    """`admit` for async callers; free (no thread hop) for keys without limits."""
    if KeyLimits.of(key).unlimited:
        return
    from asgiref.sync import sync_to_async

    await sync_to_async(admit)(key)


def settle(usage: dict[int, tuple[int, float]]) -> None:
    """Add finished calls' tokens and cost, {key id: (tokens, cost USD)}. Never raises."""
    usage = {key_id: value for key_id, value in usage.items() if key_id and (value[0] or value[1])}
    if not usage:
        return
    now = time.time()
    try:
        client = _redis()
        if client is not None:
            try:
                window, _ = _window(now)
                pipe = client.pipeline(transaction=False)
                for key_id, (tokens, cost) in usage.items():
                    keys = _keys(key_id, window)
                    pipe.eval(SETTLE_SCRIPT, 2, keys[1], keys[2], int(tokens), repr(float(cost)), WINDOW_S * 2)
                pipe.execute()
                return
            except Exception as exc:
                _fallback(exc)
        for key_id, (tokens, cost) in usage.items():
            local.settle(key_id, int(tokens), float(cost), now)
    except Exception:  # the callers are writers of records: accounting must never make them fail
        logger.exception("rate-limit settlement failed")

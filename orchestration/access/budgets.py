"""Budgets that hold across processes: reserve an upper bound before a model call, settle the actual cost after.

Every budget that applies to a call is checked and held in one atomic step: the key's lifetime `budget_usd`,
its USD per day and per month, its team's USD per day and per month (shared by all the team's keys), and the
tokens per minute of the key and of the team. The amount held is an upper bound of the call's cost
(`call_bound`): the prompt's UTF-8 bytes as its tokens (a byte-level BPE token covers at least one byte) plus
the output limit (`max_tokens`, else the model's whole context window), priced with the most expensive model
the call may reach (its fallbacks, a route's candidates and the models its options name), plus a classifier
route's classification call. The hold is released when the call's cost is committed to the database with its
run (the batched writer for /v1, the run's sink for workflow steps), so a budget's spend is always `settled in
the database + held`, never less. A day's or month's settled spend is the cost of the model calls (steps) that
finished in it, whenever their run was created (`spent_in_database`). A hold lost to a crashed process
expires after PODIUM_BUDGET_RESERVATION_TTL_S (settings.PODIUM).

With REDIS_URL one Lua script checks and holds (and another releases) in Redis; the settled spend is read from
the database into Redis and re-read every SPENT_RESYNC_S. Without Redis (or while it is unreachable) a database
transaction does the same with BudgetReservation rows, serialised by row locks on PostgreSQL and by SQLite's
write lock. A key and team without any budget cost nothing here: `Payer.of` answers None and nothing is called.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q, Sum

from orchestration.access.apikeys import key_info_of, money_or_none
from orchestration.access.limits import LimitExceeded, _redis, _window
from orchestration.engine.executor import BudgetExceeded
from orchestration.engine.resilience import fallback_chain
from orchestration.engine.routing import CLASSIFIER_MAX_TOKENS, classifier_prompt
from orchestration.engine.workflow import input_text
from orchestration.ids import new_id
from orchestration.instruments import RATE_LIMITED
from orchestration.models import APIKey, BudgetReservation, Step, Team
from orchestration.registry import cached_registry, get_registry

logger = logging.getLogger(__name__)
UNIT = Decimal("0.00000001")  # the records' money unit (8 decimals): Redis counts whole units, exactly
SPENT_RESYNC_S = 60
DEFAULT_RESERVATION_TTL_S = 600.0
WINDOW_S = 60
MESSAGE_OVERHEAD_TOKENS = 8  # role, separators: more than any chat template adds per message
NON_TEXT_PART_TOKENS = 2_000  # an image or audio part of a message: beyond any provider's per-image count
MODEL_STEP_TYPES = ("call", "embeddings")  # the steps that cost money (a span's step repeats its children's sum)
stats = {"reserved": 0, "refused": 0, "released": 0, "fallbacks": 0}


def _fallback(exc: Exception) -> None:
    stats["fallbacks"] += 1
    if stats["fallbacks"] % 100 == 1:
        logger.warning("budgets fall back to the database (%s so far): Redis unavailable (%s)",
                       stats["fallbacks"], type(exc).__name__)


def reservation_ttl_s() -> float:
    """How long a hold lives without being settled (a crashed process's holds are released after it)."""
    return float(settings.PODIUM.get("BUDGET_RESERVATION_TTL_S", DEFAULT_RESERVATION_TTL_S))


def to_units(usd, *, up: bool = False) -> int:
    value = Decimal(repr(float(usd))) if isinstance(usd, float) else Decimal(usd)
    units = value / UNIT
    return int(math.ceil(units)) if up else int(units.to_integral_value())


def from_units(units: int) -> float:
    return float(Decimal(units) * UNIT)


# --- what applies to a key ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    scope: str  # "k12:life", "k12:d20261205", "t3:m202612": one counter in Redis
    label: str  # names the budget in the refusal
    limit_usd: float
    owner: str  # "key" or "team"
    since: datetime | None  # the period's start (None = lifetime)


@dataclass(frozen=True)
class Payer:
    """The budgets a key's calls are held against: its own and its team's. A run a person started (no key) pays
    with its team alone: `key_id` None and no key budgets (`for_team_id`)."""
    key_id: int | None
    team_id: int | None
    team_slug: str
    key_budget_usd: float | None
    key_per_day: float | None
    key_per_month: float | None
    team_per_day: float | None
    team_per_month: float | None
    key_tokens_per_minute: int | None
    team_tokens_per_minute: int | None

    @classmethod
    def of(cls, key) -> "Payer | None":
        """From a KeyInfo; None when neither the key nor its team has a budget or a tokens/min limit."""
        team = getattr(key, "team", None)
        if (key.budget_usd is None and key.tokens_per_minute is None
                and getattr(key, "budget_usd_per_day", None) is None
                and getattr(key, "budget_usd_per_month", None) is None
                and (team is None or (team.budget_usd_per_day is None and team.budget_usd_per_month is None
                                      and team.tokens_per_minute is None))):
            return None  # the hot path of a key without budgets: nothing built, nothing called
        payer = cls(key_id=key.id, team_id=team.id if team else None, team_slug=team.slug if team else "",
                    key_budget_usd=key.budget_usd, key_per_day=getattr(key, "budget_usd_per_day", None),
                    key_per_month=getattr(key, "budget_usd_per_month", None),
                    team_per_day=team.budget_usd_per_day if team else None,
                    team_per_month=team.budget_usd_per_month if team else None,
                    key_tokens_per_minute=key.tokens_per_minute,
                    team_tokens_per_minute=team.tokens_per_minute if team else None)
        return payer if payer.limited else None

    @classmethod
    def for_key_id(cls, key_id: int | None) -> "Payer | None":
        """The payer of a workflow run's key (sync: reads the database)."""
        if not key_id:
            return None
        row = APIKey.objects.filter(pk=key_id).select_related("team").first()
        return cls.of(key_info_of(row)) if row is not None else None

    @classmethod
    def for_team_id(cls, team_id: int | None) -> "Payer | None":
        """The payer of a team's run started without a key (a session, the control room): the team's budgets."""
        if not team_id:
            return None
        team = Team.objects.filter(pk=team_id).first()
        if team is None:
            return None
        payer = cls(key_id=None, team_id=team.id, team_slug=team.slug, key_budget_usd=None, key_per_day=None,
                    key_per_month=None, team_per_day=money_or_none(team.budget_usd_per_day),
                    team_per_month=money_or_none(team.budget_usd_per_month), key_tokens_per_minute=None,
                    team_tokens_per_minute=team.tokens_per_minute)
        return payer if payer.limited else None

    @classmethod
    def for_run(cls, api_key_id: int | None, team_id: int | None) -> "Payer | None":
        """A workflow run's payer: its key (and the key's team), else its team alone."""
        return cls.for_key_id(api_key_id) if api_key_id else cls.for_team_id(team_id)

    @property
    def limited(self) -> bool:
        return any(value is not None for value in (
            self.key_budget_usd, self.key_per_day, self.key_per_month, self.team_per_day, self.team_per_month,
            self.key_tokens_per_minute, self.team_tokens_per_minute))

    @property
    def tag(self) -> str:
        # One Redis Cluster slot holds a team's (or a team-less key's) counters: one script touches them all.
        return f"t{self.team_id}" if self.team_id else f"k{self.key_id}"

    def budgets(self, now: float) -> list[Budget]:
        moment = datetime.fromtimestamp(now, dt_timezone.utc)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        team = f"the team '{self.team_slug}'s"
        found = []
        for value, scope, label, owner, since in (
                (self.key_budget_usd, f"k{self.key_id}:life", "this API key's lifetime budget", "key", None),
                (self.key_per_day, f"k{self.key_id}:d{day:%Y%m%d}", "this API key's daily budget", "key", day),
                (self.key_per_month, f"k{self.key_id}:m{month:%Y%m}", "this API key's monthly budget", "key", month),
                (self.team_per_day, f"t{self.team_id}:d{day:%Y%m%d}", f"{team} daily budget", "team", day),
                (self.team_per_month, f"t{self.team_id}:m{month:%Y%m}", f"{team} monthly budget", "team", month)):
            if value is not None:
                found.append(Budget(scope=scope, label=label, limit_usd=value, owner=owner, since=since))
        return found

    def token_limits(self, window: int) -> list[tuple[str, int, str]]:
        """(counter, limit, label) of the tokens-per-minute limits, in this minute."""
        found = []
        if self.key_tokens_per_minute is not None:
            found.append((f"k{self.key_id}:tok:{window}", self.key_tokens_per_minute, "this API key's"))
        if self.team_tokens_per_minute is not None:
            found.append((f"t{self.team_id}:tok:{window}", self.team_tokens_per_minute,
                          f"the team '{self.team_slug}'s"))
        return found


# --- the upper bound of a call -----------------------------------------------------------------------------------

def prompt_token_bound(messages: list, params: dict | None = None) -> int:
    """At least as many tokens as any tokenizer makes of these messages: one per UTF-8 byte of their text (a
    token covers at least one byte), a generous overhead per message, a flat bound per image/audio part, and
    the JSON of the tools the model is shown."""
    total = 3
    for message in messages or ():
        if not isinstance(message, dict):
            total += len(orjson.dumps(message))
            continue
        total += MESSAGE_OVERHEAD_TOKENS
        for name, value in message.items():
            if name == "content" and isinstance(value, list):
                for part in value:
                    if isinstance(part, dict) and part.get("type") == "text":
                        total += len(str(part.get("text", "")).encode()) + MESSAGE_OVERHEAD_TOKENS
                    elif isinstance(part, dict):
                        total += NON_TEXT_PART_TOKENS
                    else:  # token ids (embeddings' input)
                        total += len(orjson.dumps(part))
            elif isinstance(value, str):
                total += len(value.encode())
            elif value is not None:
                total += len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    for name in ("tools", "functions", "tool_choice", "response_format"):
        if (params or {}).get(name) is not None:
            total += len(orjson.dumps(params[name], option=orjson.OPT_NON_STR_KEYS))
    return total


def output_token_bound(model, params: dict | None) -> int:
    """The answer's tokens at most: the request's max_tokens (per choice), else the model's context window."""
    params = params or {}
    limit = params.get("max_completion_tokens") or params.get("max_tokens")
    out = int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else model.context_window
    choices = params.get("n")
    return out * (choices if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1 else 1)


def route_targets(route) -> list[str]:
    """Every model alias a route may send a request to: its candidates, and the models its options name — the
    classifier's `general` answer, its `classifier_model` and each of its `categories`' models."""
    options = route.options or {}
    categories = options.get("categories")
    targets = [*route.candidates, options.get("general"), options.get("classifier_model"),
               *(categories.values() if isinstance(categories, dict) else ())]
    return [alias for alias in targets if isinstance(alias, str) and alias]


def candidates(registry, name: str) -> list:
    """Every model a call to `name` may reach: the model and its fallbacks, or each of a route's targets
    (`route_targets`) with theirs."""
    model = registry.models.get(name)
    if model is not None:
        return fallback_chain(model, registry)
    route = registry.routes.get(name)
    found: dict[str, object] = {}
    for alias in (route_targets(route) if route else ()):
        spec = registry.models.get(alias)
        if spec is not None:
            for each in fallback_chain(spec, registry):
                found.setdefault(each.alias, each)
    return list(found.values())


def classifier_bound(registry, name: str, messages: list) -> tuple[float, int]:
    """(USD, tokens) of the classification call a route alias `name` may make before its routed call: the
    classification prompt of the request's text (routing.classifier_prompt) with CLASSIFIER_MAX_TOKENS of answer,
    at the dearest of the classifier model and its fallbacks; (0, 0) for a model or a route that classifies by
    none."""
    route = registry.routes.get(name)
    options = (route.options or {}) if route is not None else {}
    categories = options.get("categories")
    classifier = registry.models.get(options.get("classifier_model") or "")
    if classifier is None or not categories or not isinstance(categories, dict):
        return 0.0, 0
    prompt = classifier_prompt(input_text({"messages": messages}), list(categories))  # as the /v1 route builds it
    return call_bound(fallback_chain(classifier, registry), [{"role": "user", "content": prompt}],
                      {"max_tokens": CLASSIFIER_MAX_TOKENS})


def call_bound(models: list, messages: list, params: dict | None, *, output: bool = True) -> tuple[float, int]:
    """(USD, tokens) that a call with these messages cannot exceed on any of these models."""
    prompt = prompt_token_bound(messages, params)
    cost, tokens = 0.0, 0
    for model in models:
        tokens_in = min(prompt, model.context_window) if output else prompt
        tokens_out = output_token_bound(model, params) if output else 0
        cost = max(cost, model.cost_usd(tokens_in, tokens_out))
        tokens = max(tokens, tokens_in + tokens_out)
    return cost, tokens


# --- holds -------------------------------------------------------------------------------------------------------

@dataclass
class Hold:
    id: str
    payer: Payer
    units: int  # the amount held, in UNITs
    tokens: int
    window: int
    scopes: list[str]
    token_counters: list[str]
    backend: str  # "redis" or "db"
    bound_to: str | None = None  # the run (or step) whose committed record settles it
    actual_units: int | None = None  # the call's cost as recorded, known before it is committed
    released: bool = field(default=False)


_holds: dict[str, Hold] = {}  # by the run (or step) id that settles them
_holds_lock = threading.Lock()
_current: contextvars.ContextVar[Hold | None] = contextvars.ContextVar("podium_budget_hold", default=None)
_db_lock = threading.Lock()


def _refusal(label: str, limit_usd: float, amount_usd: float, exhausted: bool) -> LimitExceeded:
    stats["refused"] += 1
    RATE_LIMITED.labels("budget").inc()
    if exhausted:
        message = f"{label[0].upper()}{label[1:]} of ${limit_usd:g} is used up."
    else:
        message = (f"This request could cost up to ${amount_usd:.6f}, more than is left of {label} "
                   f"of ${limit_usd:g}. Send a smaller max_tokens to reserve less.")
    return LimitExceeded(message, code="insufficient_quota", type="insufficient_quota")


def _token_refusal(label: str, limit: int, tokens: int, retry_after: float) -> LimitExceeded:
    stats["refused"] += 1
    RATE_LIMITED.labels("tokens").inc()
    if tokens > limit:  # waiting will not help: the request alone is over the limit
        return LimitExceeded(f"This request may use up to {tokens} tokens, more than {label} limit of {limit} "
                             f"tokens per minute. Send a smaller max_tokens.", code="rate_limit_exceeded",
                             type="tokens")
    return LimitExceeded(f"Rate limit reached for tokens per minute ({label} limit {limit}). "
                         f"Please try again in {retry_after:.0f}s.", code="rate_limit_exceeded", type="tokens",
                         retry_after=retry_after)


def reserve(payer: Payer, amount_usd: float, tokens: int, *, hold_id: str | None = None,
            probe: bool = False) -> Hold:
    """Hold `amount_usd` and `tokens` against every budget and limit of `payer`, or raise LimitExceeded naming the
    one that refuses. Sync: a Redis round trip, or a database transaction. `probe`: hold nothing, only refuse
    when a budget is used up or this minute's tokens are."""
    now = time.time()
    window, retry_after = _window(now)
    hold = Hold(id=hold_id or new_id(), payer=payer, units=to_units(amount_usd, up=True), tokens=int(tokens),
                window=window, scopes=[], token_counters=[], backend="db")
    # A call that costs nothing (a free local model) is not kept from it by a used-up budget.
    budgets = payer.budgets(now) if hold.units or probe else []
    token_limits = payer.token_limits(window)
    client = _redis()
    if client is not None:
        try:
            code, index = _reserve_redis(client, hold, budgets, token_limits, now)
            hold.backend = "redis"
        except LimitExceeded:
            raise
        except Exception as exc:
            _fallback(exc)
            close_old_connections()  # a pool thread's connection may have gone stale since it last served
            code, index = _reserve_db(hold, budgets, token_limits, now)
    else:
        code, index = _reserve_db(hold, budgets, token_limits, now)
    if code == 1:
        budget = budgets[index]
        raise _refusal(budget.label, budget.limit_usd, from_units(hold.units), exhausted=hold.units == 0)
    if code == 3:
        _, limit, label = token_limits[index]
        raise _token_refusal(label, limit, hold.tokens, retry_after)
    hold.scopes = [budget.scope for budget in budgets]
    hold.token_counters = [counter for counter, _, _ in token_limits]
    stats["reserved"] += 1
    return hold


def release(hold: Hold, cost_usd=0, tokens: int | None = None) -> None:
    """The call's actual cost is now in the database (or there is none): drop the hold, count the cost and
    correct the tokens in their minute. Never raises (callers are writers of records)."""
    if hold.released:
        return
    hold.released = True
    stats["released"] += 1
    try:
        actual_tokens = hold.tokens if tokens is None else int(tokens)
        if hold.backend == "redis":
            client = _redis()
            try:
                client.eval(RELEASE_SCRIPT, 2, *_release_args(hold, cost_usd, tokens))
                return
            except Exception as exc:  # Redis away: the hold expires there; nothing else to do
                _fallback(exc)
                return
        if _redis() is not None:  # a hold taken while Redis was away, released from a pool thread
            close_old_connections()
        window_end = datetime.fromtimestamp((hold.window + 2) * WINDOW_S, dt_timezone.utc)
        BudgetReservation.objects.filter(pk=hold.id).update(settled=True, amount_usd=0, tokens=max(0, actual_tokens),
                                                            expires_at=window_end)
    except Exception:
        logger.exception("releasing budget hold %s failed (it expires on its own)", hold.id)


def _release_args(hold: Hold, cost_usd, tokens: int | None) -> list:
    """RELEASE_SCRIPT's keys and arguments for this hold, its actual cost and tokens."""
    units = max(0, to_units(cost_usd))
    actual_tokens = hold.tokens if tokens is None else int(tokens)
    return [*_redis_keys(hold.payer), hold.id, units, _prefix(hold.payer), actual_tokens - hold.tokens,
            len(hold.scopes), *hold.scopes, len(hold.token_counters), *hold.token_counters]


def shrink(hold: Hold) -> None:
    """The call finished and its cost is known, but its record is not committed yet: hold that cost instead of the
    bound, so the budget is not kept from the next calls for a flush interval. Never raises."""
    units = hold.actual_units
    if hold.released or units is None or units >= hold.units:
        return
    try:
        if hold.backend == "redis":
            client = _redis()
            try:
                client.eval(SHRINK_SCRIPT, 2, *_redis_keys(hold.payer), hold.id, units, _prefix(hold.payer))
            except Exception as exc:  # Redis away: the bound stays held, which is only cautious
                _fallback(exc)
            return
        if _redis() is not None:
            close_old_connections()
        BudgetReservation.objects.filter(pk=hold.id, settled=False).update(amount_usd=Decimal(units) * UNIT)
    except Exception:
        logger.exception("shrinking budget hold %s failed (it stays at its bound)", hold.id)


# --- Redis -------------------------------------------------------------------------------------------------------

# KEYS: reservations hash, expiry zset. ARGV: now, id, expires at, units, tokens, prefix, n budgets,
# (scope, limit units) * n, m token limits, (counter, limit) * m, counter ttl.
# -> {0, 0} held; {1, i} budget i refuses; {2, i} budget i's settled spend is not loaded; {3, i} tokens limit i.
RESERVE_SCRIPT = """
local now, id, expires = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local units, tokens, p = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local data = redis.call('HGET', KEYS[1], gone)
  if data then
    local r = cjson.decode(data)
    for _, s in ipairs(r.s) do redis.call('DECRBY', p .. s .. ':held', r.a) end
    redis.call('HDEL', KEYS[1], gone)
  end
  redis.call('ZREM', KEYS[2], gone)
end
local n, i = tonumber(ARGV[7]), 8
local scopes = {}
for k = 1, n do
  local scope, limit = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local spent = redis.call('GET', p .. scope .. ':spent')
  if not spent then return {2, k} end
  local held = tonumber(redis.call('GET', p .. scope .. ':held') or '0')
  if tonumber(spent) + held + units > limit or (units == 0 and tonumber(spent) + held >= limit) then
    return {1, k}
  end
  scopes[k] = scope
end
local m = tonumber(ARGV[i])
i = i + 1
local counters = {}
for k = 1, m do
  local counter, limit = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local used = tonumber(redis.call('GET', p .. counter) or '0')
  if used + tokens > limit or (tokens == 0 and used >= limit) then return {3, k} end
  counters[k] = counter
end
local ttl = tonumber(ARGV[i])
if units > 0 and n > 0 then
  for _, scope in ipairs(scopes) do
    redis.call('INCRBY', p .. scope .. ':held', units)
    redis.call('EXPIRE', p .. scope .. ':held', 3000000)
  end
  redis.call('HSET', KEYS[1], id, cjson.encode({a = units, s = scopes}))
  redis.call('ZADD', KEYS[2], expires, id)
end
if tokens > 0 then
  for _, counter in ipairs(counters) do
    redis.call('INCRBY', p .. counter, tokens)
    if redis.call('TTL', p .. counter) < 0 then redis.call('EXPIRE', p .. counter, ttl) end
  end
end
return {0, 0}
"""
# KEYS: reservations hash, expiry zset. ARGV: id, cost units, prefix, token correction, n, scopes..., m, counters...
# The cost joins each scope's cached settled spend (the database already has it) and bumps its epoch, so a
# reload racing with this release reads again rather than miss the cost.
RELEASE_SCRIPT = """
local p = ARGV[3]
local data = redis.call('HGET', KEYS[1], ARGV[1])
if data then
  local r = cjson.decode(data)
  for _, s in ipairs(r.s) do redis.call('DECRBY', p .. s .. ':held', r.a) end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local cost, correction = tonumber(ARGV[2]), tonumber(ARGV[4])
local n, i = tonumber(ARGV[5]), 6
for k = 1, n do
  local scope = ARGV[i]
  i = i + 1
  if cost > 0 then
    if redis.call('EXISTS', p .. scope .. ':spent') == 1 then redis.call('INCRBY', p .. scope .. ':spent', cost) end
    redis.call('INCR', p .. scope .. ':epoch')
    redis.call('EXPIRE', p .. scope .. ':epoch', 3000000)
  end
end
local m = tonumber(ARGV[i])
i = i + 1
for k = 1, m do
  local counter = ARGV[i]
  i = i + 1
  if correction ~= 0 and redis.call('EXISTS', p .. counter) == 1 then redis.call('INCRBY', p .. counter, correction) end
end
return 1
"""
# KEYS: reservations hash, expiry zset. ARGV: id, the call's actual cost in units, prefix. A finished call's hold
# shrinks to its actual cost until its record is committed (then RELEASE_SCRIPT drops it).
SHRINK_SCRIPT = """
local data = redis.call('HGET', KEYS[1], ARGV[1])
if not data then return 0 end
local r = cjson.decode(data)
local actual = tonumber(ARGV[2])
if actual >= r.a then return 0 end
for _, s in ipairs(r.s) do redis.call('DECRBY', ARGV[3] .. s .. ':held', r.a - actual) end
r.a = actual
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(r))
return 1
"""
# KEYS: spent, epoch. ARGV: units read from the database, the epoch seen before reading, ttl.
LOAD_SCRIPT = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3], 'NX')
return 1
"""


def _prefix(payer: Payer) -> str:
    return f"podium:budget:{{{payer.tag}}}:"


def _redis_keys(payer: Payer) -> list[str]:
    prefix = _prefix(payer)
    return [prefix + "res", prefix + "exp"]


def _reserve_redis(client, hold: Hold, budgets: list[Budget], token_limits: list, now: float) -> tuple[int, int]:
    args = [now, hold.id, now + reservation_ttl_s(), hold.units, hold.tokens, _prefix(hold.payer), len(budgets)]
    for budget in budgets:
        args += [budget.scope, to_units(budget.limit_usd)]
    args.append(len(token_limits))
    for counter, limit, _ in token_limits:
        args += [counter, limit]
    args.append(WINDOW_S * 2)
    for _ in range(5):
        code, index = client.eval(RESERVE_SCRIPT, 2, *_redis_keys(hold.payer), *args)
        if int(code) != 2:
            return int(code), int(index) - 1
        _load_spent(client, hold.payer, budgets[int(index) - 1])
    raise RuntimeError("the settled spend could not be loaded into Redis")


def _load_spent(client, payer: Payer, budget: Budget) -> None:
    close_old_connections()  # maybe a pool thread's connection, idle since the last reload
    prefix = _prefix(payer) + budget.scope
    epoch = client.get(prefix + ":epoch")
    units = to_units(spent_in_database(payer, budget))
    client.eval(LOAD_SCRIPT, 2, prefix + ":spent", prefix + ":epoch", units,
                epoch.decode() if epoch is not None else "0", SPENT_RESYNC_S)


def spent_in_database(payer: Payer, budget: Budget) -> Decimal:
    """What the records say this budget's owner spent in its period (committed calls only)."""
    if budget.since is None:
        value = APIKey.objects.filter(pk=payer.key_id).values_list("spent_usd", flat=True).first()
        return Decimal(value or 0)
    # A period counts what was spent in it: the model calls (steps) that finished in it, whenever their run was
    # created — a workflow run paused at a review gate yesterday and resumed today pays today's steps today.
    # A /v1 call's run and its steps are committed together (the batched writer), its cost being its steps'.
    steps = Step.objects.filter(finished_at__gte=budget.since, node_type__in=MODEL_STEP_TYPES)
    steps = (steps.filter(run__api_key_id=payer.key_id) if budget.owner == "key"
             else steps.filter(run__team_id=payer.team_id))
    return steps.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


# --- the database ------------------------------------------------------------------------------------------------

def _reserve_db(hold: Hold, budgets: list[Budget], token_limits: list, now: float) -> tuple[int, int]:
    payer = hold.payer
    moment = datetime.fromtimestamp(now, dt_timezone.utc)
    with _db_lock, transaction.atomic():
        if connection.vendor != "sqlite":  # SQLite's transactions are IMMEDIATE: the write lock is already ours
            if payer.team_id:  # the team first, then the key: one order, no deadlock
                list(Team.objects.select_for_update().filter(pk=payer.team_id).values_list("pk", flat=True))
            if payer.key_id:  # a team's payer alone (a person's run) has no key to lock
                list(APIKey.objects.select_for_update().filter(pk=payer.key_id).values_list("pk", flat=True))
        BudgetReservation.objects.filter(expires_at__lt=moment - timedelta(seconds=WINDOW_S * 2)).delete()
        live = BudgetReservation.objects.filter(settled=False, expires_at__gt=moment)
        held = {"key": None, "team": None}
        for index, budget in enumerate(budgets):
            if held[budget.owner] is None:
                mine = Q(api_key_id=payer.key_id) if budget.owner == "key" else Q(team_id=payer.team_id)
                held[budget.owner] = to_units(live.filter(mine).aggregate(total=Sum("amount_usd"))["total"] or 0)
            total = to_units(spent_in_database(payer, budget)) + held[budget.owner]
            limit = to_units(budget.limit_usd)
            if total + hold.units > limit or (hold.units == 0 and total >= limit):
                return 1, index
        for index, (counter, limit, _) in enumerate(token_limits):
            mine = Q(api_key_id=payer.key_id) if counter.startswith("k") else Q(team_id=payer.team_id)
            used = BudgetReservation.objects.filter(mine, window=hold.window).aggregate(
                total=Sum("tokens"))["total"] or 0
            if used + hold.tokens > limit or (hold.tokens == 0 and used >= limit):
                return 3, index
        if hold.units or (hold.tokens and token_limits):
            BudgetReservation.objects.create(
                id=hold.id, api_key_id=payer.key_id, team_id=payer.team_id, amount_usd=Decimal(hold.units) * UNIT,
                tokens=hold.tokens if token_limits else 0, window=hold.window, created_at=moment,
                expires_at=moment + timedelta(seconds=reservation_ttl_s()))
    return 0, 0


# --- the callers: /v1 calls, workflow steps, /api writes -----------------------------------------------------------

def check_open(key) -> None:
    """Raise LimitExceeded when one of the key's budgets is used up or its minute's tokens are (/api writes)."""
    payer = Payer.of(key)
    if payer is not None:
        reserve(payer, 0.0, 0, probe=True)


def check_team_open(team_id: int | None) -> None:
    """`check_open` for a run a person starts in a team: refused now rather than at its first step."""
    payer = Payer.for_team_id(team_id)
    if payer is not None:
        reserve(payer, 0.0, 0, probe=True)


async def _off_loop(function, *args, **kwargs):
    """Run a sync budget operation off the event loop. With Redis, in the default thread pool (redis-py's pool is
    thread-safe, and concurrent calls need not queue behind each other or behind the ORM in Django's one
    thread-sensitive thread); on the database, in that thread, as every ORM call from async code is."""
    if _redis() is not None:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))
    return await sync_to_async(function)(*args, **kwargs)


@asynccontextmanager
async def holding(key, model_name: str, messages: list, params: dict, *, output: bool = True):
    """Around a /v1 call: hold its upper bound first (a refusal is a 429 before the upstream sees anything); the
    batched writer settles the hold when it commits the call's run (`bind_run`, `settle_runs`). Free for a key
    and team without budgets."""
    payer = Payer.of(key)
    models = ()
    if payer is not None and key.may_call(model_name):  # not the team's: the 404 follows, no hint of a budget
        models = candidates(cached_registry() or await sync_to_async(get_registry)(), model_name)
    if not models:  # no budget, or an unknown model (a 404 follows, no call)
        yield None
        return
    amount, tokens = call_bound(models, messages, params, output=output)
    if output:  # a route that asks a model to classify the request first: that call is paid from this hold too
        extra_usd, extra_tokens = classifier_bound(cached_registry() or await sync_to_async(get_registry)(),
                                                   model_name, messages)
        amount, tokens = amount + extra_usd, tokens + extra_tokens
    hold = await _off_loop(reserve, payer, amount, tokens)
    token = _current.set(hold)
    try:
        yield hold
    finally:
        _current.reset(token)
        if hold.bound_to is None:  # no record will settle it (the call never ran, or failed unrecorded)
            await _off_loop(release, hold, 0, 0)
        elif hold.actual_units is not None and hold.actual_units < hold.units and not hold.released:
            await _off_loop(shrink, hold)  # before the client has its answer and sends the next call


def hold_open() -> bool:
    """Whether the current /v1 call holds a budget reservation (its run must reach `bind_run` before it closes)."""
    return _current.get() is not None


def bind_run(run) -> None:
    """The batched writer received the run of the current /v1 call: its commit settles the call's hold."""
    hold = _current.get()
    if hold is not None and hold.bound_to is None:
        hold.bound_to = str(run.id)
        try:
            hold.actual_units = max(0, to_units(run.cost_usd or 0, up=True))
        except Exception:  # not a sound amount: the bound stays held until the writer settles it
            hold.actual_units = None
        with _holds_lock:
            _holds[hold.bound_to] = hold


def settle_runs(runs) -> None:
    """After the writer committed these runs: release their holds with their recorded cost and tokens."""
    if not _holds:
        return
    settled = []
    with _holds_lock:
        for run in runs:
            hold = _holds.pop(str(run.id), None)
            if hold is not None:
                settled.append((hold, run.cost_usd or 0, int(run.tokens_in or 0) + int(run.tokens_out or 0)))
    in_redis = [item for item in settled if item[0].backend == "redis" and not item[0].released]
    if len(in_redis) > 1:  # a batch's holds in one round trip
        try:
            pipe = _redis().pipeline(transaction=False)
            for hold, cost, tokens in in_redis:
                pipe.eval(RELEASE_SCRIPT, 2, *_release_args(hold, cost, tokens))
        except Exception:  # an unsound amount: each is released on its own below
            logger.exception("budget holds could not be released in one round trip")
        else:
            for hold, _, _ in in_redis:
                hold.released = True
                stats["released"] += 1
            try:
                pipe.execute()
            except Exception as exc:  # Redis away: the holds expire there
                _fallback(exc)
    for hold, cost, tokens in settled:
        release(hold, cost, tokens)  # the others (a released hold is left alone)


def settle_record(record_id: str, cost_usd, tokens: int) -> None:
    """A run the writer could only set aside, its cost settled all the same: release its hold with that cost."""
    if not _holds:
        return
    with _holds_lock:
        hold = _holds.pop(str(record_id), None)
    if hold is not None:
        release(hold, cost_usd or 0, tokens)


class RunBudgets:
    """A workflow run's per-step holds against its key's and team's budgets (RunContext.budgets)."""

    def __init__(self, payer: Payer):
        self.payer = payer

    async def reserve(self, model, request, step_id: str) -> None:
        """Before a step's model call: hold its bound, or stop the run with budget_exceeded."""
        amount, tokens = call_bound([model], request.messages, request.params)
        try:
            hold = await _off_loop(reserve, self.payer, amount, tokens, hold_id=step_id)
        except LimitExceeded as exc:
            raise BudgetExceeded(exc.message) from None
        hold.bound_to = step_id
        with _holds_lock:
            _holds[step_id] = hold


def settle_step(event: dict) -> None:
    """After the run's sink committed a finished step: release its hold with the step's cost and tokens."""
    if not _holds:
        return
    with _holds_lock:
        hold = _holds.pop(str(event.get("step_id")), None)
    if hold is not None:
        release(hold, event.get("cost_usd") or 0,
                int(event.get("tokens_in") or 0) + int(event.get("tokens_out") or 0))

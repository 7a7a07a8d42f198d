"""Retries with backoff, per-call timeouts and fallback chains.

One model's attempts: the first call, then up to `max_retries` more while the error is retryable.
Before retry n (0-based) the engine waits `min(max_delay_s, base_delay_s * 2**n)` with equal jitter
(half fixed, half uniform), or the upstream's `Retry-After` when it asks for longer. A Retry-After
longer than `max_retry_after_s`, or a wait that would pass the run's deadline, ends this model's
attempts at once so the fallback chain can take over. Every attempt goes through the model's circuit
breaker: once it is open, retrying stops too.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from orchestration.engine.circuit_breaker import Admission, CircuitBreaker
from orchestration.engine.events import EventSink
from orchestration.engine.registry import Registry
from orchestration.engine.types import ChatResult, ModelSpec, ProviderError


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0

    def for_model(self, model: ModelSpec) -> "RetryPolicy":
        """Per-provider overrides from the provider's options (`max_retries`, `retry_base_delay_s`, `retry_max_delay_s`)."""
        options = model.provider.options
        overrides = {}
        for option, name, cast in (("max_retries", "max_retries", int), ("retry_base_delay_s", "base_delay_s", float),
                                   ("retry_max_delay_s", "max_delay_s", float)):
            if option in options:
                overrides[name] = cast(options[option])
        return replace(self, **overrides) if overrides else self

    def delay(self, retry: int, error: ProviderError, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (0-based), or None when not to retry."""
        if not error.retryable or retry >= self.max_retries:
            return None
        backoff = min(self.max_delay_s, self.base_delay_s * (2 ** retry))
        jittered = backoff / 2 + (rng or random).uniform(0, backoff / 2)
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after_s:
                return None
            return max(error.retry_after, jittered)
        return jittered


@dataclass
class Attempts:
    """What happened to one model's attempts."""

    result: ChatResult | None = None
    error: ProviderError | None = None
    retries: int = 0
    errors: list[str] = field(default_factory=list)  # one short line per failed attempt
    waited_s: float = 0.0  # total backoff
    circuit: str | None = None  # "open" when the breaker opened (or refused a retry) during these attempts
    probe: bool = False  # the first attempt was the half-open probe
    out_of_time: bool = False  # retrying stopped because the wait would pass the run's deadline


def counts_against_circuit(error: ProviderError) -> bool:
    """Only failures a fallback could avoid count: a 400 or 401 is the request's or the config's fault."""
    return error.retryable


def timeout_for(model: ModelSpec, seconds_left: float | None) -> float:
    """The per-call timeout: the provider's, shortened to what the run's deadline leaves."""
    timeout = model.provider.timeout_s
    return timeout if seconds_left is None else max(0.0, min(timeout, seconds_left))


async def with_timeout(call: Awaitable[ChatResult], timeout_s: float) -> ChatResult:
    """A ChatResult, or a retryable ProviderError(kind="timeout") once `timeout_s` has passed."""
    try:
        async with asyncio.timeout(timeout_s):  # unlike wait_for, no extra task per call
            return await call
    except TimeoutError:
        raise ProviderError(f"no answer within {timeout_s:g}s", retryable=True, kind="timeout") from None


async def call_with_retries(call: Callable[[], Awaitable[ChatResult]], *, breaker: CircuitBreaker,
                            admission: Admission, policy: RetryPolicy, sink: EventSink,
                            deadline: float | None = None, before_attempt: Callable[[], None] | None = None,
                            rng: random.Random | None = None) -> Attempts:
    """Run `call` until it succeeds or retrying stops. `admission` is the breaker's for the first attempt."""
    outcome = Attempts(probe=admission.probe)
    while True:
        try:
            if before_attempt is not None:
                before_attempt()
            result = await call()
        except ProviderError as exc:
            if breaker.release(admission, failed=counts_against_circuit(exc), sink=sink) == "open":
                outcome.circuit = "open"
            outcome.errors.append(f"{exc.kind}: {exc}"[:300])
            outcome.error = exc
            delay = policy.delay(outcome.retries, exc, rng)
            if delay is None:
                return outcome
            if deadline is not None and time.monotonic() + delay >= deadline:
                outcome.out_of_time = True
                return outcome
            await asyncio.sleep(delay)
            outcome.waited_s += delay
            admission = breaker.admit(sink)
            if admission is None:
                outcome.circuit = "open"
                return outcome
            outcome.retries += 1
            continue
        except BaseException:
            breaker.release(admission, failed=None, sink=sink)  # cancelled, or the run hit a limit: no verdict
            raise
        breaker.release(admission, failed=False, sink=sink)
        outcome.result, outcome.error = result, None
        return outcome


def fallback_chain(model: ModelSpec, registry: Registry,
                   fallbacks: Sequence[ModelSpec | str] | None = None) -> list[ModelSpec]:
    """The model, then its fallbacks in order (given ones, else `model.fallbacks`), unknown and repeated aliases left out."""
    chain, seen = [model], {model.alias}
    for item in (model.fallbacks if fallbacks is None else fallbacks):
        spec = item if isinstance(item, ModelSpec) else registry.models.get(item)
        if spec is not None and spec.alias not in seen:
            seen.add(spec.alias)
            chain.append(spec)
    return chain

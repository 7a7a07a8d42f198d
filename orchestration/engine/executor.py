"""Executes calls (and, through node handlers, workflow specs) and reports every step to the sink."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from orchestration.engine.cache import (MemoryResponseCache, ResponseCache, cache_key, entry_from_result,
                                        result_from_entry)
from orchestration.engine.circuit_breaker import CLOSED, CircuitBreakers, circuit_breakers
from orchestration.engine.confidence import Measurement, calibrate, calibration_marker
from orchestration.engine.events import EventSink, StepIdentity, now_ms, step_finished, step_started
from orchestration.engine.policy import allows, check_data_class, needs_redaction, redact_messages
from orchestration.engine.registry import Registry
from orchestration.engine.resilience import RetryPolicy, call_with_retries, fallback_chain, timeout_for, with_timeout
from orchestration.engine.types import ChatRequest, ChatResult, ModelSpec, ProviderError
from orchestration.ids import new_id
from orchestration.providers.base import adapter_for

logger = logging.getLogger(__name__)


@dataclass
class NodeResult:
    """What every node returns."""

    output: str
    confidence: float
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    model: str = ""
    finish_reason: str = "stop"
    tool_calls: list | None = None
    tokens_estimated: bool = False
    raw: dict | None = None  # the provider's own answer, for the /v1 pass-through (n > 1, logprobs, ...)
    measurement: Measurement | None = None  # how `confidence` was measured (engine/confidence.py)


@dataclass
class RunContext:
    run_id: str
    registry: Registry
    sink: EventSink
    data_class: str | None = None
    spent_usd: float = 0.0
    budget_usd: float | None = None  # the run stops with budget_exceeded rather than pass it
    deadline: float | None = None  # time.monotonic() value; the run stops with deadline_exceeded after it
    meta: dict = field(default_factory=dict)
    calibrations: object | None = None  # engine/calibration.Calibrations: raw confidence -> P(right)
    budgets: object | None = None  # access/budgets.RunBudgets: each call holds its bound on the key's/team's budgets

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check_limits(self, next_cost_usd: float = 0.0) -> None:
        """Raise before a call that the run's budget or deadline no longer allows."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded("the run's deadline passed")
        if self.budget_usd is not None and self.spent_usd + next_cost_usd > self.budget_usd:
            raise BudgetExceeded(f"the run's budget of ${self.budget_usd:g} would be exceeded "
                                 f"(spent ${self.spent_usd:.6f})")


class BudgetExceeded(Exception):
    """The run's USD budget would be exceeded; finished steps are kept."""


class DeadlineExceeded(Exception):
    """The run's deadline passed; finished steps are kept."""


class AwaitingReview(Exception):
    """A gate's confidence is below its threshold and nobody has decided yet: the run pauses here."""

    def __init__(self, gate_key: str, node_id: str, reason: str, candidates: list[dict], request: dict, *,
                 due_in_s: float | None = None, default_action: str = "reject", detail: str = ""):
        super().__init__(f"gate {node_id} awaits a review: {detail or reason}")
        self.gate_key, self.node_id, self.reason = gate_key, node_id, reason
        self.candidates, self.request = candidates, request
        self.due_in_s, self.default_action, self.detail = due_in_s, default_action, detail


class StepFailed(Exception):
    """A step failed for good (after retries and fallbacks)."""

    def __init__(self, message: str, *, error: ProviderError | None = None):
        super().__init__(message)
        self.error = error


class Engine:
    """Calls models for runs. Retry policy, circuit breakers and response cache are the process's own
    unless given (tests give their own; `orchestration/engine_config.py` configures the gateway's)."""

    node_type = "call"  # of the steps it reports (engine/embeddings.py's engine reports "embeddings")

    def __init__(self, adapters=adapter_for, *, retry: RetryPolicy | None = None,
                 breakers: CircuitBreakers | None = None, cache: ResponseCache | None = None):
        self._adapters = adapters
        self.retry = retry or RetryPolicy()
        self.breakers = breakers or circuit_breakers
        self.cache = cache if cache is not None else MemoryResponseCache()

    def chain_for(self, ctx: RunContext, model: ModelSpec) -> list[ModelSpec]:
        """The model and those of its fallbacks that may receive the run's data class.

        Raises PolicyViolation when the model itself may not: a client that named a model learns why,
        rather than being quietly served by another one.
        """
        local_only = ctx.registry.local_only_data_classes
        check_data_class(model, ctx.data_class, local_only)
        return [spec for spec in fallback_chain(model, ctx.registry) if allows(spec, ctx.data_class, local_only)]

    @staticmethod
    def prepare(model: ModelSpec, request: ChatRequest) -> tuple[ChatRequest, dict[str, int]]:
        """The request as this model's provider may see it (PII redacted unless the provider is local),
        and the redaction counts per kind."""
        if not needs_redaction(model.provider):
            return request, {}
        messages, counts = redact_messages(request.messages)
        return (replace(request, messages=messages), counts) if counts else (request, counts)

    async def call_model(self, ctx: RunContext, model: ModelSpec, request: ChatRequest, *,
                         key: str = "call", node_id: str = "call", parent_id: str | None = None,
                         attributes: dict | None = None, cache: bool = True,
                         confidence_scope: str = "", confidence_method: str = "logprobs") -> NodeResult:
        """One model call: policy -> cache -> circuit breaker -> provider, with retries and fallbacks.

        Each model tried is one step (key `key`, then `key.fallback<n>` for the n-th model of the chain);
        its retries are counted on it. Step attributes: `retries`, `attempt_errors`, `backoff_s`,
        `fallback_from` (the model asked for), `circuit` (the breaker's state when it is not closed, or
        after a half-open probe), `circuit_skipped` (models passed over because their circuit is open),
        `cached`, `redacted` (counts per kind), `confidence_signals`. `confidence_scope` ("<workflow>/<node>")
        picks the step's own calibrator before the model's; `confidence_method` "prior" records the prior even
        when the provider sent a signal. Raises PolicyViolation before any call, StepFailed when
        every model failed, DeadlineExceeded / BudgetExceeded when the run's limits stop it.
        """
        chain = self.chain_for(ctx, model)
        caller_attributes = dict(attributes or {})  # the caller's markers (route, tier_reason, iteration, branch)
        failure: ProviderError | None = None
        skipped: list[str] = []
        out_of_time = False
        for position, candidate in enumerate(chain):
            sent, redacted = self.prepare(candidate, request)
            step = _StepReport(ctx, candidate, key=key if position == 0 else f"{key}.fallback{position}",
                               node_id=node_id, parent_id=parent_id, attributes=caller_attributes,
                               node_type=self.node_type, confidence_scope=confidence_scope,
                               use_prior=confidence_method == "prior")
            if position:
                step.attributes["fallback_from"] = chain[0].alias
            if skipped:
                step.attributes["circuit_skipped"] = list(skipped)
            if redacted:
                step.attributes["redacted"] = redacted
            use_cache = cache and candidate.cache_ttl_s > 0
            entry_key = cache_key(candidate, sent, ctx.meta.get("cache_scope", "")) if use_cache else ""
            if use_cache and (hit := await self._cache_get(entry_key)) is not None:
                step.start(sent.messages)
                step.attributes["cached"] = True
                return step.succeeded(result_from_entry(hit), cost=0.0)

            breaker = self.breakers.for_model(candidate)
            admission = breaker.admit(ctx.sink)
            if admission is None:
                skipped.append(candidate.alias)
                continue
            if ctx.budgets is not None:  # raises BudgetExceeded before the upstream sees anything
                try:
                    await ctx.budgets.reserve(candidate, sent, step.step["step_id"])
                except BaseException:
                    breaker.release(admission, failed=None, sink=ctx.sink)  # no call: no verdict on the model
                    raise
            step.start(sent.messages)
            adapter = self._adapters(candidate.provider.kind)
            try:
                attempts = await call_with_retries(
                    lambda: with_timeout(adapter.chat(candidate, sent), timeout_for(candidate, ctx.seconds_left())),
                    breaker=breaker, admission=admission, policy=self.retry.for_model(candidate), sink=ctx.sink,
                    deadline=ctx.deadline, before_attempt=ctx.check_limits)
            except asyncio.CancelledError:
                step.failed("cancelled", status="cancelled")
                raise
            except Exception as exc:  # the run's budget or deadline, or a bug: the step still ends
                step.failed(str(exc) or type(exc).__name__)
                raise
            if attempts.retries:
                step.attributes.update(retries=attempts.retries, backoff_s=round(attempts.waited_s, 3))
            if attempts.errors:
                step.attributes["attempt_errors"] = attempts.errors
            if attempts.probe or breaker.state != CLOSED:
                step.attributes["circuit"] = breaker.state
            if attempts.result is not None:
                if use_cache:
                    await self._cache_set(entry_key, entry_from_result(attempts.result), candidate.cache_ttl_s)
                return step.succeeded(attempts.result)
            failure, out_of_time = attempts.error, out_of_time or attempts.out_of_time
            step.failed(str(failure))
        ctx.check_limits()  # a deadline that passed while we retried is the run's status, not a model failure
        if out_of_time:
            raise DeadlineExceeded(f"the run's deadline left no time to retry after: {failure}")
        if failure is None:
            # Every circuit was open: no call was made; one failed step says so.
            step = _StepReport(ctx, chain[0], key=key, node_id=node_id, parent_id=parent_id,
                               attributes={**caller_attributes, "circuit": "open", "circuit_skipped": skipped},
                               node_type=self.node_type)
            step.start(self.prepare(chain[0], request)[0].messages)  # recorded as it would have been sent
            failure = ProviderError(f"circuit open for {', '.join(skipped)}", retryable=True, kind="circuit_open")
            step.failed(str(failure))
        message = str(failure) if len(chain) == 1 else f"every model of the fallback chain failed; last: {failure}"
        raise StepFailed(message, error=failure)

    async def _cache_get(self, key: str) -> dict | None:
        try:
            return await self.cache.get(key)
        except Exception:  # a cache outage costs a provider call, never the request
            logger.warning("response cache read failed", exc_info=True)
            return None

    async def _cache_set(self, key: str, entry: dict, ttl_s: int) -> None:
        try:
            await self.cache.set(key, entry, ttl_s)
        except Exception:
            logger.warning("response cache write failed", exc_info=True)


class _StepReport:
    """The step.started / step.finished events of one model tried, and the NodeResult of a success."""

    def __init__(self, ctx: RunContext, model: ModelSpec, *, key: str, node_id: str, parent_id: str | None,
                 attributes: dict, node_type: str, confidence_scope: str = "", use_prior: bool = False):
        self.ctx, self.model, self.confidence_scope, self.use_prior = ctx, model, confidence_scope, use_prior
        self.attributes = dict(attributes)
        self.prompt: list[dict] = []
        self.step: StepIdentity = {"run_id": ctx.run_id, "step_id": new_id(), "parent_id": parent_id, "key": key,
                                   "node_id": node_id, "node_type": node_type, "model": model.alias,
                                   "provider": model.provider.name}

    def start(self, prompt: list[dict]) -> None:
        self.started_ms = now_ms()
        self.started = time.perf_counter()
        self.prompt = prompt  # as sent (after redaction); step.finished carries it so the row records it
        self.ctx.sink.emit(step_started(step=self.step, ts=self.started_ms, prompt=prompt,
                                        attributes=dict(self.attributes)))

    def _finished(self, **fields) -> float:
        latency_ms = (time.perf_counter() - self.started) * 1000
        self.ctx.sink.emit(step_finished(step=self.step, ts=now_ms(), started_ts=self.started_ms,
                                         latency_ms=latency_ms, attributes=dict(self.attributes),
                                         prompt=self.prompt, **fields))
        return latency_ms

    def failed(self, error: str, status: str = "failed") -> None:
        self._finished(status=status, error=error, tokens_in=0, tokens_out=0, cost_usd=0.0, output="",
                       confidence=None)

    def succeeded(self, result: ChatResult, cost: float | None = None) -> NodeResult:
        model = self.model
        cost = model.cost_usd(result.tokens_in, result.tokens_out) if cost is None else cost
        self.ctx.spent_usd += cost
        measurement = measure_answer(self.ctx, model, None if self.use_prior else result.confidence,
                                     self.confidence_scope)
        if result.confidence_signals:
            self.attributes["confidence_signals"] = result.confidence_signals
        self.attributes.update(calibration_marker(measurement))
        latency_ms = self._finished(status="succeeded", error="", tokens_in=result.tokens_in,
                                    tokens_out=result.tokens_out, tokens_estimated=result.tokens_estimated,
                                    cost_usd=cost, output=result.text, confidence=measurement.confidence,
                                    confidence_method=measurement.method, confidence_raw=measurement.raw)
        return NodeResult(output=result.text, confidence=measurement.confidence, tokens_in=result.tokens_in,
                          tokens_out=result.tokens_out, cost_usd=cost, latency_ms=latency_ms, model=model.alias,
                          finish_reason=result.finish_reason, tool_calls=result.tool_calls,
                          tokens_estimated=result.tokens_estimated, raw=result.raw, measurement=measurement)


def measure_answer(ctx: RunContext, model: ModelSpec, signal: float | None, scope: str) -> Measurement:
    """A provider's signal (token logprobs, or the mock's stand-in for them) through the calibrator; without
    one, the model's prior, recorded as such."""
    if signal is None:
        return calibrate(None, model.alias, "prior", scope, model.quality_prior)
    return calibrate(ctx.calibrations, model.alias, "logprobs", scope, signal)

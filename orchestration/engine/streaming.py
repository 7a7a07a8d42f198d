"""A streamed model call as one step per model tried, with fallback while nothing was sent.

`stream_model` is the streaming twin of `Engine.call_model`: it emits step.started and
step.finished, prices the tokens, and hands the caller translated `StreamDelta`s. An
upstream that fails before its first delta is replaced by the next model of
`ModelSpec.fallbacks` without the caller seeing anything; a failure after that ends the
iteration with `StreamBroken`; closing or cancelling the iteration closes the upstream
request and records the step `cancelled` with what had arrived. A workflow streams its
final node by calling `stream_model` for it with the run's context.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from orchestration.engine.confidence import calibration_marker
from orchestration.engine.events import StepIdentity, now_ms, step_finished, step_started
from orchestration.engine.executor import NodeResult, RunContext, StepFailed, measure_answer
from orchestration.engine.logprobs import confidence_from_logprobs
from orchestration.engine.resilience import counts_against_circuit
from orchestration.engine.types import (ChatRequest, ModelSpec, ProviderError, StreamDelta, estimate_tokens,
                                        messages_text)
from orchestration.ids import new_id
from orchestration.providers.base import adapter_for


class StreamBroken(StepFailed):
    """The upstream failed after deltas had reached the caller: too late to fall back."""


class ModelStream:
    """Iterate for the deltas; afterwards `result` holds the whole answer (None if it failed or was cancelled)."""

    def __init__(self, engine, ctx: RunContext, model: ModelSpec, request: ChatRequest, *,
                 key: str = "call", node_id: str = "call", parent_id: str | None = None,
                 attributes: dict | None = None, confidence_scope: str = ""):
        self.engine = engine
        self.confidence_scope = confidence_scope
        self._adapters = getattr(engine, "_adapters", adapter_for)
        self.ctx, self.model, self.request = ctx, model, request
        self.key, self.node_id, self.parent_id = key, node_id, parent_id
        self.attributes = dict(attributes or {})
        self.result: NodeResult | None = None
        self.served_by: ModelSpec | None = None
        self._iterator = self._run()

    def __aiter__(self) -> AsyncIterator[StreamDelta]:
        return self._iterator

    async def aclose(self) -> None:
        await self._iterator.aclose()

    async def _run(self) -> AsyncIterator[StreamDelta]:
        # The engine's policy (data class, PII redaction), circuit breakers and budget holds (the key's and
        # team's, `ctx.budgets`: settled when the step's finish is committed) apply as to `call_model`;
        # retries do not: a stream that failed moves on to the next model at once.
        chain = self.engine.chain_for(self.ctx, self.model)  # PolicyViolation before any call
        failure: ProviderError | None = None
        skipped: list[str] = []
        for position, model in enumerate(chain):
            self.ctx.check_limits()
            breaker = self.engine.breakers.for_model(model)
            admission = breaker.admit(self.ctx.sink)
            if admission is None:
                skipped.append(model.alias)
                continue
            sent, redacted = self.engine.prepare(model, self.request)
            attributes = {**self.attributes, **({"redacted": redacted} if redacted else {}),
                          **({"circuit_skipped": list(skipped)} if skipped else {})}
            attempt = _Attempt(self, model, position, chain[0].alias if position else None, sent, attributes)
            if self.ctx.budgets is not None:  # as call_model: BudgetExceeded before the upstream sees anything
                try:
                    await self.ctx.budgets.reserve(model, sent, attempt.step["step_id"])
                except BaseException:
                    breaker.release(admission, failed=None, sink=self.ctx.sink)  # no call: no verdict on the model
                    raise
            deltas = attempt.deltas()
            verdict = None  # the breaker's: None when the client left (no verdict on the model)
            try:
                async for delta in deltas:
                    yield delta
                verdict = False
            except _FellThrough as exc:
                failure, verdict = exc.error, counts_against_circuit(exc.error)
                continue
            except StreamBroken as exc:
                verdict = counts_against_circuit(exc.error)
                raise
            finally:
                await deltas.aclose()  # when our caller closes us, the attempt records `cancelled` now, not at GC
                breaker.release(admission, failed=verdict, sink=self.ctx.sink)
            self.result, self.served_by = attempt.result, model
            return
        if failure is None:
            failure = ProviderError(f"circuit open for {', '.join(skipped)}", retryable=True, kind="circuit_open")
        raise StepFailed(f"every model failed before streaming: {failure}", error=failure)


class _FellThrough(Exception):
    def __init__(self, error: ProviderError):
        self.error = error


class _Attempt:
    """One model of the chain: one step."""

    def __init__(self, stream: ModelStream, model: ModelSpec, position: int, fallback_from: str | None,
                 request: ChatRequest, attributes: dict):
        self.stream, self.model, self.fallback_from, self.request = stream, model, fallback_from, request
        ctx = stream.ctx
        self.step: StepIdentity = {"run_id": ctx.run_id, "step_id": new_id(), "parent_id": stream.parent_id,
                                   "key": stream.key if position == 0 else f"{stream.key}.fallback{position}",
                                   "node_id": stream.node_id, "node_type": "call", "model": model.alias,
                                   "provider": model.provider.name}
        self.attributes = {**attributes, "stream": True}
        self.text: list[str] = []
        self.tool_calls: dict[int, dict] = {}
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.finish_reason = "stop"
        self.token_logprobs: list[float] = []  # of choice 0, for the step's confidence
        self.result: NodeResult | None = None

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        ctx = self.stream.ctx
        self.started_ms = now_ms()
        ctx.sink.emit(step_started(step=self.step, ts=self.started_ms, prompt=self.request.messages,
                                   attributes=self.attributes, fallback_from=self.fallback_from))
        self.started = time.perf_counter()
        upstream = self.stream._adapters(self.model.provider.kind).stream(self.model, self.request)
        sent = False
        try:
            async for delta in upstream:
                self.absorb(delta)
                if delta.text or delta.tool_calls or delta.finish_reason or delta.logprobs:
                    sent = True
                    yield delta
        except ProviderError as exc:
            self.finish("failed", str(exc))
            if not sent:
                raise _FellThrough(exc) from exc
            raise StreamBroken(str(exc), error=exc) from exc
        except (GeneratorExit, asyncio.CancelledError):
            self.finish("cancelled", "the client went away")
            raise
        finally:
            await upstream.aclose()  # closes the upstream HTTP response: the provider stops generating
        self.finish("succeeded", "")

    def absorb(self, delta: StreamDelta) -> None:
        if delta.index == 0:
            if delta.text:
                self.text.append(delta.text)
            for call in delta.tool_calls or ():
                merged = self.tool_calls.setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                          "function": {"name": "", "arguments": ""}})
                merged["id"] = call.get("id") or merged["id"]
                function = call.get("function") or {}
                merged["function"]["name"] += function.get("name") or ""
                merged["function"]["arguments"] += function.get("arguments") or ""
            if delta.finish_reason:
                self.finish_reason = delta.finish_reason
            if delta.token_logprobs:
                self.token_logprobs.extend(delta.token_logprobs)
        if delta.tokens_in is not None:
            self.tokens_in = delta.tokens_in
        if delta.tokens_out is not None:
            self.tokens_out = delta.tokens_out

    def finish(self, status: str, error: str) -> None:
        ctx, model = self.stream.ctx, self.model
        latency_ms = (time.perf_counter() - self.started) * 1000
        text = "".join(self.text)
        tool_calls = [self.tool_calls[i] for i in sorted(self.tool_calls)] or None
        estimated = self.tokens_in is None or self.tokens_out is None
        arguments = "".join(call["function"]["arguments"] for call in tool_calls or ())
        if status == "failed" and not (text or arguments) and estimated:
            tokens_in, tokens_out = 0, 0  # nothing was generated: nothing to pay for
        else:
            tokens_in = self.tokens_in if self.tokens_in is not None else estimate_tokens(
                messages_text(self.request.messages))
            tokens_out = self.tokens_out if self.tokens_out is not None else estimate_tokens(text + arguments)
        cost = model.cost_usd(tokens_in, tokens_out)
        ctx.spent_usd += cost
        measurement = None
        if status == "succeeded":
            signal, signals = confidence_from_logprobs(self.token_logprobs)
            measurement = measure_answer(ctx, model, signal, self.stream.confidence_scope)
            if signals:
                self.attributes["confidence_signals"] = signals
            self.attributes.update(calibration_marker(measurement))
        ctx.sink.emit(step_finished(step=self.step, ts=now_ms(), started_ts=self.started_ms, status=status,
                                    error=error, latency_ms=latency_ms, tokens_in=tokens_in, tokens_out=tokens_out,
                                    tokens_estimated=estimated, cost_usd=cost, output=text,
                                    confidence=measurement.confidence if measurement else None,
                                    confidence_method=measurement.method if measurement else None,
                                    confidence_raw=measurement.raw if measurement else None,
                                    attributes=self.attributes, fallback_from=self.fallback_from,
                                    prompt=self.request.messages))  # as sent (after redaction), kept on the row
        if measurement is not None:
            self.result = NodeResult(output=text, confidence=measurement.confidence, tokens_in=tokens_in,
                                     tokens_out=tokens_out, cost_usd=cost, latency_ms=latency_ms, model=model.alias,
                                     finish_reason=self.finish_reason, tool_calls=tool_calls,
                                     tokens_estimated=estimated, measurement=measurement)


def stream_model(engine, ctx: RunContext, model: ModelSpec, request: ChatRequest, *, key: str = "call",
                 node_id: str = "call", parent_id: str | None = None, attributes: dict | None = None,
                 confidence_scope: str = "") -> ModelStream:
    """The streaming counterpart of `Engine.call_model` (same events, same step keys)."""
    return ModelStream(engine, ctx, model, request, key=key, node_id=node_id, parent_id=parent_id,
                       attributes=attributes, confidence_scope=confidence_scope)

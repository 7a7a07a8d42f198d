"""Executes calls (and, through node handlers, workflow specs) and reports every step to the sink."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from orchestration.engine.events import EventSink, now_ms
from orchestration.engine.registry import Registry
from orchestration.engine.types import ChatRequest, ChatResult, ModelSpec, ProviderError
from orchestration.providers.base import adapter_for


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


class StepFailed(Exception):
    """A step failed for good (after retries and fallbacks)."""

    def __init__(self, message: str, *, error: ProviderError | None = None):
        super().__init__(message)
        self.error = error


class Engine:
    def __init__(self, adapters=adapter_for):
        self._adapters = adapters

    async def call_model(self, ctx: RunContext, model: ModelSpec, request: ChatRequest, *,
                         key: str = "call", node_id: str = "call", parent_id: str | None = None) -> NodeResult:
        """One model call as one step: started/finished events, cost from the registry prices."""
        step_id = str(uuid.uuid4())
        base = {"run_id": ctx.run_id, "step_id": step_id, "parent_id": parent_id, "key": key,
                "node_id": node_id, "node_type": "call", "model": model.alias, "provider": model.provider.name}
        started_ms = now_ms()
        ctx.sink.emit({"type": "step.started", "ts": started_ms, **base, "prompt": request.messages})
        started = time.perf_counter()
        try:
            result: ChatResult = await self._adapters(model.provider.kind).chat(model, request)
        except ProviderError as exc:
            latency_ms = (time.perf_counter() - started) * 1000
            ctx.sink.emit({"type": "step.finished", "ts": now_ms(), **base, "started_ts": started_ms,
                           "status": "failed", "error": str(exc), "latency_ms": latency_ms,
                           "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "output": "", "confidence": None})
            raise StepFailed(str(exc), error=exc) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        cost = model.cost_usd(result.tokens_in, result.tokens_out)
        ctx.spent_usd += cost
        confidence = result.confidence if result.confidence is not None else model.quality_prior
        ctx.sink.emit({"type": "step.finished", "ts": now_ms(), **base, "started_ts": started_ms,
                       "status": "succeeded", "error": "", "latency_ms": latency_ms,
                       "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
                       "tokens_estimated": result.tokens_estimated, "cost_usd": cost,
                       "output": result.text, "confidence": confidence})
        return NodeResult(output=result.text, confidence=confidence, tokens_in=result.tokens_in,
                          tokens_out=result.tokens_out, cost_usd=cost, latency_ms=latency_ms, model=model.alias,
                          finish_reason=result.finish_reason, tool_calls=result.tool_calls,
                          tokens_estimated=result.tokens_estimated)

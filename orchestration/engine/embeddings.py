"""An embeddings call as one step, reported like a chat call (started/finished, tokens, cost)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from orchestration.engine.events import now_ms
from orchestration.engine.executor import RunContext, StepFailed
from orchestration.engine.types import ModelSpec, ProviderError
from orchestration.ids import new_id
from orchestration.providers.base import adapter_for


@dataclass
class EmbeddingsResult:
    data: dict  # the provider's answer, in OpenAI's wire format
    tokens_in: int
    cost_usd: float
    latency_ms: float


def serves_embeddings(engine, model: ModelSpec) -> bool:
    return hasattr(getattr(engine, "_adapters", adapter_for)(model.provider.kind), "embeddings")


async def call_embeddings(engine, ctx: RunContext, model: ModelSpec, params: dict, *,
                          key: str = "embeddings") -> EmbeddingsResult:
    adapter = getattr(engine, "_adapters", adapter_for)(model.provider.kind)
    base = {"run_id": ctx.run_id, "step_id": new_id(), "parent_id": None, "key": key, "node_id": key,
            "node_type": "embeddings", "model": model.alias, "provider": model.provider.name}
    started_ms = now_ms()
    text = params.get("input")
    prompt = [{"role": "user", "content": text if isinstance(text, str) else f"{len(text)} inputs"}]
    ctx.sink.emit({"type": "step.started", "ts": started_ms, **base, "prompt": prompt})
    started = time.perf_counter()
    try:
        data = await adapter.embeddings(model, params)
    except ProviderError as exc:
        ctx.sink.emit({"type": "step.finished", "ts": now_ms(), **base, "started_ts": started_ms, "status": "failed",
                       "error": str(exc), "latency_ms": (time.perf_counter() - started) * 1000, "tokens_in": 0,
                       "tokens_out": 0, "cost_usd": 0.0, "output": "", "confidence": None, "prompt": prompt})
        raise StepFailed(str(exc), error=exc) from exc
    latency_ms = (time.perf_counter() - started) * 1000
    tokens_in = int((data.get("usage") or {}).get("prompt_tokens") or 0)
    cost = model.cost_usd(tokens_in, 0)
    ctx.spent_usd += cost
    ctx.sink.emit({"type": "step.finished", "ts": now_ms(), **base, "started_ts": started_ms, "status": "succeeded",
                   "error": "", "latency_ms": latency_ms, "tokens_in": tokens_in, "tokens_out": 0, "cost_usd": cost,
                   "output": f"{len(data.get('data') or ())} embeddings", "confidence": None, "prompt": prompt})
    return EmbeddingsResult(data=data, tokens_in=tokens_in, cost_usd=cost, latency_ms=latency_ms)

"""Embeddings on /v1: through the same policy, breakers, retries and fallbacks as chat calls; recorded as a run."""
from __future__ import annotations

import time
from dataclasses import dataclass

from orchestration.access.apikeys import KeyInfo
from orchestration.engine.embeddings import call_embeddings, serves_embeddings
from orchestration.engine.events import now_ms
from orchestration.engine.executor import RunContext
from orchestration.engine_config import engine
from orchestration.errors import GatewayError
from orchestration.gateway.chat import PublishingSink, current_registry, model_not_found
from orchestration.gateway.records import attempt_call, failed_call_error, record_call
from orchestration.ids import new_id
from orchestration.models import Run
from orchestration.models.runs import RunStatus


@dataclass
class EmbeddingsOutcome:
    run_id: str
    data: dict  # OpenAI's embeddings answer, with the public alias as its model


async def create_embeddings(*, key: KeyInfo, model_name: str, params: dict, metadata: dict | None = None,
                            data_class: str | None = None) -> EmbeddingsOutcome:
    """Embeddings from a model that serves them, through the policy, redaction, circuit breakers, retries and
    fallbacks chat calls go through (engine/embeddings.py); recorded as a run like a chat call.

    `data_class` comes from the request's `podium` object; embeddings are never served from the response
    cache."""
    registry = await current_registry()
    model = registry.models.get(model_name)
    if model is None or not key.may_call(model_name):  # one answer for both: never a hint
        raise model_not_found(model_name)
    if not serves_embeddings(engine, model):
        raise GatewayError(f"The model '{model_name}' does not serve embeddings.", code="unsupported_model",
                           param="model")
    sink = PublishingSink(key.team_id)
    if key.team is not None:  # fallbacks: only what the team may call
        registry = registry.within(key.team.allowed_targets)
    ctx = RunContext(run_id=new_id(), registry=registry, sink=sink, data_class=data_class)
    run_id = ctx.run_id
    started_ms = now_ms()
    started = time.perf_counter()
    result, error, refused = await attempt_call(call_embeddings(engine, ctx, model, params))
    latency_ms = (time.perf_counter() - started) * 1000
    status = RunStatus.SUCCEEDED if result else RunStatus.FAILED
    text = params.get("input")
    record_call(run_id=run_id, kind=Run.Kind.EMBEDDINGS, model_name=model_name, key=key, status=status,
                input={"input": text if isinstance(text, str) else f"{len(text)} inputs"},
                output=result.output if result else "", confidence=None, tokens_in=result.tokens_in if result else 0,
                tokens_out=0, spent_usd=ctx.spent_usd, latency_ms=latency_ms, error=error, metadata=metadata or {},
                started_ms=started_ms, steps=sink.finished, registry=registry)
    if result is None:
        raise failed_call_error(error=error, refused=refused, run_id=run_id)
    # The answer's `model` is the alias asked for: a fallback serves the same upstream model (engine/embeddings.py).
    return EmbeddingsOutcome(run_id=run_id, data={**result.raw, "model": model_name})

"""Embeddings through the same loop as chat (`Engine.call_model`): data-class policy, PII redaction,
the model's circuit breaker, retries and fallbacks, one step per model tried (node type `embeddings`).

`EmbeddingsEngine` is the gateway's engine (same retry policy, same circuit breakers) with three
differences: it redacts the input texts, it reaches each provider's embeddings endpoint, and its
steps say `embeddings`. The chat path pays nothing for it.

Fallbacks: only those serving embeddings of the *same upstream model* (its `upstream_name`, e.g. the
same model at a second provider) are tried; others are left out of the chain. A vector from another
model lives in another space: mixed into an index built with the first one, it silently breaks search,
whereas a 502 is seen and retried. So the answer always comes from the model asked for.

Redaction replaces PII in string inputs; token-array inputs cannot be read and are sent as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from orchestration.engine.executor import Engine, NodeResult, RunContext
from orchestration.engine.policy import needs_redaction, redact_text
from orchestration.engine.types import ChatResult, ModelSpec, ProviderError, estimate_tokens
from orchestration.providers.base import adapter_for


@dataclass
class EmbeddingsRequest:
    params: dict  # the client's fields (input, dimensions, encoding_format, user, ...), sent upstream as they are

    @property
    def messages(self) -> list[dict]:
        """What the step records: a single text as sent; of a batch only its size (it may hold thousands)."""
        text = self.params.get("input")
        return [{"role": "user", "content": text if isinstance(text, str) else f"{len(text)} inputs"}]


def redact_input(model: ModelSpec, request: EmbeddingsRequest) -> tuple[EmbeddingsRequest, dict[str, int]]:
    """The request as this model's provider may see it: PII in string inputs redacted unless it is local."""
    if not needs_redaction(model.provider):
        return request, {}
    text = request.params.get("input")
    counts: dict[str, int] = {}
    if isinstance(text, str):
        redacted = redact_text(text, counts)
    elif isinstance(text, list):
        redacted = [redact_text(item, counts) if isinstance(item, str) else item for item in text]
    else:
        return request, counts
    return (EmbeddingsRequest({**request.params, "input": redacted}), counts) if counts else (request, counts)


class EmbeddingsCall:
    """A provider's embeddings endpoint behind the `chat(model, request)` call the engine's loop makes."""

    def __init__(self, adapter) -> None:
        self.adapter = adapter

    async def chat(self, model: ModelSpec, request: EmbeddingsRequest) -> ChatResult:
        data = await self.adapter.embeddings(model, request.params)
        vectors = data.get("data")
        if not isinstance(vectors, list):
            raise ProviderError("upstream returned no list of embeddings", retryable=True, kind="bad_response")
        usage = data.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        estimated = not isinstance(tokens, int) or tokens < 0
        if estimated:  # the upstream's answer is untrusted: a missing or odd count is estimated, never a 500
            text = request.params.get("input")
            tokens = estimate_tokens(" ".join(item for item in ([text] if isinstance(text, str) else text)
                                              if isinstance(item, str)))
        return ChatResult(text=f"{len(vectors)} embeddings", tokens_in=tokens, tokens_out=0,
                          tokens_estimated=estimated, raw=data)


class EmbeddingsEngine(Engine):
    """`engine`'s loop, retry policy and circuit breakers, calling embeddings endpoints."""

    node_type = "embeddings"
    prepare = staticmethod(redact_input)

    def __init__(self, engine: Engine) -> None:
        adapters = engine._adapters
        super().__init__(lambda kind: EmbeddingsCall(adapters(kind)), retry=engine.retry, breakers=engine.breakers,
                         cache=engine.cache)


def serves_embeddings(engine, model: ModelSpec) -> bool:
    return hasattr(getattr(engine, "_adapters", adapter_for)(model.provider.kind), "embeddings")


def with_same_space_fallbacks(engine, ctx: RunContext, model: ModelSpec) -> ModelSpec:
    """The model, its fallbacks narrowed to those serving embeddings of the same upstream model."""
    kept = tuple(alias for alias in model.fallbacks
                 if (spec := ctx.registry.models.get(alias)) is not None
                 and spec.upstream_name == model.upstream_name and serves_embeddings(engine, spec))
    return model if kept == model.fallbacks else replace(model, fallbacks=kept)


async def call_embeddings(engine: Engine, ctx: RunContext, model: ModelSpec, params: dict, *,
                          key: str = "embeddings") -> NodeResult:
    """The embeddings of `params["input"]`: a NodeResult whose `raw` is the upstream's answer (OpenAI's format).
    Raises PolicyViolation before any call, StepFailed when every model of the chain failed."""
    return await EmbeddingsEngine(engine).call_model(ctx, with_same_space_fallbacks(engine, ctx, model),
                                                     EmbeddingsRequest(params), key=key, node_id=key, cache=False)

"""The adapter interface and the lookup from a provider kind to its adapter."""
from __future__ import annotations

from typing import Protocol

from collections.abc import AsyncIterator

from orchestration.engine.types import ChatRequest, ChatResult, ModelSpec, StreamDelta


class ProviderAdapter(Protocol):
    """Raises ProviderError (with `retryable`, `status`, `retry_after`) on any upstream failure."""

    async def chat(self, model: ModelSpec, request: ChatRequest) -> ChatResult: ...

    def stream(self, model: ModelSpec, request: ChatRequest) -> AsyncIterator[StreamDelta]: ...


def adapter_for(kind: str) -> ProviderAdapter:
    # Imported lazily so a deployment without, say, Anthropic models never loads its module.
    if kind == "mock":
        from orchestration.providers.mock import MockAdapter
        return _singleton(MockAdapter)
    if kind == "openai_compatible":
        from orchestration.providers.openai_compatible import OpenAICompatibleAdapter
        return _singleton(OpenAICompatibleAdapter)
    if kind == "anthropic":
        from orchestration.providers.anthropic import AnthropicAdapter
        return _singleton(AnthropicAdapter)
    if kind == "ollama":
        from orchestration.providers.ollama import OllamaAdapter
        return _singleton(OllamaAdapter)
    raise LookupError(f"no adapter for provider kind {kind!r}")


_instances: dict[type, object] = {}


def _singleton(cls):
    if cls not in _instances:
        _instances[cls] = cls()
    return _instances[cls]

"""Adapter for any server that speaks OpenAI's /chat/completions (OpenAI, vLLM, llama.cpp, …)."""
from __future__ import annotations

import math

import httpx
import orjson

from orchestration.engine.types import (ChatRequest, ChatResult, ModelSpec, ProviderError,
                                        estimate_tokens, messages_text)
from orchestration.providers.pool import client_for, concurrency_limit


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; rare from model APIs, and backoff covers it


def error_from_response(response: httpx.Response) -> ProviderError:
    status = response.status_code
    try:
        detail = orjson.loads(response.content).get("error", {}).get("message", "")
    except Exception:
        detail = ""
    message = f"upstream answered HTTP {status}" + (f": {detail[:200]}" if detail else "")
    return ProviderError(message, status=status, retryable=status == 429 or status >= 500,
                         retry_after=parse_retry_after(response.headers.get("retry-after")),
                         kind="rate_limited" if status == 429 else "upstream_error")


def confidence_from_logprobs(choice: dict) -> float | None:
    """exp(mean token log-probability): the model's own average certainty."""
    content = (choice.get("logprobs") or {}).get("content") or []
    values = [item["logprob"] for item in content if isinstance(item, dict) and "logprob" in item]
    return math.exp(sum(values) / len(values)) if values else None


class OpenAICompatibleAdapter:
    def headers(self, model: ModelSpec) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if model.provider.api_key:
            headers["authorization"] = f"Bearer {model.provider.api_key}"
        return headers

    def body(self, model: ModelSpec, request: ChatRequest, **extra) -> bytes:
        return orjson.dumps({**request.params, **extra, "model": model.upstream_name,
                             "messages": request.messages})

    async def chat(self, model: ModelSpec, request: ChatRequest) -> ChatResult:
        url = model.provider.base_url.rstrip("/") + "/chat/completions"
        async with concurrency_limit(model.provider):
            try:
                response = await client_for(model.provider).post(
                    url, content=self.body(model, request, stream=False), headers=self.headers(model))
            except httpx.TimeoutException:
                raise ProviderError(f"upstream timed out after {model.provider.timeout_s:g}s",
                                    retryable=True, kind="timeout") from None
            except httpx.TransportError as exc:
                raise ProviderError(f"upstream connection failed: {type(exc).__name__}",
                                    retryable=True, kind="connection_error") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            data = orjson.loads(response.content)
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except Exception:
            raise ProviderError("upstream returned malformed JSON", status=response.status_code,
                                retryable=True, kind="bad_response") from None
        text = message.get("content") or ""
        usage = data.get("usage") or {}
        estimated = "prompt_tokens" not in usage or "completion_tokens" not in usage
        tokens_in = usage.get("prompt_tokens", estimate_tokens(messages_text(request.messages)))
        tokens_out = usage.get("completion_tokens", estimate_tokens(text))
        return ChatResult(text=text, tokens_in=int(tokens_in), tokens_out=int(tokens_out),
                          tokens_estimated=estimated, finish_reason=choice.get("finish_reason") or "stop",
                          tool_calls=message.get("tool_calls"), confidence=confidence_from_logprobs(choice),
                          raw=data)

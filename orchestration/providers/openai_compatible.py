"""Adapter for any server that speaks OpenAI's /chat/completions (OpenAI, vLLM, llama.cpp, …)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson

from orchestration.engine.logprobs import confidence_from_logprobs, token_logprobs
from orchestration.engine.types import (ChatRequest, ChatResult, ModelSpec, ProviderError, StreamDelta,
                                        estimate_tokens, messages_text)
from orchestration.providers.pool import concurrency_limit, session_for

# A stream may last longer than the provider's timeout; what must not exceed it is a silence.
STREAM_TIMEOUT = {}


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; rare from model APIs, and backoff covers it


def error_from_response(status: int, content: bytes, retry_after: str | None = None) -> ProviderError:
    try:
        detail = orjson.loads(content).get("error", {}).get("message", "")
    except Exception:
        detail = ""
    message = f"upstream answered HTTP {status}" + (f": {detail[:200]}" if detail else "")
    return ProviderError(message, status=status, retryable=status == 429 or status >= 500,
                         retry_after=parse_retry_after(retry_after),
                         kind="rate_limited" if status == 429 else "upstream_error")


def transport_error(exc: BaseException, model: ModelSpec) -> ProviderError:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return ProviderError(f"upstream timed out after {model.provider.timeout_s:g}s", retryable=True, kind="timeout")
    return ProviderError(f"upstream connection failed: {type(exc).__name__}", retryable=True, kind="connection_error")


def client_asked_logprobs(request: ChatRequest) -> bool:
    return bool(request.params.get("logprobs"))


def logprobs_extra(request: ChatRequest) -> dict:
    """The body field Podium adds when it wants logprobs for itself (the client's own `logprobs` passes as is)."""
    return {"logprobs": True} if request.want_logprobs and not client_asked_logprobs(request) else {}


def without_logprobs(data: dict) -> dict:
    """The answer as the client may see it when only Podium asked: every choice's logprobs removed."""
    choices = data.get("choices")
    if isinstance(choices, list):
        data["choices"] = [{name: value for name, value in choice.items() if name != "logprobs"}
                           if isinstance(choice, dict) else choice for choice in choices]
    return data


def deltas_from_chunk(chunk: dict, *, pass_logprobs: bool = True) -> list[StreamDelta]:
    """One `chat.completion.chunk` as deltas: one per choice that carries something, plus usage.

    `token_logprobs` is always filled from the choice's logprobs (Podium's confidence); `logprobs`, the
    pass-through for the client, only with `pass_logprobs`. A choice whose only content is logprobs still
    makes a delta, so no token is lost to the confidence.
    """
    deltas = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        text, tool_calls = delta.get("content") or "", delta.get("tool_calls")
        finish_reason, logprobs = choice.get("finish_reason"), choice.get("logprobs")
        if text or tool_calls or finish_reason or logprobs:
            deltas.append(StreamDelta(text=text, tool_calls=tool_calls, finish_reason=finish_reason,
                                      index=choice.get("index", 0),
                                      logprobs=logprobs if pass_logprobs else None,
                                      token_logprobs=token_logprobs(logprobs) if logprobs else None))
    usage = chunk.get("usage")
    if usage:
        deltas.append(StreamDelta(tokens_in=usage.get("prompt_tokens"), tokens_out=usage.get("completion_tokens")))
    return deltas


def stream_timeout(model: ModelSpec) -> aiohttp.ClientTimeout:
    timeout = STREAM_TIMEOUT.get(model.provider.timeout_s)
    if timeout is None:
        seconds = model.provider.timeout_s
        timeout = STREAM_TIMEOUT[seconds] = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
    return timeout


class OpenAICompatibleAdapter:
    """Talks to the upstream through the pool's aiohttp session (see pool.py for why not through httpx)."""

    def headers(self, model: ModelSpec) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if model.provider.api_key:
            headers["authorization"] = f"Bearer {model.provider.api_key}"
        return headers

    def body(self, model: ModelSpec, request: ChatRequest, **extra) -> bytes:
        return orjson.dumps({**request.params, **extra, "model": model.upstream_name,
                             "messages": request.messages})

    async def _post(self, model: ModelSpec, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body under the provider's base URL: (status, content) of a 2xx/3xx, else ProviderError."""
        url = model.provider.base_url.rstrip("/") + path
        async with concurrency_limit(model.provider):
            try:
                async with session_for(model.provider).post(url, data=body, headers=self.headers(model)) as response:
                    status, content = response.status, await response.read()
                    retry_after = response.headers.get("retry-after")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise transport_error(exc, model) from None
        if status >= 400:
            raise error_from_response(status, content, retry_after)
        return status, content

    async def chat(self, model: ModelSpec, request: ChatRequest) -> ChatResult:
        status, content = await self._post(model, "/chat/completions",
                                           self.body(model, request, stream=False, **logprobs_extra(request)))
        try:
            data = orjson.loads(content)
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except Exception:
            raise ProviderError("upstream returned malformed JSON", status=status,
                                retryable=True, kind="bad_response") from None
        text = message.get("content") or ""
        usage = data.get("usage") or {}
        estimated = "prompt_tokens" not in usage or "completion_tokens" not in usage
        tokens_in = usage["prompt_tokens"] if "prompt_tokens" in usage else estimate_tokens(
            messages_text(request.messages))
        tokens_out = usage["completion_tokens"] if "completion_tokens" in usage else estimate_tokens(text)
        # From choice 0 whoever asked: a client asking for logprobs gets Podium a measured confidence too.
        confidence, signals = confidence_from_logprobs(token_logprobs(choice.get("logprobs")))
        if not client_asked_logprobs(request):
            without_logprobs(data)
        return ChatResult(text=text, tokens_in=int(tokens_in), tokens_out=int(tokens_out),
                          tokens_estimated=estimated, finish_reason=choice.get("finish_reason") or "stop",
                          tool_calls=message.get("tool_calls"), confidence=confidence,
                          confidence_signals=signals, raw=data)

    async def stream(self, model: ModelSpec, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Server-sent events translated to deltas. Closing the generator closes the upstream connection."""
        url = model.provider.base_url.rstrip("/") + "/chat/completions"
        # Usage is always asked for so the step is recorded with real token counts.
        body = self.body(model, request, stream=True, stream_options={"include_usage": True},
                         **logprobs_extra(request))
        pass_logprobs = client_asked_logprobs(request)
        complete = False
        async with concurrency_limit(model.provider):
            try:
                async with session_for(model.provider).post(url, data=body, headers=self.headers(model),
                                                            timeout=stream_timeout(model)) as response:
                    if response.status >= 400:
                        raise error_from_response(response.status, await response.read(),
                                                  response.headers.get("retry-after"))
                    buffer = b""
                    async for data in response.content.iter_any():
                        buffer += data
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            if not line.startswith(b"data:"):
                                continue  # comments, event names, blank separators
                            payload = line[5:].strip()
                            if payload == b"[DONE]":
                                complete = True
                                continue
                            try:
                                chunk = orjson.loads(payload)
                            except orjson.JSONDecodeError:
                                raise ProviderError("upstream sent a malformed stream event", retryable=True,
                                                    kind="bad_response") from None
                            if chunk.get("error"):
                                message = (chunk["error"] or {}).get("message") or "unknown error"
                                raise ProviderError(f"upstream stream failed: {str(message)[:200]}",
                                                    retryable=True, kind="upstream_error")
                            for delta in deltas_from_chunk(chunk, pass_logprobs=pass_logprobs):
                                complete = complete or bool(delta.finish_reason)
                                yield delta
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise transport_error(exc, model) from None
        if not complete:
            # A connection that ends cleanly but early must not pass for a finished answer.
            raise ProviderError("upstream stream ended before it was complete", retryable=True, kind="bad_response")

    async def embeddings(self, model: ModelSpec, params: dict) -> dict:
        """POST /embeddings with the client's fields; returns the upstream's JSON answer."""
        status, content = await self._post(model, "/embeddings", orjson.dumps({**params, "model": model.upstream_name}))
        try:
            data = orjson.loads(content)
            data["data"]  # noqa: B018 - an answer without it is malformed
        except Exception:
            raise ProviderError("upstream returned malformed JSON", status=status,
                                retryable=True, kind="bad_response") from None
        return data

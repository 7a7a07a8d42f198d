"""Adapter for Ollama's native chat API (`POST /api/chat`, NDJSON when streaming).

Base URL: `http://host:11434` (with or without a trailing `/api`). Sampling parameters go into
Ollama's `options` (`max_tokens` becomes `num_predict`); `response_format` json becomes `format`.
Ollama leaves out `prompt_eval_count` when it reused a cached prompt: tokens are then estimated and
the result marked `tokens_estimated`.

Log-probabilities (Ollama >= 0.12.11; api/types.go `ChatRequest`/`ChatResponse`): the request takes
`"logprobs": true` and optionally `"top_logprobs": N` (0-20) at the top level of the body, not in
`options`. The answer, and every streamed NDJSON line, then carries a top-level
`"logprobs": [{"token": "Hi", "logprob": -0.01, "bytes": [72, 105], "top_logprobs": [...]}, ...]`
for the tokens it holds (`bytes` and `top_logprobs` are omitted when empty; the whole field when not
asked). They are asked for when the client wants them (`logprobs` in the params) or Podium does
(`ChatRequest.want_logprobs`), and become `ChatResult.confidence` / `StreamDelta.token_logprobs`.
The non-streamed `raw` stays Ollama's own answer (the /v1 layer builds the OpenAI one), without
`logprobs` when only Podium asked; a streamed delta passes them on in OpenAI's shape
(`{"content": [...]}`) only when the client asked.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson

from orchestration.engine.logprobs import confidence_from_logprobs, numeric_logprobs
from orchestration.engine.types import (ChatRequest, ChatResult, ModelSpec, ProviderError, StreamDelta,
                                        estimate_tokens, messages_text)
from orchestration.providers.pool import client_for, concurrency_limit
from orchestration.providers.upstream_http import (malformed, response_lines, status_failure, stream_cut,
                                                   transport_failure)

OPTION_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed", "stop": "stop",
                 "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
                 "max_tokens": "num_predict", "max_completion_tokens": "num_predict"}


def chat_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base + ("/chat" if base.endswith("/api") else "/api/chat")


def translate_message(message: dict) -> dict:
    """Ollama wants text content; images (base64 only) go in `images`, tool-call arguments as objects."""
    content = message.get("content")
    text = ("\n".join(part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text")
            if isinstance(content, list) else content or "")
    role = message.get("role")
    out = {"role": {"developer": "system", "function": "tool"}.get(role, role), "content": text}
    if isinstance(content, list):
        images = [part["image_url"]["url"].split(";base64,", 1)[1] for part in content
                  if isinstance(part, dict) and part.get("type") == "image_url"
                  and ";base64," in (part.get("image_url") or {}).get("url", "")]
        if images:
            out["images"] = images
    if message.get("tool_calls"):
        calls = []
        for call in message["tool_calls"]:
            function = call.get("function") or {}
            try:
                arguments = orjson.loads(function.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                arguments = {}
            calls.append({"function": {"name": function.get("name", ""), "arguments": arguments}})
        out["tool_calls"] = calls
    return out


def request_body(model: ModelSpec, request: ChatRequest, *, stream: bool) -> dict:
    params = request.params
    body: dict = {"model": model.upstream_name, "stream": stream,
                  "messages": [translate_message(m) for m in request.messages]}
    options = {target: params[name] for name, target in OPTION_PARAMS.items() if params.get(name) is not None}
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]
    if options:
        body["options"] = options
    if params.get("tools"):
        body["tools"] = params["tools"]
    response_format = params.get("response_format") or {}
    if response_format.get("type") == "json_object":
        body["format"] = "json"
    elif response_format.get("type") == "json_schema":
        body["format"] = (response_format.get("json_schema") or {}).get("schema") or "json"
    if "keep_alive" in model.provider.options:
        body["keep_alive"] = model.provider.options["keep_alive"]
    if client_asked_logprobs(request) or request.want_logprobs:
        body["logprobs"] = True
        if client_asked_logprobs(request) and params.get("top_logprobs") is not None:
            body["top_logprobs"] = params["top_logprobs"]  # Podium's own confidence needs only the chosen tokens
    return body


def client_asked_logprobs(request: ChatRequest) -> bool:
    return bool(request.params.get("logprobs"))


def openai_logprobs(items: list) -> dict:
    """Ollama's bare token list in OpenAI's `{"content": [...]}` shape, for a client that asked."""
    return {"content": [{"token": item.get("token", ""), "logprob": item.get("logprob"),
                         "bytes": item.get("bytes"), "top_logprobs": item.get("top_logprobs") or []}
                        for item in items if isinstance(item, dict)]}


def openai_tool_calls(calls: list[dict] | None, first_index: int = 0) -> list[dict] | None:
    if not calls:
        return None
    return [{"index": first_index + i, "id": call.get("id") or f"call_{first_index + i}", "type": "function",
             "function": {"name": (call.get("function") or {}).get("name", ""),
                          "arguments": orjson.dumps((call.get("function") or {}).get("arguments") or {}).decode()}}
            for i, call in enumerate(calls)]


def finish_reason(data: dict, had_tool_calls: bool) -> str:
    if had_tool_calls:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def usage(data: dict, request: ChatRequest, text: str) -> tuple[int, int, bool]:
    estimated = "prompt_eval_count" not in data or "eval_count" not in data
    tokens_in = (data["prompt_eval_count"] if "prompt_eval_count" in data
                 else estimate_tokens(messages_text(request.messages)))
    tokens_out = data["eval_count"] if "eval_count" in data else estimate_tokens(text)
    return int(tokens_in), int(tokens_out), estimated


def _error_detail(content: bytes) -> str:
    try:
        return str(orjson.loads(content).get("error", ""))
    except Exception:
        return ""


class OllamaAdapter:
    def headers(self, model: ModelSpec) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if model.provider.api_key:  # plain Ollama needs none; a proxy in front of it may
            headers["authorization"] = f"Bearer {model.provider.api_key}"
        return headers

    async def chat(self, model: ModelSpec, request: ChatRequest) -> ChatResult:
        body = orjson.dumps(request_body(model, request, stream=False))
        async with concurrency_limit(model.provider):
            try:
                response = await client_for(model.provider).post(chat_url(model.provider.base_url), content=body,
                                                                 headers=self.headers(model))
            except httpx.HTTPError as exc:
                raise transport_failure(exc, model.provider) from None
        if response.status_code >= 400:
            raise status_failure(response, _error_detail(response.content))
        try:
            data = orjson.loads(response.content)
            message = data["message"]
            text = message.get("content") or ""
        except Exception:
            raise malformed(status=response.status_code) from None
        tool_calls = openai_tool_calls(message.get("tool_calls"))
        if tool_calls:
            for call in tool_calls:
                del call["index"]  # indexes belong to stream deltas only
        tokens_in, tokens_out, estimated = usage(data, request, text)
        confidence, signals = confidence_from_logprobs(numeric_logprobs(data.get("logprobs")))
        if not client_asked_logprobs(request):
            data.pop("logprobs", None)
        return ChatResult(text=text, tokens_in=tokens_in, tokens_out=tokens_out, tokens_estimated=estimated,
                          finish_reason=finish_reason(data, bool(tool_calls)), tool_calls=tool_calls,
                          confidence=confidence, confidence_signals=signals, raw=data)

    async def stream(self, model: ModelSpec, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """NDJSON lines as deltas; the `done` line carries the usage and ends the answer."""
        body = orjson.dumps(request_body(model, request, stream=True))
        text_out: list[str] = []
        tool_count = 0
        pass_logprobs = client_asked_logprobs(request)
        async with concurrency_limit(model.provider):
            try:
                async with client_for(model.provider).stream("POST", chat_url(model.provider.base_url),
                                                             content=body, headers=self.headers(model)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise status_failure(response, _error_detail(response.content))
                    async for line in response_lines(response):
                        if not line.strip():
                            continue
                        try:
                            data = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            raise malformed("upstream sent a malformed stream line") from None
                        if data.get("error"):
                            raise ProviderError(f"upstream stream failed: {str(data['error'])[:200]}",
                                                retryable=True, kind="upstream_error")
                        message = data.get("message") or {}
                        text = message.get("content") or ""
                        tool_calls = openai_tool_calls(message.get("tool_calls"), tool_count)
                        tool_count += len(tool_calls or ())
                        items = data.get("logprobs")
                        items = items if isinstance(items, list) and items else None
                        if text or tool_calls or items:
                            text_out.append(text)
                            yield StreamDelta(text=text, tool_calls=tool_calls,
                                              token_logprobs=numeric_logprobs(items) if items else None,
                                              logprobs=openai_logprobs(items) if items and pass_logprobs else None)
                        if data.get("done"):
                            tokens_in, tokens_out, estimated = usage(data, request, "".join(text_out))
                            yield StreamDelta(finish_reason=finish_reason(data, tool_count > 0), tokens_in=tokens_in,
                                              tokens_out=tokens_out, tokens_estimated=estimated)
                            return
            except httpx.HTTPError as exc:
                raise transport_failure(exc, model.provider) from None
        raise stream_cut()

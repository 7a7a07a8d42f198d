"""Adapter for Anthropic's Messages API (`POST /v1/messages`), translated to and from OpenAI's shapes.

Base URL: `https://api.anthropic.com` (with or without a trailing `/v1`). Requests: system and
developer messages become `system`; tool results become `tool_result` blocks of a user turn;
assistant tool calls become `tool_use` blocks; consecutive turns of one role are merged, as the API
requires alternation. `max_tokens` is required by the API: the request's, else the provider option
`max_tokens`, else 1024. Parameters the API does not know are left out rather than refused.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson

from orchestration.engine.types import (ChatRequest, ChatResult, ModelSpec, ProviderError, StreamDelta,
                                        estimate_tokens, messages_text)
from orchestration.providers.pool import client_for, concurrency_limit
from orchestration.providers.upstream_http import (malformed, response_lines, status_failure, stream_cut,
                                                   transport_failure)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "pause_turn": "stop", "refusal": "content_filter"}
RETRYABLE_ERROR_TYPES = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


def messages_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


def _image_block(part: dict) -> dict | None:
    url = (part.get("image_url") or {}).get("url", "")
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}} if url else None


def _content_blocks(content) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url" and (block := _image_block(part)):
            blocks.append(block)
    return blocks


def _tool_use_blocks(tool_calls: list[dict]) -> list[dict]:
    blocks = []
    for call in tool_calls or ():
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {"_raw": function.get("arguments")}
        blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
                       "input": arguments})
    return blocks


def translate_messages(messages: list[dict]) -> tuple[str, list[dict]]:
    """(system text, Anthropic turns) from OpenAI-format messages."""
    system, turns = [], []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(messages_text([message]))
            continue
        if role in ("tool", "function"):
            role, blocks = "user", [{"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                                     "content": messages_text([message])}]
        elif role == "assistant":
            blocks = _content_blocks(message.get("content")) + _tool_use_blocks(message.get("tool_calls"))
        else:
            role, blocks = "user", _content_blocks(message.get("content"))
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(part for part in system if part), turns


def _tool_choice(choice):
    if choice in ("auto", None):
        return {"type": "auto"} if choice else None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    return None


def request_body(model: ModelSpec, request: ChatRequest, *, stream: bool) -> dict:
    params = request.params
    system, turns = translate_messages(request.messages)
    body: dict = {"model": model.upstream_name, "messages": turns, "stream": stream,
                  "max_tokens": int(params.get("max_tokens") or params.get("max_completion_tokens")
                                    or model.provider.options.get("max_tokens", DEFAULT_MAX_TOKENS))}
    if system:
        body["system"] = system
    for name in ("temperature", "top_p", "top_k"):
        if params.get(name) is not None:
            body[name] = params[name]
    stop = params.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("tools"):
        body["tools"] = [{"name": tool["function"]["name"], "description": tool["function"].get("description", ""),
                          "input_schema": tool["function"].get("parameters") or {"type": "object"}}
                         for tool in params["tools"] if tool.get("type") == "function"]
        if choice := _tool_choice(params.get("tool_choice")):
            body["tool_choice"] = choice
    if params.get("user"):
        body["metadata"] = {"user_id": str(params["user"])}
    return body


def _error_detail(content: bytes) -> tuple[str, str]:
    try:
        error = orjson.loads(content).get("error") or {}
        return str(error.get("type", "")), str(error.get("message", ""))
    except Exception:
        return "", ""


def result_from_message(data: dict, request: ChatRequest) -> ChatResult:
    text_parts, tool_calls = [], []
    for block in data["content"]:
        if block.get("type") == "text":
            text_parts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append({"id": block.get("id", ""), "type": "function",
                               "function": {"name": block.get("name", ""),
                                            "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    text = "".join(text_parts)
    usage = data.get("usage") or {}
    estimated = "input_tokens" not in usage or "output_tokens" not in usage
    tokens_in = usage["input_tokens"] if "input_tokens" in usage else estimate_tokens(messages_text(request.messages))
    tokens_out = usage["output_tokens"] if "output_tokens" in usage else estimate_tokens(text)
    return ChatResult(text=text, tokens_in=int(tokens_in), tokens_out=int(tokens_out), tokens_estimated=estimated,
                      finish_reason=STOP_REASONS.get(data.get("stop_reason") or "end_turn", "stop"),
                      tool_calls=tool_calls or None, raw=data)


class AnthropicAdapter:
    def headers(self, model: ModelSpec) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if model.provider.api_key:
            headers["x-api-key"] = model.provider.api_key
        return headers

    async def chat(self, model: ModelSpec, request: ChatRequest) -> ChatResult:
        body = orjson.dumps(request_body(model, request, stream=False))
        async with concurrency_limit(model.provider):
            try:
                response = await client_for(model.provider).post(
                    messages_url(model.provider.base_url), content=body, headers=self.headers(model))
            except httpx.HTTPError as exc:
                raise transport_failure(exc, model.provider) from None
        if response.status_code >= 400:
            raise status_failure(response, _error_detail(response.content)[1])
        try:
            return result_from_message(orjson.loads(response.content), request)
        except Exception:
            raise malformed(status=response.status_code) from None

    async def stream(self, model: ModelSpec, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Server-sent events (message_start … message_stop) as deltas; usage on the last one."""
        body = orjson.dumps(request_body(model, request, stream=True))
        tokens_in = tokens_out = None
        finish_reason = None
        tool_index: dict[int, int] = {}  # content block index -> OpenAI tool-call index
        text_out: list[str] = []
        complete = False
        async with concurrency_limit(model.provider):
            try:
                async with client_for(model.provider).stream("POST", messages_url(model.provider.base_url),
                                                             content=body, headers=self.headers(model)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise status_failure(response, _error_detail(response.content)[1])
                    async for line in response_lines(response):
                        if not line.startswith(b"data:"):
                            continue  # "event:" names repeat the data's type; blank lines separate events
                        try:
                            event = orjson.loads(line[5:])
                            kind = event["type"]
                        except Exception:
                            raise malformed("upstream sent a malformed stream event") from None
                        if kind == "message_start":
                            usage = (event.get("message") or {}).get("usage") or {}
                            tokens_in = usage.get("input_tokens", tokens_in)
                        elif kind == "content_block_start":
                            block = event.get("content_block") or {}
                            if block.get("type") == "tool_use":
                                index = tool_index[event.get("index", 0)] = len(tool_index)
                                yield StreamDelta(tool_calls=[{"index": index, "id": block.get("id", ""),
                                                               "type": "function", "function": {
                                                                   "name": block.get("name", ""), "arguments": ""}}])
                            elif block.get("type") == "text" and block.get("text"):
                                text_out.append(block["text"])
                                yield StreamDelta(text=block["text"])
                        elif kind == "content_block_delta":
                            delta = event.get("delta") or {}
                            if delta.get("type") == "text_delta":
                                text_out.append(delta.get("text", ""))
                                yield StreamDelta(text=delta.get("text", ""))
                            elif delta.get("type") == "input_json_delta":
                                index = tool_index.get(event.get("index", 0), 0)
                                yield StreamDelta(tool_calls=[{"index": index, "function": {
                                    "arguments": delta.get("partial_json", "")}}])
                        elif kind == "message_delta":
                            reason = (event.get("delta") or {}).get("stop_reason")
                            finish_reason = STOP_REASONS.get(reason, "stop") if reason else finish_reason
                            tokens_out = (event.get("usage") or {}).get("output_tokens", tokens_out)
                        elif kind == "message_stop":
                            complete = True
                            break
                        elif kind == "error":
                            error = event.get("error") or {}
                            raise ProviderError(f"upstream stream failed: {str(error.get('message', ''))[:200]}",
                                                retryable=error.get("type") in RETRYABLE_ERROR_TYPES,
                                                kind="upstream_error")
            except httpx.HTTPError as exc:
                raise transport_failure(exc, model.provider) from None
        if not complete:
            raise stream_cut()
        estimated = tokens_in is None or tokens_out is None
        yield StreamDelta(finish_reason=finish_reason or "stop",
                          tokens_in=tokens_in if tokens_in is not None else estimate_tokens(messages_text(request.messages)),
                          tokens_out=tokens_out if tokens_out is not None else estimate_tokens("".join(text_out)),
                          tokens_estimated=estimated)

"""The fake upstream's other dialects: Anthropic's Messages API and Ollama's chat API.

Routes: `POST /v1/messages` (Anthropic; JSON or server-sent events) and `POST /api/chat` (Ollama;
JSON or NDJSON, streaming unless `"stream": false`, as Ollama does). Faults come from the same
queue / default / model name as the OpenAI route (see podium/fake_upstream.py), plus:

  "rate-limit:0.3"   HTTP 429 with Retry-After: 0.3
  "slow:0.8"         sleeps 0.8 s before answering
  "overloaded"       Anthropic's HTTP 529 overloaded_error (Ollama: 503)
  "stream-error"     a stream that starts, then reports an error event (Anthropic) or line (Ollama)
  "no-usage"         an answer without token counts

Ollama answers with token log-probabilities when the body asks (`"logprobs": true`), as Ollama >= 0.12.11
does: a top-level `"logprobs": [{"token", "logprob", "bytes"}]` list, one entry a word, in the JSON
answer and on each streamed line (with `top_logprobs` too when asked). Each token's logprob comes from
markers in the last user message (see `token_logprob`, shared with the OpenAI route).
"""
from __future__ import annotations

import asyncio
import json
import re
import time

from aiohttp import web


def _last_user_text(messages) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _text(content) -> str:
    if isinstance(content, list):  # Anthropic content blocks
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return content if isinstance(content, str) else json.dumps(content)


DEFAULT_LOGPROB = -0.25  # exp(-0.25) ~ 0.78; tests of the /v1 pass-through expect this value
LOGPROB_MARKERS = {"[confident]": -0.02, "[diffuse]": -1.6}  # exp: ~0.98 and ~0.20 a token
LOGPROB_VALUE = re.compile(r"\[logprob=(-?\d+(?:\.\d+)?)\]")


def token_logprob(prompt: str) -> float:
    """Every answer token's logprob: `[logprob=-0.7]` sets any value, `[confident]` -0.02, `[diffuse]` -1.6,
    else -0.25. Lets a test ask for a sure answer or an unsure one without a real model."""
    if match := LOGPROB_VALUE.search(prompt):
        return float(match.group(1))
    for marker, value in LOGPROB_MARKERS.items():
        if marker in prompt:
            return value
    return DEFAULT_LOGPROB


def _ollama_logprobs(body: dict, tokens: list[str], logprob: float) -> dict:
    """Ollama's top-level `logprobs` field for these tokens, or nothing when the body did not ask."""
    if not body.get("logprobs"):
        return {}
    items = []
    for token in tokens:
        item = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
        if body.get("top_logprobs"):
            item["top_logprobs"] = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
        items.append(item)
    return {"logprobs": items}


def _tokens(messages) -> int:
    """One token a word, as the OpenAI route counts."""
    return sum(len(_text(m.get("content", "")).split()) for m in messages or [] if isinstance(m, dict))


async def _take(upstream, request: web.Request) -> tuple[dict, str]:
    """The request body and the fault to play (queued, else the default, else the model name)."""
    body = await request.json()
    upstream.model_counts[body.get("model", "")] += 1
    if upstream.record_requests:
        upstream.requests.append({"path": request.path, "body": body, "headers": dict(request.headers),
                                  "at": time.time()})
    fault = upstream.faults.popleft() if upstream.faults else (upstream.default_fault or body.get("model", ""))
    if upstream.delay_s:
        await asyncio.sleep(upstream.delay_s)
    return body, fault


async def _common_fault(fault: str, request: web.Request, error_body) -> web.StreamResponse | None:
    if fault == "fail-500":
        return web.json_response(error_body("api_error", "internal failure"), status=500)
    if fault.startswith("rate-limit"):
        retry_after = fault.partition(":")[2] or "1"
        return web.json_response(error_body("rate_limit_error", "slow down"), status=429,
                                 headers={"Retry-After": retry_after})
    if fault == "malformed":
        return web.Response(text="{not json", content_type="application/json")
    if fault == "reset":
        request.transport.close()
        return web.Response(status=500)
    if fault == "slow" or fault.startswith("slow:"):
        await asyncio.sleep(float(fault.partition(":")[2] or 5))
    return None


# --- Anthropic --------------------------------------------------------------------------------------
def _anthropic_error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


async def anthropic_messages(upstream, request: web.Request) -> web.StreamResponse:
    if upstream.api_key and request.headers.get("x-api-key") != upstream.api_key:
        return web.json_response(_anthropic_error("authentication_error", "invalid x-api-key"), status=401)
    if not request.headers.get("anthropic-version"):
        return web.json_response(_anthropic_error("invalid_request_error", "anthropic-version header is required"),
                                 status=400)
    body, fault = await _take(upstream, request)
    if "max_tokens" not in body:
        return web.json_response(_anthropic_error("invalid_request_error", "max_tokens: Field required"), status=400)
    if fault == "overloaded":
        return web.json_response(_anthropic_error("overloaded_error", "Overloaded"), status=529)
    if (response := await _common_fault(fault, request, _anthropic_error)) is not None:
        return response
    text = "echo: " + _last_user_text(body.get("messages"))
    usage = {} if fault == "no-usage" else {"input_tokens": _tokens(body.get("messages")),
                                            "output_tokens": len(text.split())}
    tool = body["tools"][0]["name"] if body.get("tools") else None
    if body.get("stream"):
        return await _anthropic_stream(request, body, text, usage, tool, fault)
    content = ([{"type": "tool_use", "id": "toolu_1", "name": tool, "input": {"city": "Paris"}}] if tool
               else [{"type": "text", "text": text}])
    return web.json_response({"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
                              "content": content, "stop_reason": "tool_use" if tool else "end_turn",
                              "stop_sequence": None, "usage": usage})


async def _anthropic_stream(request, body, text, usage, tool, fault) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)

    async def send(event: dict) -> None:
        await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

    await send({"type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"), "content": [],
        "stop_reason": None, "usage": {k: v for k, v in usage.items() if k == "input_tokens"} | {"output_tokens": 1}}})
    await send({"type": "ping"})
    if fault == "stream-error":
        await send(_anthropic_error("overloaded_error", "Overloaded"))
        return response
    if tool:
        await send({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}})
        for piece in ('{"city": ', '"Paris"}'):
            await send({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece}})
    else:
        await send({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        for index, word in enumerate(text.split(" ")):
            if fault == "cut-stream" and index == 2:
                request.transport.close()
                return response
            await send({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": (" " if index else "") + word}})
    await send({"type": "content_block_stop", "index": 0})
    await send({"type": "message_delta", "delta": {"stop_reason": "tool_use" if tool else "end_turn",
                                                   "stop_sequence": None},
                "usage": {k: v for k, v in usage.items() if k == "output_tokens"}})
    await send({"type": "message_stop"})
    return response


# --- Ollama -----------------------------------------------------------------------------------------
async def ollama_chat(upstream, request: web.Request) -> web.StreamResponse:
    body, fault = await _take(upstream, request)
    if fault == "overloaded":
        return web.json_response({"error": "server busy, please try again"}, status=503)
    if (response := await _common_fault(fault, request, lambda kind, message: {"error": message})) is not None:
        return response
    prompt = _last_user_text(body.get("messages"))
    text = "echo: " + prompt
    usage = {} if fault == "no-usage" else {"prompt_eval_count": _tokens(body.get("messages")),
                                            "eval_count": len(text.split())}
    tool = body["tools"][0]["function"]["name"] if body.get("tools") else None
    base = {"model": body.get("model"), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    logprob = token_logprob(prompt)
    if body.get("stream", True):
        return await _ollama_stream(request, base, text, usage, tool, fault, body, logprob)
    message = ({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": tool,
                                                                                   "arguments": {"city": "Paris"}}}]}
               if tool else {"role": "assistant", "content": text})
    logprobs = {} if tool else _ollama_logprobs(body, text.split(" "), logprob)
    return web.json_response({**base, "message": message, "done": True, "done_reason": "stop",
                              "total_duration": 1000, **usage, **logprobs})


async def _ollama_stream(request, base, text, usage, tool, fault, body, logprob) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
    await response.prepare(request)

    async def send(line: dict) -> None:
        await response.write(json.dumps(line).encode() + b"\n")

    if tool:
        await send({**base, "message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": tool, "arguments": {"city": "Paris"}}}]}, "done": False})
    else:
        for index, word in enumerate(text.split(" ")):
            if fault == "cut-stream" and index == 2:
                request.transport.close()
                return response
            if fault == "stream-error" and index == 1:
                await send({"error": "model runner has unexpectedly stopped"})
                return response
            piece = (" " if index else "") + word
            await send({**base, "message": {"role": "assistant", "content": piece}, "done": False,
                        **_ollama_logprobs(body, [piece], logprob)})
    await send({**base, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                "total_duration": 1000, **usage})
    return response


def add_routes(upstream) -> None:
    async def messages(request: web.Request) -> web.StreamResponse:
        return await anthropic_messages(upstream, request)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await ollama_chat(upstream, request)

    upstream.app.router.add_post("/v1/messages", messages)
    upstream.app.router.add_post("/api/chat", chat)

"""A fake OpenAI-compatible upstream on loopback, for tests, benchmarks and demos.

Raw aiohttp, fast enough not to be the bottleneck of a gateway benchmark. Faults are
injected per request by the model name (so one server can serve healthy and sick
models at once) or queued with `FakeUpstream.inject()`:

  model "fail-500"       HTTP 500
  model "rate-limit"     HTTP 429 with Retry-After: 1 ("rate-limit:0.3": Retry-After: 0.3)
  model "malformed"      a 200 whose body is not JSON
  model "reset"          the connection is closed without an answer
  model "slow"           sleeps 5 s (for timeouts; "slow:0.8" sleeps 0.8 s)
  model "cut-stream"     a stream that stops after two chunks without [DONE]
  model "slow-stream"    a stream of 100 words, 0.1 s apart (for clients that leave midway)
  a request with tools   answers with a call to the first tool (streamed as tool-call deltas if asked)
  anything else          echoes the last user message as "echo: <text>"

A body with `"logprobs": true` gets each answer word's log-probability, as OpenAI sends them: under
`choices[i].logprobs.content` of the answer, or of each streamed chunk that carries a word. Every
token's value comes from markers in the last user message (podium/fake_dialects.py `token_logprob`):

  "[confident]"          -0.02 a token (a confidence of ~0.98)
  "[diffuse]"            -1.6 a token (~0.20)
  "[logprob=-0.7]"       any value
  none                   -0.25 (~0.78)

`default_fault` plays one fault on every request when none is queued. The same server also speaks
Anthropic's Messages API and Ollama's chat API (podium/fake_dialects.py).

Run standalone: python -m podium.fake_upstream --port 9100 --delay-ms 50
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter, deque

from aiohttp import web

from podium.fake_dialects import add_routes as add_dialect_routes, token_logprob


def _last_user_text(messages) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class FakeUpstream:
    def __init__(self, delay_ms: float = 0.0, api_key: str | None = None):
        self.delay_s = delay_ms / 1000
        self.api_key = api_key
        self.faults: deque[str] = deque()
        self.default_fault: str | None = None  # played on every request when none is queued (a sick provider)
        self.requests: list[dict] = []
        self.record_requests = True
        self.model_counts: Counter[str] = Counter()  # chat requests by model, even when not recording
        self.stream_outcomes: list[str] = []  # "completed" or "aborted" (the client closed the connection)
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/embeddings", self.embeddings)
        add_dialect_routes(self)  # Anthropic /v1/messages and Ollama /api/chat
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_get("/v1/fake/stats", self.stats)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------
    def inject(self, *faults: str) -> None:
        """Queue faults for the next requests, whatever their model."""
        self.faults.extend(faults)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The base URL for the Anthropic and Ollama dialects (podium/fake_dialects.py)."""
        return f"http://127.0.0.1:{self.port}"

    # --- handlers -------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad key", "type": "authentication_error"}}, status=401)
        body = await request.json()
        self.model_counts[body.get("model", "")] += 1
        if self.record_requests:
            self.requests.append({"body": body, "headers": dict(request.headers), "at": time.time()})
        fault = self.faults.popleft() if self.faults else (self.default_fault or body.get("model", ""))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault == "fail-500":
            return web.json_response({"error": {"message": "internal failure", "type": "server_error"}}, status=500)
        if fault.startswith("rate-limit"):
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit"}}, status=429,
                                     headers={"Retry-After": fault.partition(":")[2] or "1"})
        if fault == "malformed":
            return web.Response(text="{not json", content_type="application/json")
        if fault == "reset":
            request.transport.close()
            return web.Response(status=500)
        if fault == "slow" or fault.startswith("slow:"):
            await asyncio.sleep(float(fault.partition(":")[2] or 5))
        text = "echo: " + _last_user_text(body.get("messages"))
        if body.get("tools") and body.get("stream"):
            return await self._stream_tool_call(request, body)
        if body.get("tools"):
            return web.json_response(self._tool_call_completion(body))
        if fault == "slow-stream":
            text = " ".join(f"word{i}" for i in range(100))
        if body.get("stream"):
            return await self._stream(request, body, text, cut=fault == "cut-stream",
                                      pause_s=0.1 if fault == "slow-stream" else 0.0)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         **self._logprobs(body, text.split(" "))} for i in range(int(body.get("n") or 1))],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_tokens + len(text.split())},
        })

    @staticmethod
    def _logprobs(body: dict, tokens: list[str]) -> dict:
        """A choice's `logprobs` field for these tokens, or nothing when the body did not ask."""
        if not body.get("logprobs"):
            return {}
        logprob = token_logprob(_last_user_text(body.get("messages")))
        return {"logprobs": {"content": [{"token": word, "logprob": logprob, "bytes": None, "top_logprobs": []}
                                         for word in tokens]}}

    def _tool_call_completion(self, body: dict) -> dict:
        tool = body["tools"][0]["function"]["name"]
        return {
            "id": "chatcmpl-fake-tool", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": tool, "arguments": json.dumps({"city": "Paris"})}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    async def _stream_tool_call(self, request, body) -> web.StreamResponse:
        """The tool call of `_tool_call_completion` as OpenAI streams it: id and name first, arguments in pieces."""
        tool = body["tools"][0]["function"]["name"]
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": tool, "arguments": ""}}
        deltas = [{"role": "assistant", "content": None, "tool_calls": [first]}]
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                   for piece in ('{"city"', ': "Par', 'is"}')]
        for delta in deltas:
            chunk = {"id": "chatcmpl-fake-tool", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": body.get("model"), "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        final = {"id": "chatcmpl-fake-tool", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": body.get("model"), "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        return response

    async def _stream(self, request, body, text, cut: bool, pause_s: float = 0.0) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        try:
            await response.prepare(request)
        except ConnectionError:  # the client left while we were "thinking" (benchmarks end rounds this way)
            self.stream_outcomes.append("aborted")
            return response
        words = text.split(" ")
        for index, word in enumerate(words):
            if cut and index == 2:
                request.transport.close()
                return response
            piece = (" " if index else "") + word
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": body.get("model"),
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None,
                                  **self._logprobs(body, [piece])}]}
            try:
                if pause_s:
                    await asyncio.sleep(pause_s)
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            except (ConnectionError, asyncio.CancelledError):
                self.stream_outcomes.append("aborted")
                raise
        final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": body.get("model"), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        self.stream_outcomes.append("completed")
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.record_requests:
            self.requests.append({"path": request.path, "body": body, "headers": dict(request.headers),
                                  "at": time.time()})
        fault = self.faults.popleft() if self.faults else (self.default_fault or body.get("model", ""))
        if fault == "fail-500":
            return web.json_response({"error": {"message": "internal failure", "type": "server_error"}}, status=500)
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(str(text))), 0.5, -0.25]}
                for i, text in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body.get("model"),
                                  "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"chat_requests_by_model": dict(self.model_counts)})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    # --- lifecycle ----------------------------------------------------------------
    async def _start(self, port: int) -> None:
        # stop() cancels a handler still sleeping (a "slow" fault whose client gave up) after 0.5 s, not aiohttp's 60.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start_in_thread(self, port: int = 0) -> "FakeUpstream":
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start(port))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    upstream = FakeUpstream(delay_ms=args.delay_ms)
    upstream.record_requests = False
    web.run_app(upstream.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

"""A fake OpenAI-compatible upstream on loopback, for tests, benchmarks and demos.

Raw aiohttp, fast enough not to be the bottleneck of a gateway benchmark. Faults are
injected per request by the model name (so one server can serve healthy and sick
models at once) or queued with `FakeUpstream.inject()`:

  model "fail-500"       HTTP 500
  model "rate-limit"     HTTP 429 with Retry-After: 1
  model "malformed"      a 200 whose body is not JSON
  model "reset"          the connection is closed without an answer
  model "slow"           sleeps 5 s (for timeouts)
  model "cut-stream"     a stream that stops after two chunks without [DONE]
  anything else          echoes the last user message as "echo: <text>"

Run standalone: python -m podium.fake_upstream --port 9100 --delay-ms 50
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import deque

from aiohttp import web


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
        self.requests: list[dict] = []
        self.record_requests = True
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/embeddings", self.embeddings)
        self.app.router.add_get("/v1/models", self.models)
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

    # --- handlers -------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad key", "type": "authentication_error"}}, status=401)
        body = await request.json()
        if self.record_requests:
            self.requests.append({"body": body, "headers": dict(request.headers), "at": time.time()})
        fault = self.faults.popleft() if self.faults else body.get("model", "")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault == "fail-500":
            return web.json_response({"error": {"message": "internal failure", "type": "server_error"}}, status=500)
        if fault == "rate-limit":
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit"}}, status=429,
                                     headers={"Retry-After": "1"})
        if fault == "malformed":
            return web.Response(text="{not json", content_type="application/json")
        if fault == "reset":
            request.transport.close()
            return web.Response(status=500)
        if fault == "slow":
            await asyncio.sleep(5)
        text = "echo: " + _last_user_text(body.get("messages"))
        if body.get("tools"):
            return web.json_response(self._tool_call_completion(body))
        if body.get("stream"):
            return await self._stream(request, body, text, cut=fault == "cut-stream")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_tokens + len(text.split())},
        })

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

    async def _stream(self, request, body, text, cut: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        words = text.split(" ")
        for index, word in enumerate(words):
            if cut and index == 2:
                request.transport.close()
                return response
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": body.get("model"),
                     "choices": [{"index": 0, "delta": {"content": (" " if index else "") + word}, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": body.get("model"), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(str(text))), 0.5, -0.25]}
                for i, text in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body.get("model"),
                                  "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    # --- lifecycle ----------------------------------------------------------------
    async def _start(self, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
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

"""The least a Python gateway can do: a reference target for bench/gateway_overhead.py.

An ASGI app that reads the request, picks the upstream by the body's `model`, forwards the bytes on one
pooled aiohttp session and relays the answer (chunk by chunk when streamed). No keys, no records, no
events, no retries: what it adds over calling the upstream directly is the cost of the server (uvicorn),
the client (aiohttp) and the extra hop on this machine, which every Python gateway pays before doing
any work of its own. Podium's own share is its added latency minus this one's, in the same round.

    MINIMAL_PROXY_UPSTREAMS='{"bench-50ms": "http://127.0.0.1:9100/v1"}' uvicorn bench.minimal_proxy:app
"""
from __future__ import annotations

import json
import os

import aiohttp
import orjson

UPSTREAMS: dict[str, str] = json.loads(os.environ.get("MINIMAL_PROXY_UPSTREAMS", "{}"))
_session: list[aiohttp.ClientSession] = []


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if not _session:
        _session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)))
    if not scope["path"].startswith("/v1/"):  # anything else is the readiness check
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    upstream = UPSTREAMS.get(orjson.loads(body).get("model"), "")
    if not upstream:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"unknown model"})
        return
    async with _session[0].post(f"{upstream}/chat/completions", data=body,
                                headers={"content-type": "application/json"}) as response:
        headers = [(b"content-type", response.headers.get("content-type", "application/json").encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session:
                await _session[0].close()
            await send({"type": "lifespan.shutdown.complete"})
            return

"""Helpers for tests that speak the dashboard protocol over a real websocket."""
from __future__ import annotations

import asyncio
import json

import httpx

from tests.livehelpers import next_event


async def subscribe(socket, topic: str) -> dict:
    """Subscribe and return the topic's snapshot frame."""
    await socket.send(json.dumps({"type": "subscribe", "topic": topic}))
    return await next_event(socket, lambda f: f["type"] == "snapshot" and f["topic"] == topic)


async def frames_until(socket, predicate, timeout: float = 5.0) -> list[dict]:
    """Every frame received until one matches predicate (included)."""
    frames = []

    async def scan():
        while True:
            frame = json.loads(await socket.recv())
            frames.append(frame)
            if predicate(frame):
                return frames
    return await asyncio.wait_for(scan(), timeout)


class TopicMirror:
    """A client's copy of one topic, kept the way the browser keeps it (seq checked, values absolute)."""

    def __init__(self, snapshot: dict) -> None:
        self.topic = snapshot["topic"]
        self.seq = snapshot["seq"]
        self.values = dict(snapshot["data"]["values"])
        self.streams = {name: list(items) for name, items in snapshot["data"]["streams"].items()}
        self.gaps = 0

    def apply(self, frame: dict) -> bool:
        """Apply a frame of this topic; False when it shows a gap (the client must resync)."""
        if frame.get("topic") != self.topic or frame["type"] not in ("delta", "metrics.tick"):
            return True
        if frame["seq"] <= self.seq:
            return True
        if frame["seq"] != self.seq + 1:
            self.gaps += 1
            return False
        self.seq = frame["seq"]
        for key, value in frame["changes"].items():
            if value is None:
                self.values.pop(key, None)
            else:
                self.values[key] = value
        for name, items in frame.get("appends", {}).items():
            self.streams[name] = (items + self.streams.get(name, []))[:25]
        return True


async def chat(server, api_key: str, model: str, content: str, client: httpx.AsyncClient | None = None):
    async def call(http):
        return await http.post(f"{server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                               json={"model": model, "messages": [{"role": "user", "content": content}]})
    if client is not None:
        return await call(client)
    async with httpx.AsyncClient(timeout=30) as http:
        return await call(http)


def publish_in_server(*events: dict) -> None:
    """Publish events from inside the live server's event loop, as the engine or a service would."""
    from dashboard.hub import running_hubs
    from orchestration import live

    loop = next(hub.loop for hub in running_hubs() if hub.loop.is_running())

    async def emit():
        for event in events:
            live.publish(event)
    asyncio.run_coroutine_threadsafe(emit(), loop).result(5)

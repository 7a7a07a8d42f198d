"""The exact-match response cache: the interface the engine uses and an in-memory LRU default.

The key is the sha256 of the model (alias and upstream name), the messages as sent to the provider
(after PII redaction), the sampling parameters (every request parameter except the few that do
not change the answer) and the caller's cache space (`ctx.meta["cache_scope"]`: the team, so one
team's answer is never served to another). A model caches only when its `cache_ttl_s` is above 0; a request opts out
with `Engine.call_model(..., cache=False)` (on /v1: `"podium": {"cache": false}`). The Django side
plugs Django's cache in (`orchestration/response_cache.py`; Redis in production).
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Protocol

import orjson

from orchestration.engine.types import ChatRequest, ChatResult, ModelSpec

# Request parameters that do not change the answer, so do not split the cache.
IGNORED_PARAMS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})


class ResponseCache(Protocol):
    """Must not raise for a miss; may raise for a broken backend (the engine then treats it as a miss)."""

    async def get(self, key: str) -> dict | None: ...

    async def set(self, key: str, value: dict, ttl_s: int) -> None: ...


def cache_key(model: ModelSpec, request: ChatRequest, scope: str = "") -> str:
    """`scope` splits the cache into spaces that never share an answer (a team's: "team:<id>"); "" is the
    operator space, keyed as before spaces existed."""
    params = {name: value for name, value in request.params.items() if name not in IGNORED_PARAMS}
    parts = [model.alias, model.upstream_name, request.messages, params] + ([scope] if scope else [])
    material = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(material).hexdigest()


def entry_from_result(result: ChatResult) -> dict:
    return {"text": result.text, "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
            "tokens_estimated": result.tokens_estimated, "finish_reason": result.finish_reason,
            "tool_calls": result.tool_calls, "confidence": result.confidence,
            "confidence_signals": result.confidence_signals}


def result_from_entry(entry: dict) -> ChatResult:
    return ChatResult(text=entry["text"], tokens_in=entry["tokens_in"], tokens_out=entry["tokens_out"],
                      tokens_estimated=entry.get("tokens_estimated", False),
                      finish_reason=entry.get("finish_reason") or "stop", tool_calls=entry.get("tool_calls"),
                      confidence=entry.get("confidence"), confidence_signals=entry.get("confidence_signals"))


class MemoryResponseCache:
    """A bounded LRU with per-entry expiry; thread-safe, so one instance can serve several event loops."""

    def __init__(self, max_entries: int = 2048, clock=time.monotonic):
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, dict]] = OrderedDict()

    async def get(self, key: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

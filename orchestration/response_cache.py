"""The engine's response cache on Django's cache: Redis in production (shared by every process),
local memory in the embedded mode.

Entries are split by team (`cache_scope`, part of the key: engine/cache.py): one team's answer is never
served to another. Keys with no team (operators') share one space, as before teams."""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

KEY_PREFIX = "podium:response:"


def cache_scope(team_id: int | None) -> str:
    """The cache space of a call made for this team ("" = the operator space: keys and runs with no team)."""
    return f"team:{team_id}" if team_id is not None else ""


class DjangoResponseCache:
    """Implements `orchestration.engine.cache.ResponseCache`.

    Local memory is read in the event loop (it never blocks); any other backend runs in a worker
    thread, off the loop, and not in the single thread-sensitive executor the ORM uses.
    """

    def __init__(self, alias: str = "default"):
        self.alias = alias

    async def get(self, key: str) -> dict | None:
        backend = caches[self.alias]
        if isinstance(backend, LocMemCache):
            return backend.get(KEY_PREFIX + key)
        return await sync_to_async(backend.get, thread_sensitive=False)(KEY_PREFIX + key)

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        backend = caches[self.alias]
        if isinstance(backend, LocMemCache):
            backend.set(KEY_PREFIX + key, value, timeout=ttl_s)
            return
        await sync_to_async(backend.set, thread_sensitive=False)(KEY_PREFIX + key, value, timeout=ttl_s)

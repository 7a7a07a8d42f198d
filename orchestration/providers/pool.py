"""Shared upstream HTTP clients: one pooled httpx client per provider and event loop.

httpx's own pool serialises under concurrency (PERFORMANCE-NOTES.md §1), so the
clients ride on the aiohttp transport from `httpx-aiohttp`.
"""
from __future__ import annotations

import asyncio
import weakref

import httpx
from httpx_aiohttp import AiohttpTransport

from orchestration.engine.types import ProviderSpec

# loop -> {provider key -> (client, semaphore)}; entries vanish with their loop.
_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()


def _key(provider: ProviderSpec) -> tuple:
    return (provider.name, provider.base_url, provider.max_concurrency, provider.timeout_s)


def _entry(provider: ProviderSpec) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
    loop = asyncio.get_running_loop()
    per_loop = _by_loop.setdefault(loop, {})
    key = _key(provider)
    entry = per_loop.get(key)
    if entry is None:
        limits = httpx.Limits(max_connections=provider.max_concurrency,
                              max_keepalive_connections=provider.max_concurrency)
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            timeout=httpx.Timeout(provider.timeout_s),
            limits=limits,
        )
        entry = (client, asyncio.Semaphore(provider.max_concurrency))
        per_loop[key] = entry
    return entry


def client_for(provider: ProviderSpec) -> httpx.AsyncClient:
    return _entry(provider)[0]


def concurrency_limit(provider: ProviderSpec) -> asyncio.Semaphore:
    """At most `max_concurrency` calls in flight to one provider from this process."""
    return _entry(provider)[1]


async def close_clients() -> None:
    """Close this loop's clients (call before the loop ends, e.g. at the end of a worker task)."""
    loop = asyncio.get_running_loop()
    per_loop = _by_loop.pop(loop, {})
    for client, _ in per_loop.values():
        await client.aclose()

"""Shared upstream HTTP clients: one pooled httpx client per provider and event loop.

httpx's own pool serialises under concurrency (PERFORMANCE-NOTES.md §1), so the
clients ride on the aiohttp transport from `httpx-aiohttp`. The /v1 hot path (the
openai_compatible adapter) uses the aiohttp session underneath directly, through
`session_for`: the same connections, without httpx's own per-request cost (its request
and response objects were about half of the gateway's CPU per call).
"""
from __future__ import annotations

import asyncio
import weakref

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from orchestration.engine.types import ProviderSpec

# loop -> {provider key -> (client, semaphore)}; entries vanish with their loop.
_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()
# loop -> {(provider name, max concurrency) -> semaphore}
_semaphores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()


def _key(provider: ProviderSpec) -> tuple:
    return (provider.name, provider.base_url, provider.max_concurrency, provider.timeout_s)


def _entry(provider: ProviderSpec) -> tuple[httpx.AsyncClient, asyncio.Semaphore, aiohttp.ClientSession]:
    loop = asyncio.get_running_loop()
    per_loop = _by_loop.setdefault(loop, {})
    key = _key(provider)
    entry = per_loop.get(key)
    if entry is None:
        limits = httpx.Limits(max_connections=provider.max_concurrency,
                              max_keepalive_connections=provider.max_concurrency)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=provider.max_concurrency),
                                        timeout=aiohttp.ClientTimeout(total=provider.timeout_s))
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits, client=session),
            timeout=httpx.Timeout(provider.timeout_s),
            limits=limits,
        )
        entry = (client, concurrency_limit(provider), session)
        per_loop[key] = entry
    return entry


def client_for(provider: ProviderSpec) -> httpx.AsyncClient:
    return _entry(provider)[0]


def session_for(provider: ProviderSpec) -> aiohttp.ClientSession:
    """The aiohttp session under `client_for(provider)`: same pool, no httpx layer (for the hot path)."""
    return _entry(provider)[2]


def concurrency_limit(provider: ProviderSpec) -> asyncio.Semaphore:
    """At most `max_concurrency` calls in flight to one provider from this process (and loop).

    Kept apart from the clients so that providers without HTTP (the mock) share the limit without a client.
    """
    per_loop = _semaphores.setdefault(asyncio.get_running_loop(), {})
    key = (provider.name, provider.max_concurrency)
    semaphore = per_loop.get(key)
    if semaphore is None:
        semaphore = per_loop[key] = asyncio.Semaphore(provider.max_concurrency)
    return semaphore


async def close_clients() -> None:
    """Close this loop's clients (call before the loop ends, e.g. at the end of a worker task)."""
    loop = asyncio.get_running_loop()
    per_loop = _by_loop.pop(loop, {})
    for client, *_ in per_loop.values():
        await client.aclose()  # closes its aiohttp session too

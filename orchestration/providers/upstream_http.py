"""What every HTTP adapter needs: classifying failures and reading a response line by line."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx

from orchestration.engine.types import ProviderError, ProviderSpec
from orchestration.providers.openai_compatible import parse_retry_after

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def transport_failure(exc: httpx.HTTPError, provider: ProviderSpec) -> ProviderError:
    """A retryable ProviderError naming what happened on the wire.

    httpx-aiohttp maps every aiohttp connection error (a reset included) to httpx.ConnectTimeout,
    so the aiohttp cause decides between a timeout and a broken connection.
    """
    cause = exc.__cause__
    if isinstance(cause, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)) or (
            cause is None and isinstance(exc, httpx.TimeoutException)):
        return ProviderError(f"upstream timed out after {provider.timeout_s:g}s", retryable=True, kind="timeout")
    name = type(cause).__name__ if isinstance(cause, aiohttp.ClientError) else type(exc).__name__
    return ProviderError(f"upstream connection failed: {name}", retryable=True, kind="connection_error")


def status_failure(response: httpx.Response, detail: str) -> ProviderError:
    status = response.status_code
    message = f"upstream answered HTTP {status}" + (f": {detail[:200]}" if detail else "")
    return ProviderError(message, status=status, retryable=status in RETRYABLE_STATUSES or status >= 500,
                         retry_after=parse_retry_after(response.headers.get("retry-after")),
                         kind="rate_limited" if status == 429 else "upstream_error")


def malformed(what: str = "upstream returned malformed JSON", status: int | None = None) -> ProviderError:
    return ProviderError(what, status=status, retryable=True, kind="bad_response")


def stream_cut() -> ProviderError:
    # A connection that ends cleanly but early must not pass for a finished answer.
    return ProviderError("upstream stream ended before it was complete", retryable=True, kind="stream_cut")


async def response_lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's lines without their line ends (server-sent events, NDJSON)."""
    buffer = b""
    async for data in response.aiter_bytes():
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if buffer:
        yield buffer.rstrip(b"\r")

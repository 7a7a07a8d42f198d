"""Helpers for tests that drive the engine directly (no Django) against the fake upstream on loopback."""
from __future__ import annotations

import asyncio
import time
import uuid

from orchestration.engine.cache import MemoryResponseCache
from orchestration.engine.circuit_breaker import BreakerSettings, CircuitBreakers
from orchestration.engine.events import ListSink
from orchestration.engine.executor import Engine, RunContext
from orchestration.engine.registry import Registry
from orchestration.engine.resilience import RetryPolicy
from orchestration.engine.types import ChatRequest, ModelSpec, ProviderSpec
from orchestration.providers.pool import close_clients


def fake_model(upstream, alias: str, upstream_name: str | None = None, *, provider: str = "fake",
               kind: str = "openai_compatible", timeout_s: float = 2.0, is_local: bool = False,
               max_concurrency: int = 16, options: dict | None = None, api_key: str = "", **fields) -> ModelSpec:
    base_url = upstream.base_url if kind == "openai_compatible" else (upstream.root_url if upstream else "")
    spec = ProviderSpec(name=provider, kind=kind, base_url=base_url, api_key=api_key, timeout_s=timeout_s, is_local=is_local,
                        max_concurrency=max_concurrency, options=dict(options or {}))
    return ModelSpec(alias=alias, upstream_name=upstream_name or f"{alias}-upstream", provider=spec, **fields)


class SteppedClock:
    """time.monotonic that a test can move forward: cooldowns pass when the test says, not when a slow machine does."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def quick_engine(*, retries: int = 2, base_delay_s: float = 0.01, failures: int = 5, cooldown_s: float = 30.0,
                 clock=time.monotonic, **settings) -> Engine:
    """An engine with its own breakers and cache (tests must not share state) and short backoff."""
    return Engine(retry=RetryPolicy(max_retries=retries, base_delay_s=base_delay_s, **settings),
                  breakers=CircuitBreakers(BreakerSettings(failures=failures, cooldown_s=cooldown_s), clock=clock),
                  cache=MemoryResponseCache())


def context(*models: ModelSpec, **fields) -> RunContext:
    registry = Registry(models={model.alias: model for model in models})
    return RunContext(run_id=str(uuid.uuid4()), registry=registry, sink=ListSink(), **fields)


def user(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}])


def run(coroutine_function):
    """Run an async test body in a fresh loop, closing that loop's pooled clients afterwards."""
    async def body():
        try:
            return await coroutine_function()
        finally:
            await close_clients()
    return asyncio.run(body())


def finished_steps(ctx: RunContext) -> list[dict]:
    return [event for event in ctx.sink.events if event["type"] == "step.finished"]


def health_events(ctx: RunContext) -> list[tuple[str, str]]:
    return [(event["model"], event["state"]) for event in ctx.sink.events if event["type"] == "model.health"]

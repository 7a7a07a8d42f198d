"""What the resilience layers cost per model call (policy, cache lookup, circuit breaker, retry wrapper, events).

Baseline, in the same run: the bare adapter call (`MockAdapter.chat` with 0 ms latency). Then
`Engine.call_model` on a local provider (no redaction), on a non-local provider with a prompt that
holds digits and an e-mail address (redaction runs), and a response-cache hit. Prints microseconds
per call and the ratio to the baseline; no network, no database.

    .venv/bin/python bench/resilience_overhead.py [--calls 20000]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestration.engine.cache import MemoryResponseCache  # noqa: E402
from orchestration.engine.circuit_breaker import CircuitBreakers  # noqa: E402
from orchestration.engine.executor import Engine, RunContext  # noqa: E402
from orchestration.engine.registry import Registry  # noqa: E402
from orchestration.engine.types import ChatRequest, ModelSpec, ProviderSpec  # noqa: E402
from orchestration.providers.mock import MockAdapter  # noqa: E402

PROMPT = [{"role": "system", "content": "You answer support questions for order 48213 in two sentences."},
          {"role": "user", "content": "Hi, I am jane@example.com, my parcel 7731 is late since 2026-11-02. Where is it?"}]


class NullSink:
    def emit(self, event: dict) -> None:
        pass


def model(alias: str, *, local: bool, cache_ttl_s: int = 0) -> ModelSpec:
    provider = ProviderSpec(name=f"mock-{alias}", kind="mock", base_url="", is_local=local, options={"latency_ms": 0})
    return ModelSpec(alias=alias, upstream_name=alias, provider=provider, cache_ttl_s=cache_ttl_s)


async def per_call_us(call, calls: int) -> float:
    for _ in range(200):
        await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int) -> None:
    local, cloud, cached = model("local", local=True), model("cloud", local=False), model("cached", local=True,
                                                                                            cache_ttl_s=3600)
    registry = Registry(models={m.alias: m for m in (local, cloud, cached)})
    engine = Engine(breakers=CircuitBreakers(), cache=MemoryResponseCache())
    request = ChatRequest(messages=PROMPT, params={"temperature": 0})
    adapter = MockAdapter()

    def ctx():
        return RunContext(run_id="bench", registry=registry, sink=NullSink())

    figures = {
        "bare adapter call (baseline)": await per_call_us(lambda: adapter.chat(local, request), calls),
        "call_model, local provider": await per_call_us(lambda: engine.call_model(ctx(), local, request), calls),
        "call_model, non-local (PII redacted)": await per_call_us(lambda: engine.call_model(ctx(), cloud, request), calls),
        "call_model, response-cache hit": await per_call_us(lambda: engine.call_model(ctx(), cached, request), calls),
    }
    baseline = figures["bare adapter call (baseline)"]
    for name, value in figures.items():
        print(f"{name:40s} {value:8.1f} us/call   x{value / baseline:5.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    asyncio.run(main(parser.parse_args().calls))

"""Ensemble concurrency: a `parallel` node with 4 branches of 1 s each (mock latency 1000 ms).

The issue's bar: the parallel node finishes in under 1.3 s. Baseline, in the same run: the same
4 calls as a `sequence` (one after the other, ~4 s). Prints both and the speed-up ratio; the
engine runs alone (no database, no server), so the figure is the executor's own overhead.

    .venv/bin/python bench/parallel_concurrency.py [--branches 4] [--latency-ms 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestration.engine.circuit_breaker import CircuitBreakers  # noqa: E402
from orchestration.engine.events import ListSink  # noqa: E402
from orchestration.engine.executor import Engine, RunContext  # noqa: E402
from orchestration.engine.registry import Registry  # noqa: E402
from orchestration.engine.types import ModelSpec, ProviderSpec  # noqa: E402
from orchestration.engine.workflow import run_workflow  # noqa: E402


def build(branches: int, latency_ms: float) -> tuple[Registry, dict, dict]:
    provider = ProviderSpec(name="mock", kind="mock", base_url="", is_local=True,
                            options={"latency_ms": latency_ms, "reply": "same answer"})
    models = {f"m{i}": ModelSpec(alias=f"m{i}", upstream_name=f"m{i}", provider=provider) for i in range(branches)}
    calls = [{"type": "call", "model": alias} for alias in models]
    parallel = {"root": {"type": "parallel", "branches": calls, "combine": {"strategy": "majority"}}}
    sequence = {"root": {"type": "sequence", "steps": calls}}
    return Registry(models=models), parallel, sequence


async def timed(engine: Engine, registry: Registry, spec: dict) -> float:
    started = time.perf_counter()
    await run_workflow(engine, RunContext(run_id="bench", registry=registry, sink=ListSink()), spec, "question")
    return time.perf_counter() - started


async def main(branches: int, latency_ms: float, rounds: int) -> None:
    registry, parallel, sequence = build(branches, latency_ms)
    engine = Engine(breakers=CircuitBreakers())
    parallel_s = [await timed(engine, registry, parallel) for _ in range(rounds)]
    sequence_s = await timed(engine, registry, sequence)
    best, median = min(parallel_s), statistics.median(parallel_s)
    print(f"parallel node, {branches} branches x {latency_ms:g} ms: median {median:.3f} s, best {best:.3f} s "
          f"over {rounds} rounds (bar: < 1.3 s for 4 x 1 s)")
    print(f"sequence baseline, same {branches} calls:           {sequence_s:.3f} s")
    print(f"speed-up: {sequence_s / median:.2f}x (ideal {branches}x); "
          f"overhead over one call: {(median - latency_ms / 1000) * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=1000.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.branches, args.latency_ms, args.rounds))

"""CPU per /v1 call inside Podium's process, against the bare upstream call measured in the same run.

    .venv/bin/python bench/v1_cpu.py [--calls 4000] [--concurrency 16] [--rounds 3] [--profile]
                                     [--stack embedded|production]

The gateway benchmark (`bench/gateway_overhead.py`) measures latency through a real HTTP server; this
one isolates what Podium's own code costs, which is what decides its added latency under concurrency
(calls queue behind each other's CPU on one core). It drives the `/v1` ASGI application directly
(no HTTP server in front: uvicorn's share is the same for any ASGI app), against the fake upstream
(`podium/fake_upstream.py`, 0 ms, its own process on another core), and counts the process's CPU time
over all its threads, the batched writer's included (its last rows are flushed inside the measurement).

The baseline, in the same process and run, is the least any gateway must do: the same POST to the same
upstream on an aiohttp session, the body read and returned. "Podium's own" is the difference.
`--profile` prints where Podium's part goes (cProfile, sorted by own time; cProfile inflates it).

It also prints each call's time to answer (until the response body is handed to the server; at
`--concurrency 1` what the call's client waits for beyond the upstream) against the bare call's: work
Podium does after the answer (recording, live events) counts in the CPU figure, not in this one.
`--stack production` runs the same with the production stack's PostgreSQL (a database of its own, dropped at
the end) and Redis (`--redis-db`, flushed), as `make up` does.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_overhead import POSTGRES_URL, REDIS_URL, free_port, wait_http, with_path  # noqa: E402

BODY = (b'{"model": "bench", "messages": [{"role": "user", "content": "How fast is this gateway?"}], '
        b'"max_tokens": 16}')


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def set_up_django(workdir: Path, upstream: str, production: dict | None) -> str:
    os.environ.update({"PODIUM_VAR_DIR": str(workdir), "SECRET_KEY": secrets.token_urlsafe(32),
                       "LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "config.settings"})
    for name in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        os.environ.pop(name, None)  # embedded mode, as in the gateway benchmark, unless --stack production
    os.environ.update(production or {})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from orchestration.models import APIKey, LLMModel, Provider

    provider = Provider.objects.create(name="fake", kind="openai_compatible", base_url=upstream, timeout_s=30,
                                       max_concurrency=256)
    LLMModel.objects.create(provider=provider, alias="bench", upstream_name="via-podium", price_in_per_m=1,
                            price_out_per_m=2)
    return APIKey.issue("bench")[1]


def production_stack(workdir: Path, redis_db: int) -> dict:
    """A PostgreSQL database of this run's own and a flushed Redis db: the environment `make up` gives Podium."""
    import psycopg
    import redis

    database = f"podium_v1cpu_{os.getpid()}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    redis_url = with_path(REDIS_URL, f"/{redis_db}")
    redis.Redis.from_url(redis_url, socket_timeout=5).flushdb()
    metrics_dir = workdir / "prometheus"
    metrics_dir.mkdir()
    return {"DATABASE_URL": with_path(POSTGRES_URL, "/" + database), "REDIS_URL": redis_url,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def drop_database(environment: dict) -> None:
    import psycopg

    from django.db import connections

    connections.close_all()
    database = environment["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def drive(call, calls: int, concurrency: int, waits: list | None = None) -> float:
    """CPU seconds (all threads) for `calls` calls, `concurrency` at a time; each call's time to answer
    (seconds, as the call returns it) appended to `waits`."""
    remaining = iter(range(calls))

    async def worker():
        for _ in remaining:
            waited = await call()
            if waits is not None:
                waits.append(waited)

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - started


def podium_call(application, key: str):
    from orchestration.gateway.writer import writer

    headers = [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(BODY)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}

    async def call() -> float:
        sent = []
        answered = []

        async def receive():
            return {"type": "http.request", "body": BODY, "more_body": False}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.append(time.perf_counter())

        started = time.perf_counter()
        await application(dict(scope), receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"Podium answered {sent[0]['status']}: {sent[1]['body'][:300]!r}")
        return answered[0] - started

    return call, writer


def bare_call(session, url: str):
    async def call() -> float:
        started = time.perf_counter()
        async with session.post(url, data=BODY, headers={"content-type": "application/json"}) as response:
            body = await response.read()
        if response.status != 200 or not body:
            raise RuntimeError(f"upstream answered {response.status}")
        return time.perf_counter() - started

    return call


async def measure(args, key: str, upstream: str) -> list[tuple[float, float, float, float]]:
    import aiohttp

    from config.asgi import application
    from orchestration.providers.pool import close_clients

    podium, writer = podium_call(application, key)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    bare = bare_call(session, f"{upstream}/chat/completions")
    await drive(podium, 200, args.concurrency)  # warm both paths (pools, caches, the writer's thread)
    await drive(bare, 200, args.concurrency)
    await asyncio.to_thread(writer.flush)
    results = []
    for round_ in range(args.rounds):
        bare_waits, podium_waits = [], []
        bare_cpu = await drive(bare, args.calls, args.concurrency, bare_waits)
        started = time.process_time()
        await drive(podium, args.calls, args.concurrency, podium_waits)
        await asyncio.to_thread(writer.flush)  # the rows of this round are part of its cost
        podium_cpu = time.process_time() - started
        results.append((bare_cpu / args.calls * 1e6, podium_cpu / args.calls * 1e6,
                        statistics.median(bare_waits) * 1e6, statistics.median(podium_waits) * 1e6))
        print(f"round {round_ + 1}: bare {results[-1][0]:.0f} µs/call, podium {results[-1][1]:.0f} µs/call; "
              f"time to answer p50: bare {results[-1][2]:.0f} µs, podium {results[-1][3]:.0f} µs", flush=True)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        await drive(podium, args.calls, args.concurrency)
        await asyncio.to_thread(writer.flush)
        profiler.disable()
        pstats.Stats(profiler).sort_stats(args.profile_sort).print_stats(args.profile_lines)
    await session.close()
    await close_clients()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="calls per target per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="then profile one more round of Podium")
    parser.add_argument("--profile-lines", type=int, default=40)
    parser.add_argument("--profile-sort", default="tottime", help="pstats order: tottime, cumulative, ...")
    parser.add_argument("--stack", choices=("embedded", "production"), default="embedded",
                        help="production: PostgreSQL and Redis, as `make up` runs (default: SQLite, in-process)")
    parser.add_argument("--upstream-delay-ms", type=int, default=0,
                        help="the fake upstream's latency (at --concurrency 1 and 50 ms: what is on the answer's path "
                             "while the upstream works, as in the gateway benchmark)")
    parser.add_argument("--redis-db", type=int, default=12, help="--stack production: the Redis db it flushes")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="podium-v1cpu-"))
    production = production_stack(workdir, args.redis_db) if args.stack == "production" else None
    port = free_port()
    upstream_process = subprocess.Popen([*pin(1), sys.executable, "-m", "podium.fake_upstream", "--port", str(port),
                                         "--delay-ms", str(args.upstream_delay_ms)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if pin(0):
            os.sched_setaffinity(0, {0})  # Podium on core 0, the upstream on core 1
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        upstream = f"http://127.0.0.1:{port}/v1"
        key = set_up_django(workdir, upstream, production)
        import uvloop

        results = uvloop.run(measure(args, key, upstream))
    finally:
        upstream_process.terminate()
        upstream_process.wait()
        if production:
            drop_database(production)
        shutil.rmtree(workdir, ignore_errors=True)
    bare, podium, bare_wait, podium_wait = (statistics.median(r[i] for r in results) for i in range(4))
    print(f"\n{args.stack} stack, concurrency {args.concurrency}, median of {args.rounds} rounds of {args.calls} calls")
    print(f"Time to answer, p50: bare {bare_wait:.0f} µs, through Podium {podium_wait:.0f} µs "
          f"(x{podium_wait / bare_wait:.2f}; Podium's own {podium_wait - bare_wait:.0f} µs before the answer)")
    print("CPU per call:")
    print(f"  bare upstream call (aiohttp, same process): {bare:.0f} µs")
    print(f"  through Podium's /v1 app (writer included): {podium:.0f} µs  (x{podium / bare:.2f} the bare call)")
    print(f"  Podium's own:                               {podium - bare:.0f} µs")


if __name__ == "__main__":
    main()

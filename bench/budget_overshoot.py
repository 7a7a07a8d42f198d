"""Budget overshoot (spent / budget) under 1, 10 and 100 concurrent callers, on one and two web processes.

    .venv/bin/python bench/budget_overshoot.py [--budget 0.01] [--redis-db 12] [--keep]

The production stack as bench/scaling.py starts it (its Bench: gunicorn with WEB_PROCESSES uvicorn workers,
PostgreSQL and Redis of the bench's own, the fake upstream at 0 ms). For each cell a fresh API key with a
lifetime budget of `--budget` USD is spent by N closed-loop callers (httpx, one connection each): each sends
`POST /v1/chat/completions` (a short prompt, max_tokens 16) until it is refused with 429 insufficient_quota.
Then, once the batched writers committed every call, the recorded spend of the key's runs is divided by the
budget; the upstream's request count and the runs recorded are compared as well (every call that reached the
upstream must be recorded). Target: 1.00 or less in every cell (Podium reserves each call's upper bound first);
how far below 1 a cell ends is what the last call's bound did not fit into. Prints figures only; no assertions.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scaling import PY, Bench  # noqa: E402

CONCURRENCY = (1, 10, 100)
BODY = {"model": "bench-0ms", "messages": [{"role": "user", "content": "How much is left of my budget?"}],
        "max_tokens": 16}


class OvershootBench(Bench):
    def shell(self, code: str) -> str:
        done = subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True)
        return done.stdout.strip().splitlines()[-1]

    def new_key(self, budget: str) -> tuple[int, str]:
        out = self.shell("from orchestration.models import APIKey\n"
                         f"key, raw = APIKey.issue('overshoot', scopes=['chat'], budget_usd='{budget}')\n"
                         "import json; print(json.dumps([key.id, raw]))")
        key_id, raw = json.loads(out)
        return key_id, raw

    def recorded(self, key_id: int) -> tuple[int, Decimal, Decimal]:
        """(runs, their cost, the key's spent_usd) from PostgreSQL."""
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as conn:
            runs, cost = conn.execute("SELECT count(*), coalesce(sum(cost_usd), 0) FROM orchestration_run "
                                      "WHERE api_key_id = %s", [key_id]).fetchone()
            spent = conn.execute("SELECT spent_usd FROM orchestration_apikey WHERE id = %s", [key_id]).fetchone()[0]
        return runs, Decimal(cost), Decimal(spent)

    def upstream_requests(self) -> int:
        with httpx.Client(timeout=10) as client:
            stats = client.get(f"http://127.0.0.1:{self.ports['upstream']}/v1/fake/stats").json()
        return int(stats["chat_requests_by_model"].get("via-podium", 0))


async def spend(url: str, raw: str, callers: int) -> tuple[int, int, int]:
    """N callers until each is refused by the budget: (succeeded, refused, other answers)."""
    counts = {"ok": 0, "refused": 0, "other": 0}

    async def caller(client: httpx.AsyncClient) -> None:
        while True:
            answer = await client.post("/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {raw}"})
            if answer.status_code == 200:
                counts["ok"] += 1
                continue
            if answer.status_code == 429 and answer.json()["error"]["code"] == "insufficient_quota":
                counts["refused"] += 1
                return
            counts["other"] += 1
            return

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=callers, max_keepalive_connections=callers)) as client:
        await asyncio.gather(*(caller(client) for _ in range(callers)))
    return counts["ok"], counts["refused"], counts["other"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="0.0100", help="USD per cell's key (4 decimals)")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis db number of the bench's own (not 0)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    if args.redis_db == 0:
        parser.error("--redis-db 0 is the default db: pick another, it is flushed")
    bench = OvershootBench(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = []
    try:
        key = bench.prepare()
        for processes in (1, 2):
            bench.start_web(processes, key)
        budget = Decimal(args.budget)
        print(f"{os.cpu_count()} cores; budget ${budget} a cell; fake upstream 0 ms; PostgreSQL + Redis", flush=True)
        for processes in (1, 2):
            url = f"http://127.0.0.1:{bench.ports[f'web{processes}']}"
            for callers in CONCURRENCY:
                key_id, raw = bench.new_key(args.budget)
                upstream_before = bench.upstream_requests()
                started = time.monotonic()
                ok, refused, other = asyncio.run(spend(url, raw, callers))
                wall = time.monotonic() - started
                time.sleep(1.0)  # the batched writers commit what is left (they flush every 0.25 s)
                runs, cost, spent = bench.recorded(key_id)
                upstream = bench.upstream_requests() - upstream_before
                rows.append((processes, callers, ok, refused, other, runs, cost, spent, budget, wall))
                print(f"{processes} process{'es' if processes > 1 else '  '}  {callers:3d} callers  {ok:5d} calls "
                      f"succeeded  {refused:3d} refused  {other} other  {upstream:5d} upstream requests  {runs:5d} runs recorded  spent ${cost}  "
                      f"(key spent_usd ${spent})  spent/budget {cost / budget:.3f}  {wall:.1f} s", flush=True)
    finally:
        bench.close()
    print()
    print("| web processes | 1 caller | 10 callers | 100 callers |")
    print("|---|---|---|---|")
    for processes in (1, 2):
        cells = [f"{row[6] / row[8]:.3f}" for row in rows if row[0] == processes]
        print(f"| {processes} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

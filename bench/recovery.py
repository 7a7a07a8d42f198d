"""Recovery from a Celery worker's death: the time from a SIGKILL of the worker's main process to the
interrupted run's resumption (its next step finished, in another worker or in the restarted one).

The stack is the production one under supervisord (config/supervisord.conf, as `make up` runs it: the web
server, two Celery workers, beat) against the real PostgreSQL and Redis (PODIUM_TEST_POSTGRES_URL,
PODIUM_TEST_REDIS_URL; a database and a Redis db of its own, as the production tests do:
tests/production/stack.py). Each round submits a `chain` run (STEPS calls of STEP_MS each), waits until
its first step finished, SIGKILLs the main process of the worker executing it (its pool goes with it) and
times, polling PostgreSQL every 20 ms, until the run finished one more step; then waits for the run to end
and for supervisord's restart of the worker to be ready. What the time is made of: the dead worker's run
lease expiring (at most --lease-s, PODIUM_RUN_LEASE_S; a run is also not taken over before it is that old),
beat's sweep (every --sweep-s, PODIUM_SCHEDULER_INTERVAL_S) dispatching it again, a worker taking the task
and one step's latency. The production defaults are a 30 s lease and a 10 s sweep: expect about their sum.

    .venv/bin/python bench/recovery.py [--kills 10] [--lease-s 5] [--sweep-s 1] [--step-ms 300] [--steps 8]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.production.stack import Stack, services_unavailable  # noqa: E402

FINAL = ("succeeded", "failed", "cancelled", "budget_exceeded", "deadline_exceeded")


def wait(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what} not within {timeout}s")


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lease-s", type=float, default=5)
    parser.add_argument("--sweep-s", type=float, default=1)
    parser.add_argument("--step-ms", type=int, default=300)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    reason = services_unavailable()
    if reason:
        print(f"skipped: {reason}")
        return 0

    stack = Stack()
    stack.base_env.update({"CI_SLOW_MS": str(args.step_ms), "CI_CHAIN_STEPS": str(args.steps),
                           "PODIUM_RUN_LEASE_S": str(args.lease_s), "PODIUM_SCHEDULER_INTERVAL_S": str(args.sweep_s)})
    finished_sql = ("SELECT count(*) FROM orchestration_step WHERE run_id = %s AND status = 'succeeded' "
                    "AND node_type = 'call'")
    times: list[float] = []
    restarts: list[float] = []
    try:
        stack.prepare()
        supervisor = stack.start_supervised(web_processes=1, workers=2, concurrency=2, LOG_LEVEL="WARNING")
        print(f"supervisord: web (1 process), worker1 and worker2 (2 pool processes each), beat; lease "
              f"{args.lease_s:g} s, sweep every {args.sweep_s:g} s, {args.steps} steps of {args.step_ms} ms per run")
        readiness = {"worker1": 1, "worker2": 1}
        for kill in range(1, args.kills + 1):
            response = httpx.post(f"{stack.url()}/api/runs/", headers=stack.key_headers, timeout=30,
                                  json={"workflow": "chain", "input": f"recovery {kill}"})
            response.raise_for_status()
            run_id = response.json()["id"]

            def executing():
                """(pid of the worker's main process, steps finished) once a step finished and another is due."""
                holder = stack.redis.client.get(f"podium:run-lease:{run_id}")
                done = stack.db.value(finished_sql, [run_id])
                if holder and 1 <= done < args.steps:
                    try:
                        return parent(int(holder.decode().split(":")[1])), done
                    except (OSError, ValueError):
                        return None
                return None

            main_pid, before = wait(executing, 60, f"run {run_id} executing past its first step")
            name = next(n for n, (state, pid) in supervisor.status().items() if pid == main_pid)
            readiness[name] += 1
            restarted: list[float] = []

            def watch_restart(name=name, old=main_pid, times=readiness[name]):
                """supervisord's restart of the killed worker, until it says it is ready again."""
                supervisor.wait_running([name], timeout=60, besides={name: old})
                supervisor.wait_worker_ready(name, times=times)
                restarted.append(time.monotonic() - killed_at)

            os.kill(main_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            watcher = threading.Thread(target=watch_restart)
            watcher.start()
            wait(lambda: stack.db.value(finished_sql, [run_id]) > before, 120, f"run {run_id} to go on")
            resumed_s = time.monotonic() - killed_at
            times.append(resumed_s)
            wait(lambda: stack.db.value("SELECT status FROM orchestration_run WHERE id = %s", [run_id]) in FINAL,
                 120, f"run {run_id} to end", 0.1)
            status = stack.db.value("SELECT status FROM orchestration_run WHERE id = %s", [run_id])
            duplicates = stack.db.value("SELECT count(*) - count(DISTINCT key) FROM orchestration_step "
                                        "WHERE run_id = %s", [run_id])
            watcher.join(90)
            back = f"{restarted[0]:.1f} s" if restarted else "not within 60 s"
            restarts.extend(restarted)
            print(f"kill {kill:2}: {name} (pid {main_pid}) after step {before}/{args.steps}: resumed in "
                  f"{resumed_s:5.2f} s; run {status}, {duplicates} duplicated steps; {name} restarted and ready "
                  f"after {back}")
            time.sleep(1)  # the restarted worker takes tasks again
    finally:
        stack.stop()
    if times:
        print(f"\nSIGKILL -> interrupted run's next step finished, {len(times)} kills: median "
              f"{statistics.median(times):.2f} s, max {max(times):.2f} s (min {min(times):.2f} s)")
    if restarts:
        print(f"SIGKILL -> worker restarted by supervisord and ready: median {statistics.median(restarts):.2f} s, "
              f"max {max(restarts):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

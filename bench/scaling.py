"""Throughput at saturation with 1 and 2 web processes on the production stack (issue 16).

    .venv/bin/python bench/scaling.py [--rounds 4] [--duration 5] [--connections 64] [--redis-db 11]

The production web server as `make up` runs it — `gunicorn -c config/gunicorn.py` with WEB_PROCESSES
uvicorn workers on one port — in production mode: PostgreSQL (DATABASE_URL, a database of the bench's
own, dropped at the end), Redis (REDIS_URL, db `--redis-db`, flushed before and after; nothing else is
touched), PROMETHEUS_MULTIPROC_DIR (a temp dir per server), SECRET_KEY, PODIUM_TRUSTED_PROXIES unset.
One server with WEB_PROCESSES=1 and one with 2 run side by side on their own ports; one
OpenAI-compatible provider points at the fake upstream (`podium/fake_upstream.py`, 0 ms delay, one
process) and an API key calls `POST /v1/chat/completions` through `wrk` (closed loop: `--connections`
keep-alive connections, 2 threads, a Lua script for the body and the Authorization header).

Rounds alternate 1, 2 / 2, 1 / ... (the order within a pair flips every round; `--shuffle` flips it at
random instead, seeded by `--seed`), so machine drift lands on both; before each run the bench waits until neither server is still working off
the previous run's backlog (the batched writer's Run rows). Nothing is pinned: on a small machine the
web processes, wrk, the upstream, PostgreSQL and Redis share the cores, and the bench says how much
CPU each took during the runs (/proc utime+stime deltas; "rest" is the machine's busy time from
/proc/stat minus those: PostgreSQL, Redis, the idle server, anything else), so the reader sees what
was left for Podium. Prints figures only; no assertions.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The gateway benchmark's helpers: a free port, and a process tree's CPU time from /proc.
from bench.gateway_overhead import (POSTGRES_URL, REDIS_URL, cpu_seconds, free_port, process_tree,  # noqa: E402
                                   with_path)
PY = sys.executable
BIN = Path(PY).parent
TICK = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p99":%d}}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores; not idle, not iowait), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / TICK


def wait_http(url: str, headers: dict | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as answer:
                if answer.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


@dataclass
class Sample:
    processes: int
    requests: int
    seconds: float
    errors: int
    p50: float  # ms
    p99: float
    cpu: dict[str, float]  # who -> cores used on average during the run (1.0 = one core busy)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="podium-scaling-"))
        self.db_name = f"podium_scaling_{os.getpid()}"
        self.db_url = with_path(POSTGRES_URL, "/" + self.db_name)
        self.redis_url = with_path(REDIS_URL, f"/{args.redis_db}")
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.db_created = False
        self.env: dict = {}

    # --- setting up ------------------------------------------------------------------------------------
    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def _flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url, socket_timeout=5).flushdb()

    def spawn(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.processes[name] = process
        return process

    def prepare(self) -> str:
        """Database, Redis db, upstream, migrations and seed; returns the API key."""
        self._admin(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        self._flush_redis()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "DJANGO_", "PYTEST"))},
            "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.db_url, "REDIS_URL": self.redis_url, "PODIUM_VAR_DIR": str(self.workdir / "var"),
            "SECRET_KEY": secrets.token_urlsafe(40), "LOG_LEVEL": "WARNING", "WEB_GRACEFUL_TIMEOUT_S": "5",
        }
        port = free_port()
        self.ports["upstream"] = port
        self.spawn("upstream", [PY, "-m", "podium.fake_upstream", "--port", str(port), "--delay-ms", "0"], self.env)
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=self.env, check=True)
        seed = (
            "from orchestration.models import APIKey, LLMModel, Provider\n"
            "p = Provider.objects.create(name='fake-0ms', kind='openai_compatible',\n"
            f"    base_url='http://127.0.0.1:{port}/v1', timeout_s=30, max_concurrency=512)\n"
            "LLMModel.objects.create(provider=p, alias='bench-0ms', upstream_name='via-podium',\n"
            "    price_in_per_m=1, price_out_per_m=2)\n"
            "print(APIKey.issue('bench', scopes=['chat'])[1])\n"
        )
        done = subprocess.run([PY, "manage.py", "shell", "-c", seed], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True)
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        return done.stdout.strip().splitlines()[-1]

    def start_web(self, processes: int, key: str) -> None:
        name = f"web{processes}"
        port = free_port()
        metrics = self.workdir / f"prometheus-{processes}"
        metrics.mkdir()
        env = {**self.env, "WEB_PROCESSES": str(processes), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        web = self.spawn(name, [str(BIN / "gunicorn"), "-c", str(ROOT / "config/gunicorn.py"),
                                "-b", f"127.0.0.1:{port}", "--log-level", "info"], env)
        self.ports[name] = port
        deadline = time.monotonic() + 90
        while True:
            log = (self.workdir / f"{name}.log").read_text(errors="replace")
            started = len(re.findall(r"\[\d+\] \[INFO\] Application startup complete", log))
            if started >= processes:
                break
            if web.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn with {processes} processes did not start:\n{log[-3000:]}")
            time.sleep(0.1)
        wait_http(f"http://127.0.0.1:{port}/v1/models", {"Authorization": f"Bearer {key}"})
        workers = len(process_tree(web.pid)) - 1
        if workers != processes:
            raise RuntimeError(f"gunicorn started {workers} workers, wanted {processes}")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        with contextlib.suppress(Exception):
            self._flush_redis()
        if self.db_created:
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"logs kept in {self.workdir}")

    # --- measuring ------------------------------------------------------------------------------------
    def quiesce(self, timeout: float = 20.0) -> None:
        """Wait until no server is still working off the previous run (queued requests, the batched writer)."""
        servers = [self.processes["web1"].pid, self.processes["web2"].pid]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = [cpu_seconds(pid) for pid in servers]
            time.sleep(0.3)
            if all(cpu_seconds(pid) - cpu < 0.3 * 0.05 for pid, cpu in zip(servers, before)):
                return

    def run_wrk(self, processes: int, script: Path, seconds: float) -> Sample:
        name = f"web{processes}"
        url = f"http://127.0.0.1:{self.ports[name]}/v1/chat/completions"
        watched = {"web": self.processes[name].pid, "upstream": self.processes["upstream"].pid}
        before = {who: cpu_seconds(pid) for who, pid in watched.items()}
        busy_before, started = machine_busy_seconds(), time.monotonic()
        wrk = subprocess.Popen(["wrk", "-t", "2", "-c", str(self.args.connections), "-d", f"{seconds:g}s",
                                "--timeout", "10s", "-s", str(script), url],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = wrk.stdout.read()  # until wrk closes it: the end of its run
        _, status, usage = os.wait4(wrk.pid, 0)  # reaped here, with its own CPU time
        wrk.returncode = os.waitstatus_to_exitcode(status)
        wrk_cpu = usage.ru_utime + usage.ru_stime
        wall = time.monotonic() - started
        busy = machine_busy_seconds() - busy_before
        wrk.stdout.close()
        cpu = {who: (cpu_seconds(pid) - before[who]) / wall for who, pid in watched.items()}
        cpu["wrk"] = wrk_cpu / wall
        cpu["rest"] = max(0.0, busy / wall - sum(cpu.values()))
        line = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no result:\n{output}")
        data = json.loads(line[len("RESULT "):])
        errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
        return Sample(processes=processes, requests=data["requests"], seconds=data["duration_us"] / 1e6,
                      errors=errors, p50=data["p50"] / 1000, p99=data["p99"] / 1000, cpu=cpu)

    def run(self) -> list[Sample]:
        key = self.prepare()
        for processes in (1, 2):
            self.start_web(processes, key)
        body = {"model": "bench-0ms", "messages": [{"role": "user", "content": "How far does this scale?"}],
                "max_tokens": 16}
        script = self.workdir / "chat.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(body), key=key))
        print(f"{os.cpu_count()} cores; {self.args.connections} connections, {self.args.duration:g} s a run, "
              f"{self.args.rounds} rounds; upstream 0 ms", flush=True)
        for processes in (1, 2):  # warm-up: connections, the model registry, the provider client
            self.quiesce()
            self.run_wrk(processes, script, self.args.warmup)
        rng = random.Random(self.args.seed)
        samples = []
        for number in range(1, self.args.rounds + 1):
            order = [1, 2] if number % 2 else [2, 1]
            if rng.random() < 0.5 and self.args.shuffle:
                order.reverse()
            for processes in order:
                self.quiesce()
                sample = self.run_wrk(processes, script, self.args.duration)
                samples.append(sample)
                c = sample.cpu
                print(f"round {number}  {processes} process{'es' if processes > 1 else '  '}  "
                      f"{sample.rps:7.0f} req/s  p50 {sample.p50:6.1f} ms  p99 {sample.p99:6.1f} ms  "
                      f"errors {sample.errors}  cores: web {c['web']:.2f} wrk {c['wrk']:.2f} "
                      f"upstream {c['upstream']:.2f} rest {c['rest']:.2f}", flush=True)
        return samples


def report(samples: list[Sample], cores: int) -> None:
    print()
    medians = {}
    for processes in (1, 2):
        mine = [s for s in samples if s.processes == processes]
        rps = statistics.median(s.rps for s in mine)
        p50 = statistics.median(s.p50 for s in mine)
        medians[processes] = rps
        cpu = {who: statistics.median(s.cpu[who] for s in mine) for who in ("web", "wrk", "upstream", "rest")}
        print(f"median  {processes} process{'es' if processes > 1 else '  '}  {rps:7.0f} req/s  p50 {p50:6.1f} ms  "
              f"errors {sum(s.errors for s in mine)}  cores: web {cpu['web']:.2f}  wrk {cpu['wrk']:.2f}  "
              f"upstream {cpu['upstream']:.2f}  rest (PostgreSQL, Redis, idle server, other) {cpu['rest']:.2f}  "
              f"of {cores}")
    print(f"ratio 2/1: {medians[2] / medians[1]:.2f}")
    ratios = [b.rps / a.rps for a, b in zip([s for s in samples if s.processes == 1],
                                            [s for s in samples if s.processes == 2])]
    print("per-round ratios 2/1: " + ", ".join(f"{r:.2f}" for r in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds; each measures 1 and 2 processes once")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--redis-db", type=int, default=11, help="Redis db number of the bench's own (not 0)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--shuffle", action="store_true",
                        help="flip the order within a round at random (seeded) instead of alternating it")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    if args.redis_db == 0:
        parser.error("--redis-db 0 is the default db: pick another, it is flushed")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian package `wrk`)")
    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        samples = bench.run()
    finally:
        bench.close()
    report(samples, os.cpu_count() or 1)


if __name__ == "__main__":
    main()

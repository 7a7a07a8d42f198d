"""What Podium adds to every call: latency, throughput, CPU, memory — against the upstream alone and LiteLLM.

    .venv/bin/python bench/gateway_overhead.py [--duration 5] [--rounds 3] [--write bench/RESULTS.md]

A fake OpenAI-compatible upstream (`podium/fake_upstream.py`, raw aiohttp, one process per fixed
latency: 0 ms and 50 ms) is called directly and through each gateway at concurrency 1, 16 and 64,
non-streaming and streaming. The load comes from `wrk` (Debian package `wrk`): one closed-loop
connection per concurrent client, keep-alive, latency histogram in microseconds. Rounds are
interleaved (direct, Podium, LiteLLM, then again in rotated order) so that machine drift lands on
every target alike; "added" latency is a gateway's percentile minus the direct one of the same round,
the median over rounds. With `taskset`, every gateway server is pinned to core 0 and the upstreams
and wrk share core 1: a gateway's CPU is its own, and the direct baseline is not helped by a free core.
Before each round the bench waits until no gateway is still working off the previous round's backlog,
and `--nice -15` gives every benchmark process the same high priority on a machine shared with others.

At the end the servers are stopped cleanly and the Run rows in Podium's database are counted
against the requests the upstream received from Podium: every request must have been recorded.

A reference target, the minimal proxy (`bench/minimal_proxy.py`), runs under the same server with the
same pinning: it forwards bytes and does nothing else, so its added latency is what any Python gateway
pays on this machine before doing work of its own (`--no-minimal` leaves it out).

LiteLLM runs only when the `bench` extra is installed (`pip install -e '.[bench]'`), with the same
number of server processes (one), a random master key and its local cost map (no network).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
POSTGRES_URL = os.environ.get("PODIUM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PODIUM_TEST_REDIS_URL", "redis://127.0.0.1:6379")
BIN = Path(PY).parent
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p95":%d,"p99":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.mean))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


NICE = [0]  # --nice: on a machine others are loading, every benchmark process alike gets this priority


def with_path(url: str, path: str) -> str:
    return urlunparse(urlparse(url)._replace(path=path))


def pinned(command: list[str], core: int | None) -> list[str]:
    if NICE[0]:
        command = ["nice", "-n", str(NICE[0]), *command]
    return ["taskset", "-c", str(core), *command] if core is not None and shutil.which("taskset") else command


def wait_http(url: str, headers: dict | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
                if response.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:g}s")


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in (task / "children").read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live descendants (one that exits while read is skipped)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def quiesce(targets: list["Target"], timeout: float = 20.0) -> None:
    """Wait until no server is still busy with the previous round's backlog (a saturated gateway keeps
    working on queued requests after wrk hung up: that CPU must not land on the next target's round)."""
    processes = [t.process for t in targets if t.process]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [cpu_seconds(p.pid) for p in processes]
        time.sleep(0.3)
        if all(cpu_seconds(p.pid) - cpu < 0.3 * 0.05 for p, cpu in zip(processes, before)):
            return


@dataclass
class Target:
    name: str
    url: str  # the chat completions URL
    key: str
    model: dict[int, str]  # upstream delay (ms) -> the model name to send
    process: subprocess.Popen | None = None
    peak_rss_mb: float = 0.0


@dataclass
class Sample:
    requests: int
    seconds: float
    errors: int
    p50: float  # milliseconds
    p95: float
    p99: float
    cpu: float | None  # the server's CPU, percent of one core

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Cell:
    """All rounds of one (delay, mode, concurrency) for every target."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)


def run_wrk(target: Target, delay: int, stream: bool, concurrency: int, seconds: float, core: int | None,
            workdir: Path) -> Sample:
    body = {"model": target.model[delay], "messages": [{"role": "user", "content": "How fast is this gateway?"}],
            "max_tokens": 16}
    if stream:
        body["stream"] = True
    script = workdir / f"wrk-{target.name}-{delay}-{int(stream)}.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(body), key=target.key))
    threads = 1 if concurrency < 16 else 2
    command = pinned(["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:g}s", "--timeout", "10s",
                      "-s", str(script), target.url], core)
    cpu_before = cpu_seconds(target.process.pid) if target.process else None
    started = time.monotonic()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    cpu = (cpu_seconds(target.process.pid) - cpu_before) / wall * 100 if target.process else None
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    data = json.loads(line[len("RESULT "):])
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    return Sample(requests=data["requests"], seconds=data["duration_us"] / 1e6, errors=errors, p50=data["p50"] / 1000,
                  p95=data["p95"] / 1000, p99=data["p99"] / 1000, cpu=cpu)


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="podium-bench-"))
        self.pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
        self.server_core = 0 if self.pin else None
        self.client_core = 1 if self.pin else None
        self.processes: list[subprocess.Popen] = []
        self.upstreams: dict[int, int] = {}  # delay -> port
        self.podium_env: dict = {}
        self.production_env: dict = {}  # --servers production: PostgreSQL + Redis, as `make up` runs
        self.production_db = f"podium_overhead_{os.getpid()}"

    def spawn(self, command: list[str], core: int | None, env: dict | None = None, log: str = "") -> subprocess.Popen:
        out = open(self.workdir / f"{log or 'process'}.log", "w")
        process = subprocess.Popen(pinned(command, core), cwd=ROOT, env=env or os.environ.copy(), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    # --- setting up ----------------------------------------------------------------------------------
    def start_upstreams(self) -> None:
        for delay in self.args.delays:
            port = free_port()
            self.spawn([PY, "-m", "podium.fake_upstream", "--port", str(port), "--delay-ms", str(delay)],
                       self.client_core, log=f"upstream-{delay}ms")
            self.upstreams[delay] = port
        for port in self.upstreams.values():
            wait_http(f"http://127.0.0.1:{port}/v1/models")

    def seed(self, env: dict) -> str:
        """One provider per upstream, a model on each, and an API key in `env`'s database; returns the key."""
        seed = (
            "from orchestration.models import APIKey, LLMModel, Provider\n"
            f"for delay, port in {self.upstreams!r}.items():\n"
            "    p = Provider.objects.create(name=f'fake-{delay}ms', kind='openai_compatible',\n"
            "        base_url=f'http://127.0.0.1:{port}/v1', timeout_s=30, max_concurrency=256)\n"
            "    LLMModel.objects.create(provider=p, alias=f'bench-{delay}ms', upstream_name='via-podium',\n"
            "        price_in_per_m=1, price_out_per_m=2)\n"
            "print(APIKey.issue('bench')[1])\n"
        )
        result = subprocess.run([PY, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env, check=True,
                                capture_output=True, text=True)
        return result.stdout.strip().splitlines()[-1]

    def prepare_production(self) -> str:
        """A database of the bench's own on the local PostgreSQL (dropped at the end) and a flushed Redis db."""
        import psycopg
        import redis

        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.production_db}"')
        redis_url = with_path(REDIS_URL, f"/{self.args.redis_db}")
        redis.Redis.from_url(redis_url, socket_timeout=5).flushdb()
        self.production_env = {**self.podium_env, "DATABASE_URL": with_path(POSTGRES_URL, "/" + self.production_db),
                               "REDIS_URL": redis_url, "PODIUM_VAR_DIR": str(self.workdir / "var-production")}
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=self.production_env,
                       check=True)
        return self.seed(self.production_env)

    def prepare_podium(self) -> str:
        """A fresh database with one provider per upstream, a model on each, and an API key; returns the key."""
        self.podium_env = {**os.environ, "PODIUM_VAR_DIR": str(self.workdir / "var"),
                           "SECRET_KEY": secrets.token_urlsafe(32), "LOG_LEVEL": "WARNING",
                           "DJANGO_SETTINGS_MODULE": "config.settings"}
        for name in ("DATABASE_URL", "REDIS_URL"):
            self.podium_env.pop(name, None)  # the embedded mode: what `make run` gives a newcomer
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=self.podium_env, check=True)
        return self.seed(self.podium_env)

    def start_podium(self, server: str, key: str) -> Target:
        port = free_port()
        env = self.podium_env
        if server == "daphne":  # what `make run` and `make demo` served with until they moved to gunicorn
            command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
        elif server in ("gunicorn", "production"):  # the production server (`make up`, `make run`): one worker
            command = [str(BIN / "gunicorn"), "-c", str(ROOT / "config/gunicorn.py"), "-b", f"127.0.0.1:{port}"]
            if server == "production":  # and the production stack's PostgreSQL and Redis
                key = self.prepare_production()
                env = self.production_env
            env = {**env, "WEB_PROCESSES": "1", "LOG_LEVEL": "warning"}
        else:
            # uvicorn's defaults as installed: uvloop and httptools when present, else asyncio and h11.
            command = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                       "--no-access-log", "--log-level", "warning", "--lifespan", "on"]
            if server == "uvicorn-asyncio":
                command += ["--loop", "asyncio", "--http", "h11"]
        process = self.spawn(command, self.server_core, env=env, log=f"podium-{server}")
        wait_http(f"http://127.0.0.1:{port}/v1/models", {"Authorization": f"Bearer {key}"})
        return Target(name=f"podium-{server}" if len(self.args.servers) > 1 else "podium",
                      url=f"http://127.0.0.1:{port}/v1/chat/completions", key=key,
                      model={delay: f"bench-{delay}ms" for delay in self.args.delays}, process=process)

    def start_minimal(self) -> Target | None:
        """bench/minimal_proxy.py under the same server and pinning: what any Python gateway pays here."""
        if self.args.no_minimal:
            return None
        port = free_port()
        upstreams = {f"bench-{delay}ms": f"http://127.0.0.1:{port_}/v1" for delay, port_ in self.upstreams.items()}
        env = {**os.environ, "MINIMAL_PROXY_UPSTREAMS": json.dumps(upstreams)}
        process = self.spawn([PY, "-m", "uvicorn", "bench.minimal_proxy:app", "--host", "127.0.0.1", "--port", str(port),
                              "--no-access-log", "--log-level", "warning", "--lifespan", "on"], self.server_core,
                             env=env, log="minimal-proxy")
        wait_http(f"http://127.0.0.1:{port}/")
        return Target(name="minimal", url=f"http://127.0.0.1:{port}/v1/chat/completions", key="none",
                      model={delay: f"bench-{delay}ms" for delay in self.args.delays}, process=process)

    def start_litellm(self) -> Target | None:
        litellm = BIN / "litellm"
        if self.args.no_litellm or not litellm.exists():
            return None
        port = free_port()
        lines = ["model_list:"]
        for delay, upstream_port in self.upstreams.items():
            lines += [f"  - model_name: bench-{delay}ms", "    litellm_params:", "      model: openai/via-litellm",
                      f"      api_base: http://127.0.0.1:{upstream_port}/v1", "      api_key: fake-key"]
        config = self.workdir / "litellm.yaml"
        config.write_text("\n".join(lines) + "\n")
        master_key = "sk-" + secrets.token_hex(16)
        env = {**os.environ, "LITELLM_MASTER_KEY": master_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_LOG": "ERROR"}
        for name in ("DATABASE_URL", "REDIS_URL"):
            env.pop(name, None)
        process = self.spawn([str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                              "--num_workers", "1"], self.server_core, env=env, log="litellm")
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
        return Target(name="litellm", url=f"http://127.0.0.1:{port}/v1/chat/completions", key=master_key,
                      model={delay: f"bench-{delay}ms" for delay in self.args.delays}, process=process)

    # --- measuring -------------------------------------------------------------------------------------
    def run(self) -> str:
        if not shutil.which("wrk"):
            sys.exit("wrk is needed (Debian: apt-get install wrk)")
        self.start_upstreams()
        key = self.prepare_podium()
        direct = Target(name="direct", url="", key="fake-key", model={d: "direct" for d in self.args.delays})
        targets = [direct] + [self.start_podium(server, key) for server in self.args.servers]
        minimal = self.start_minimal()
        if minimal:
            targets.append(minimal)
        litellm = self.start_litellm()
        if litellm:
            targets.append(litellm)
        cells: dict[tuple, Cell] = {}
        total = len(self.args.delays) * len(self.args.modes) * len(self.args.concurrency) * self.args.rounds
        print(f"# {len(targets)} targets, {total} rounds of {self.args.duration:g} s each; work directory "
              f"{self.workdir}{'' if self.args.keep else ' (removed at the end; --keep keeps it)'}", file=sys.stderr)
        for target in targets:  # warm-up: connection pools, caches, lazy imports
            for delay in self.args.delays:
                run_wrk(self.bound(target, delay), delay, False, 8, 1, self.client_core, self.workdir)
        for delay in self.args.delays:
            for mode in self.args.modes:
                for concurrency in self.args.concurrency:
                    cell = cells[(delay, mode, concurrency)] = Cell()
                    for round_ in range(self.args.rounds):
                        order = targets[round_ % len(targets):] + targets[:round_ % len(targets)]
                        for target in order:
                            quiesce(targets)
                            sample = run_wrk(self.bound(target, delay), delay, mode == "stream", concurrency,
                                             self.args.duration, self.client_core, self.workdir)
                            cell.samples.setdefault(target.name, []).append(sample)
                    print(f"# done: {delay} ms, {mode}, C={concurrency}", file=sys.stderr)
        for target in targets:
            if target.process:
                target.peak_rss_mb = peak_rss_mb(target.process.pid)
        recorded = self.stop_and_count(targets)
        return self.report(targets, cells, recorded)

    def url_for(self, target: Target, delay: int) -> str:
        return target.url or f"http://127.0.0.1:{self.upstreams[delay]}/v1/chat/completions"

    def bound(self, target: Target, delay: int) -> Target:
        return Target(name=target.name, url=self.url_for(target, delay), key=target.key, model=target.model,
                      process=target.process)

    def stop_and_count(self, targets: list[Target]) -> dict:
        upstream_requests = 0
        for port in self.upstreams.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/fake/stats", timeout=5) as response:
                upstream_requests += json.load(response)["chat_requests_by_model"].get("via-podium", 0)
        for target in targets:
            if target.process and target.name.startswith("podium"):
                target.process.send_signal(signal.SIGTERM)  # a clean shutdown flushes the batched writer
                target.process.wait(60)
        query = "SELECT status, COUNT(*) FROM orchestration_run GROUP BY status"
        by_status: dict = {}
        with contextlib.closing(sqlite3.connect(self.workdir / "var" / "podium.sqlite3")) as db:
            for status, count in db.execute(query).fetchall():
                by_status[status] = by_status.get(status, 0) + count
        if self.production_env:
            import psycopg

            with psycopg.connect(self.production_env["DATABASE_URL"], connect_timeout=5) as db:
                for status, count in db.execute(query).fetchall():
                    by_status[status] = by_status.get(status, 0) + count
        return {"upstream_requests": upstream_requests, "runs": sum(by_status.values()), "by_status": by_status}

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        if self.production_env:
            import psycopg

            with contextlib.suppress(Exception), psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.production_db}" WITH (FORCE)')
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)  # its database holds every recorded call

    # --- reporting ---------------------------------------------------------------------------------------
    def report(self, targets: list[Target], cells: dict, recorded: dict) -> str:
        gateways = [t for t in targets if t.name != "direct"]
        out = [f"Machine: {os.cpu_count()} cores, {'pinned: gateway on core 0, upstreams + wrk on core 1' if self.pin else 'not pinned'}"
               f"{f', niceness {NICE[0]}' if NICE[0] else ''}, load average {os.getloadavg()[0]:.1f} at the end; "
               f"{self.args.rounds} interleaved rounds of {self.args.duration:g} s per cell; wrk closed-loop clients.",
               "Added latency = gateway percentile - direct percentile of the same round (median over rounds); "
               "req/s and CPU are medians over rounds.", ""]
        out.append("| upstream | mode | C | target | req/s | vs direct | p50 ms | p95 ms | p99 ms | added p50 | added p95 | "
                   "added p99 | server CPU | CPU µs/req | errors |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        summary: dict[tuple, dict] = {}
        for (delay, mode, concurrency), cell in cells.items():
            direct = cell.samples["direct"]
            for target in targets:
                samples = cell.samples[target.name]
                rps = statistics.median(s.rps for s in samples)
                direct_rps = statistics.median(s.rps for s in direct)
                row = {"rps": rps, "ratio": rps / direct_rps}
                for pct in ("p50", "p95", "p99"):
                    row[pct] = statistics.median(getattr(s, pct) for s in samples)
                    row["added_" + pct] = statistics.median(getattr(s, pct) - getattr(d, pct)
                                                            for s, d in zip(samples, direct))
                cpus = [s.cpu for s in samples if s.cpu is not None]
                row["cpu"] = statistics.median(cpus) if cpus else None
                row["errors"] = sum(s.errors for s in samples)
                summary[(delay, mode, concurrency, target.name)] = row
                cpu = "—" if row["cpu"] is None else f"{row['cpu']:.0f} %"
                per_request = "—" if row["cpu"] is None else f"{row['cpu'] / 100 / rps * 1e6:.0f}"
                added = ("—", "—", "—") if target.name == "direct" else tuple(
                    f"{row['added_' + p]:+.2f}" for p in ("p50", "p95", "p99"))
                out.append(f"| {delay} ms | {mode} | {concurrency} | {target.name} | {rps:,.0f} | {row['ratio']:.2f} | "
                           f"{row['p50']:.2f} | {row['p95']:.2f} | {row['p99']:.2f} | {added[0]} | {added[1]} | "
                           f"{added[2]} | {cpu} | {per_request} | {row['errors']} |")
        out += ["", "Peak RSS of the server process tree: " + ", ".join(
            f"{t.name} {t.peak_rss_mb:,.0f} MB" for t in gateways), ""]
        ok = recorded["runs"] >= recorded["upstream_requests"] and not recorded["by_status"].get("failed")
        out.append(f"Recording: {recorded['runs']:,} Run rows after shutdown {recorded['by_status']} for "
                   f"{recorded['upstream_requests']:,} requests the upstream received from Podium -> "
                   f"{'every request recorded' if ok else 'RECORDS MISSING'}.")
        out += ["", *self.verdicts(summary, targets)]
        return "\n".join(out)

    def verdicts(self, summary: dict, targets: list[Target]) -> list[str]:
        names = [t.name for t in targets]
        podium = next((n for n in names if n.startswith("podium")), None)
        lines = ["Targets (50 ms upstream, non-streaming):"]
        if podium is None or 50 not in self.args.delays or "plain" not in self.args.modes:
            return lines + ["  (not measured in this run)"]
        for concurrency in (1, 16):
            row = summary.get((50, "plain", concurrency, podium))
            if row:
                lines.append(f"  C={concurrency}: added p50 {row['added_p50']:.2f} ms (target <= 1.5) "
                             f"{'OK' if row['added_p50'] <= 1.5 else 'MISSED'}; added p99 {row['added_p99']:.2f} ms "
                             f"(target <= 10) {'OK' if row['added_p99'] <= 10 else 'MISSED'}")
        row = summary.get((50, "plain", 64, podium))
        if row:
            lines.append(f"  C=64: throughput {row['ratio']:.1%} of direct (target >= 90 %) "
                         f"{'OK' if row['ratio'] >= 0.9 else 'MISSED'}")
        if "minimal" in names:
            lines.append("The minimal proxy (bench/minimal_proxy.py: same server, aiohttp client, no work of its own):")
            for concurrency in (1, 16):
                row, floor = (summary.get((50, "plain", concurrency, name)) for name in (podium, "minimal"))
                if row and floor:
                    lines.append(f"  C={concurrency}: it adds {floor['added_p50']:.2f} ms p50; Podium's own share "
                                 f"{row['added_p50'] - floor['added_p50']:+.2f} ms (difference of the medians)")
        if "litellm" in names:
            lines.append("Podium / LiteLLM (same run, one server process each):")
            for (delay, mode, concurrency, name), row in sorted(summary.items()):
                if name != podium:
                    continue
                peer = summary[(delay, mode, concurrency, "litellm")]
                lines.append(f"  {delay} ms {mode:6} C={concurrency:<3} throughput x{row['rps'] / peer['rps']:.2f}; "
                             f"added p50 {row['added_p50']:.2f} vs {peer['added_p50']:.2f} ms "
                             f"(ratio {row['added_p50'] / peer['added_p50'] if peer['added_p50'] > 0 else float('nan'):.2f})")
            row, peer = summary.get((50, "plain", 64, podium)), summary.get((50, "plain", 64, "litellm"))
            if row and peer:
                lines.append(f"  target >= 2x LiteLLM throughput at C=64: x{row['rps'] / peer['rps']:.2f} "
                             f"{'OK' if row['rps'] >= 2 * peer['rps'] else 'MISSED'}")
            for concurrency in (1, 16):
                row, peer = summary.get((50, "plain", concurrency, podium)), summary.get((50, "plain", concurrency, "litellm"))
                if row and peer:
                    third = row["added_p50"] <= peer["added_p50"] / 3
                    lines.append(f"  target added p50 <= 1/3 of LiteLLM's at C={concurrency}: {row['added_p50']:.2f} vs "
                                 f"{peer['added_p50']:.2f} ms {'OK' if third else 'MISSED'}")
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per target per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delays", default="0,50", help="upstream latencies in ms")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--servers", default="uvicorn",
                        help="Podium under: uvicorn (its defaults as installed), uvicorn-asyncio, daphne (`make run`), "
                             "gunicorn (the production server, one worker, embedded mode: `make run`), production (the same "
                             "on PostgreSQL and Redis: `make up` with WEB_PROCESSES=1); comma-separated")
    parser.add_argument("--redis-db", type=int, default=13, help="--servers production: the Redis db it flushes")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-minimal", action="store_true", help="leave out the minimal-proxy reference target")
    parser.add_argument("--write", help="also write the report (markdown) to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, database)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run every server, upstream and wrk at this niceness (negative needs root): "
                             "for a machine shared with other work")
    args = parser.parse_args()
    NICE[0] = args.nice
    args.delays = [int(x) for x in args.delays.split(",")]
    args.concurrency = [int(x) for x in args.concurrency.split(",")]
    args.modes = args.modes.split(",")
    args.servers = args.servers.split(",")
    bench = Bench(args)
    try:
        report = bench.run()
    finally:
        bench.close()
    print(report)
    if args.write:
        Path(args.write).write_text(report + "\n")


if __name__ == "__main__":
    main()

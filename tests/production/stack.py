"""A production-like Podium for tests: real PostgreSQL and Redis, daphne and Celery worker subprocesses.

The services are the machine's own (PostgreSQL on 127.0.0.1:5432 with trust auth, Redis on
127.0.0.1:6379), or those named by PODIUM_TEST_POSTGRES_URL / PODIUM_TEST_REDIS_URL. Each test
session works in a database and a Redis db number of its own, so it clashes neither with
pytest-django's test database nor with another session running at the same time.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("PODIUM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PODIUM_TEST_REDIS_URL", "redis://127.0.0.1:6379")
VISIBILITY_TIMEOUT_S = 8  # short, so a killed worker's task comes back within the test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def services_unavailable() -> str | None:
    """Why the production tests cannot run here, or None when PostgreSQL and Redis both answer."""
    import psycopg
    import redis

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception as exc:
        return (f"PostgreSQL does not answer at {POSTGRES_URL} ({type(exc).__name__}); "
                "set PODIUM_TEST_POSTGRES_URL or start it (`.ci/run` does when it can)")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:
        return f"Redis does not answer at {REDIS_URL} ({type(exc).__name__}); set PODIUM_TEST_REDIS_URL or start it"
    return None


def require_services() -> None:
    """Skip the calling test when PostgreSQL or Redis does not answer here, saying why; fail instead when
    PODIUM_REQUIRE_PRODUCTION_TESTS is set (`.ci/run` sets it where they answer), so CI cannot skip silently."""
    import pytest

    reason = services_unavailable()
    if reason and os.environ.get("PODIUM_REQUIRE_PRODUCTION_TESTS"):
        pytest.fail(f"PODIUM_REQUIRE_PRODUCTION_TESTS is set but {reason}")
    if reason:
        pytest.skip(reason)


def with_path(url: str, path: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=path))


class Database:
    """A database of our own on the test PostgreSQL server, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"podium_ci_{os.getpid()}_{int(time.time()) % 100000}"
        self.url = with_path(POSTGRES_URL, "/" + self.name)

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def create(self) -> "Database":
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def query(self, sql: str, params=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def value(self, sql: str, params=()):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None


class RedisDb:
    """A Redis db number nobody else uses right now: claimed with SET NX, flushed before and after."""

    CLAIM = "podium:ci:claim"

    def __init__(self) -> None:
        import redis

        token = f"{os.getpid()}-{time.time()}"
        for number in range(15, 0, -1):
            client = redis.Redis.from_url(with_path(REDIS_URL, f"/{number}"), socket_timeout=5)
            if client.set(self.CLAIM, token, nx=True, ex=3600):
                client.flushdb()
                client.set(self.CLAIM, token, ex=3600)
                self.number, self.client = number, client
                self.url = with_path(REDIS_URL, f"/{number}")
                return
        raise RuntimeError("every Redis db number from 1 to 15 is claimed by another test session")

    def release(self) -> None:
        self.client.flushdb()


class TcpProxy:
    """A loopback TCP proxy in front of Redis that the test can cut (Redis 'unavailable') and restore."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(512)
        self.port = self.server.getsockname()[1]
        self.up = True
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="redis-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()  # refused while cut: the other side sees a reset at once
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair) -> None:
        client, upstream = pair
        sockets = [client, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 0.5)
                if pair not in self._pairs:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
            for sock in sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Redis becomes unreachable: open connections are closed, new ones refused."""
        self.up = False
        with self._lock:
            pairs, self._pairs = list(self._pairs), set()
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.server.close()


class Process:
    """A subprocess in its own process group, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict, logdir: Path) -> None:
        self.name = name
        self.args, self.env = args, env
        self.log_path = logdir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self.terminated = False

    def start(self) -> "Process":
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig=signal.SIGKILL) -> None:
        """Signal the whole group (a Celery worker's pool children too)."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """Ask the group to stop (SIGTERM) without waiting; `stop()` waits."""
        if self.alive() and not self.terminated:
            self.terminated = True
            self.kill(signal.SIGTERM)

    def stop(self, timeout: float = 10) -> None:
        if not self.alive():
            self.kill()
            return
        self.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.popen.wait(5)
        self.kill()  # stragglers of the group

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    """PostgreSQL + Redis + two daphne processes (Redis through a cuttable proxy) + Celery workers."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="podium-prod-"))
        self.db = Database().create()
        self.redis = RedisDb()
        parsed = urlparse(self.redis.url)
        self.proxy = TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self.proxied_redis_url = f"redis://127.0.0.1:{self.proxy.port}/{self.redis.number}"
        (self.tmp / "prometheus").mkdir()
        self.base_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "DJANGO_", "PYTEST"))},
            "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.db.url, "REDIS_URL": self.redis.url, "PODIUM_VAR_DIR": str(self.tmp / "var"),
            "PODIUM_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S), "PODIUM_BROKER_RESTORE_INTERVAL_S": "1",
            "PODIUM_WRITER_FLUSH_INTERVAL": "0.1", "PODIUM_SCHEDULER_INTERVAL_S": "0",
            "SECRET_KEY": "production-test-secret-key-" + "y" * 40, "LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / "prometheus"),
        }
        self.processes: list[Process] = []
        self.web: list[Process] = []
        self.ports: list[int] = []
        self.workers: dict[str, Process] = {}
        self.seed: dict = {}

    # --- setting up ------------------------------------------------------------------------------------------
    def manage(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.base_env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def prepare(self) -> "Stack":
        self.manage("migrate", "--noinput", "-v0")
        done = subprocess.run([sys.executable, str(ROOT / "tests/production/seed.py")], cwd=ROOT, env=self.base_env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"seeding failed:\n{done.stdout}\n{done.stderr}")
        self.seed = json.loads(done.stdout.strip().splitlines()[-1])
        return self

    def start_web(self, count: int = 2) -> None:
        for index in range(count):
            port = free_port()
            env = {**self.base_env, "REDIS_URL": self.proxied_redis_url}
            process = Process(f"daphne-{index}", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                                                  "config.asgi:application"], env, self.tmp).start()
            self.processes.append(process)
            self.web.append(process)
            self.ports.append(port)
        for port, process in zip(self.ports, self.web):
            self._wait_http(f"http://127.0.0.1:{port}/healthz", process)

    def start_worker(self, name: str, concurrency: int = 2) -> Process:
        args = [str(BIN / "celery"), "-A", "config", "worker", "-n", f"{name}@%h", "-c", str(concurrency),
                "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        process = Process(f"worker-{name}-{len(self.processes)}", args, self.base_env, self.tmp).start()
        self.processes.append(process)
        self.workers[name] = process
        deadline = time.monotonic() + 60
        while " ready." not in process.log_path.read_text(errors="replace"):
            if not process.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{process.log_tail()}")
            time.sleep(0.1)
        return process

    def _wait_http(self, url: str, process: Process, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{process.name} did not answer {url}:\n{process.log_tail()}")

    def stop(self) -> None:
        # All asked at once, then each waited for: the shutdowns overlap instead of adding up.
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            process.stop()
        self.proxy.close()
        try:
            self.redis.release()
        finally:
            self.db.drop()
            if not os.environ.get("PODIUM_KEEP_TEST_LOGS"):
                shutil.rmtree(self.tmp, ignore_errors=True)

    # --- using --------------------------------------------------------------------------------------------------
    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def ws_url(self, index: int) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}"

    @property
    def key_headers(self) -> dict:
        return {"authorization": f"Bearer {self.seed['api_key']}"}

    def cookie(self, who: str = "staff") -> str:
        return f"sessionid={self.seed[f'{who}_session']}"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes)

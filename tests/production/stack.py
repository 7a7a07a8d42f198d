"""A production-like Podium for tests: real PostgreSQL and Redis, the production web server (gunicorn with
uvicorn workers on one port, config/gunicorn.py) and Celery worker subprocesses — started one by one, or
all of them (web, workers, beat) under supervisord with the project's config/supervisord.conf
(`Stack.start_supervised`).

The services are the machine's own (PostgreSQL on 127.0.0.1:5432 with trust auth, Redis on
127.0.0.1:6379), or those named by PODIUM_TEST_POSTGRES_URL / PODIUM_TEST_REDIS_URL. Each test
session works in a database and a Redis db number of its own, so it clashes neither with
pytest-django's test database nor with another session running at the same time.
"""
from __future__ import annotations

import json
import os
import re
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
NGINX_SITE = ROOT / "deploy/nginx/podium.conf"
SUPERVISORD_CONF = ROOT / "config/supervisord.conf"
PROGRAM_LINE = re.compile(r"^(\w+)\s*\| ")  # a line of supervisord's output: "<program name> | <its line>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """A process's direct children (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """A process's children, their children, and so on (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _socket_inodes(server_port: int, client_port: int) -> set[str]:
    """Inodes of the sockets whose local port is server_port and remote port client_port (/proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                inodes.add(inode)
    return inodes


def connection_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The pid among `pids` holding the accepted socket of a loopback connection (server_port <- client_port):
    read from outside, in the kernel's tables, without the application saying which process it is."""
    wanted = {f"socket:[{inode}]" for inode in _socket_inodes(server_port, client_port)}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None


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


class Supervisor:
    """config/supervisord.conf run as `make up` runs it: supervisord in the foreground (here in a session of its
    own, its standard output in a file), the programs web, worker1..N and beat under it, every ENV_ variable
    of the file set in `env`. `supervisorctl` talks to it over its socket in PODIUM_VAR_DIR."""

    def __init__(self, env: dict, logdir: Path, name: str = "supervisord") -> None:
        self.env = env
        self.var = Path(env["PODIUM_VAR_DIR"])
        self.process = Process(name, [str(BIN / "supervisord"), "-c", str(SUPERVISORD_CONF)], env, logdir)
        self.returncode: int | None = None

    def start(self) -> "Supervisor":
        for sub in ("supervisor", "log"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        self.process.start()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @staticmethod
    def qualified(name: str) -> str:
        """supervisorctl's name of a program: the workers are a group (`worker:worker1`)."""
        return f"worker:{name}" if re.fullmatch(r"worker\d+", name) else name

    def ctl(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "supervisorctl"), "-c", str(SUPERVISORD_CONF), *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr

    def status(self) -> dict[str, tuple[str, int | None]]:
        """{program: (state, pid)} as supervisorctl reports them now."""
        states = {}
        for line in self.ctl("status").splitlines():
            match = re.match(r"^(?:\w+:)?(\w+)\s+([A-Z]+)(?:\s+pid (\d+))?", line)
            if match:
                states[match[1]] = (match[2], int(match[3]) if match[3] else None)
        return states

    def pid_of(self, name: str) -> int | None:
        state, pid = self.status().get(name, (None, None))
        return pid if state == "RUNNING" else None

    def wait_running(self, names: list[str], timeout: float = 90, besides: dict | None = None) -> dict[str, int]:
        """Wait until every program in `names` is RUNNING (with a pid other than `besides[name]`); their pids."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.popen is not None and not self.process.alive():
                raise RuntimeError(f"supervisord exited:\n{self.output_tail()}")
            states = self.status()
            pids = {name: states.get(name, (None, None))[1] for name in names
                    if states.get(name, (None, None))[0] == "RUNNING"}
            if len(pids) == len(names) and not any(pids[n] == (besides or {}).get(n) for n in names):
                return pids
            if time.monotonic() > deadline:
                raise RuntimeError(f"{names} not RUNNING within {timeout}s: {states}\n{self.output_tail()}")
            time.sleep(0.2)

    def program_log(self, name: str) -> str:
        """A program's own log file (every line it wrote, as written)."""
        try:
            return (self.var / "log" / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def wait_worker_ready(self, name: str, times: int = 1, timeout: float = 60) -> None:
        """Wait until a Celery worker said it is ready (`times` times: once per start)."""
        deadline = time.monotonic() + timeout
        while self.program_log(name).count(" ready.") < times:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready within {timeout}s:\n{self.program_log(name)[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        """supervisord's standard output: every program's lines behind its name."""
        try:
            return self.process.log_path.read_text(errors="replace")
        except OSError:  # not started by this object (an existing supervisord, asked through supervisorctl)
            return ""

    def output_tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int | None:
        """Signal supervisord alone (as Ctrl-C or systemd would) and wait for it; its exit code. Whatever is left
        after `timeout` (it should be nothing) is killed, so no test leaves processes behind."""
        if self.returncode is not None or self.process.popen is None:
            return self.returncode
        tree = descendants(self.pid)
        if self.process.alive():
            os.kill(self.pid, sig)
        try:
            self.returncode = self.process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.returncode = None
        for pid in [self.pid, *tree, *descendants(self.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.returncode is None:
            self.process.popen.wait(5)
        return self.returncode


class Stack:
    """PostgreSQL + Redis + one port served by N web processes (Redis through a cuttable proxy) + Celery workers."""

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
            # As the reference deployment sets them behind its TLS proxy (deploy/nginx/podium.conf) on loopback.
            "PODIUM_BEHIND_TLS_PROXY": "1", "PODIUM_TRUSTED_PROXIES": "127.0.0.1/32",
        }
        self.processes: list[Process] = []
        self.web: Process | None = None  # gunicorn's master; its children are the web processes
        self.port = 0
        self.workers: dict[str, Process] = {}
        self.supervisor: Supervisor | None = None
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

    def start_web(self, processes: int = 2) -> None:
        """The production web server on one port: gunicorn's master and `processes` uvicorn workers, each up."""
        self.port = free_port()
        env = {**self.base_env, "REDIS_URL": self.proxied_redis_url, "WEB_PROCESSES": str(processes),
               "WEB_GRACEFUL_TIMEOUT_S": "5"}
        # --log-level info: gunicorn's own lines (a worker booted, started, died, replaced) in the log.
        args = [str(BIN / "gunicorn"), "-c", str(ROOT / "config/gunicorn.py"), "-b", f"127.0.0.1:{self.port}",
                "--log-level", "info"]
        self.web = Process("web", args, env, self.tmp).start()
        self.processes.append(self.web)
        self._wait_http(f"{self.url()}/healthz", self.web)
        self.wait_web_workers(processes)

    def web_workers(self) -> list[int]:
        """The pids of gunicorn's workers now (the master's children)."""
        return children(self.web.pid) if self.web and self.web.alive() else []

    def ready_workers(self) -> list[int]:
        """The workers whose application has started (lifespan startup complete, per gunicorn's log)."""
        log = self.web.log_path.read_text(errors="replace")
        started = {int(pid) for pid in re.findall(r"\[(\d+)\] \[INFO\] Application startup complete", log)}
        return [pid for pid in self.web_workers() if pid in started]

    def wait_web_workers(self, count: int, timeout: float = 60, besides: frozenset = frozenset()) -> list[int]:
        """Wait until `count` workers (none of `besides`) are alive and have started the application."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.web.alive():
                raise RuntimeError(f"gunicorn exited:\n{self.web.log_tail()}")
            ready = self.ready_workers()
            if len(ready) == count and not besides & set(ready):
                return ready
            time.sleep(0.05)
        raise RuntimeError(f"{count} web workers not ready within {timeout}s (now {self.web_workers()}):\n"
                           f"{self.web.log_tail()}")

    def connection_owner(self, client_port: int) -> int | None:
        """Which web worker holds the server side of the loopback TCP connection from `client_port`."""
        return connection_owner(self.port, client_port, self.web_workers())

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

    def supervised_env(self, *, web_processes: int = 2, workers: int = 2, concurrency: int = 2,
                       var_dir: Path | None = None, **extra: str) -> dict:
        """The environment config/supervisord.conf is run with for this stack (what scripts/up.sh exports)."""
        return {**self.base_env, "PODIUM_BIN": str(BIN), "HOST": "127.0.0.1", "PORT": str(self.port or free_port()),
                "WEB_PROCESSES": str(web_processes), "WEB_GRACEFUL_TIMEOUT_S": "5", "WORKERS": str(workers),
                "WORKER_CONCURRENCY": str(concurrency), "CELERY_LOG_LEVEL": "INFO", "LOG_LEVEL": "INFO",
                "PODIUM_VAR_DIR": str(var_dir or self.tmp / "var"), **extra}

    def start_supervised(self, *, web_processes: int = 2, workers: int = 2, concurrency: int = 2,
                         **extra: str) -> Supervisor:
        """Web, `workers` Celery workers and beat under supervisord with config/supervisord.conf, on one port
        (direct to Redis); returns once the port answers and every worker said it is ready."""
        self.port = free_port()
        env = self.supervised_env(web_processes=web_processes, workers=workers, concurrency=concurrency, **extra)
        self.supervisor = Supervisor(env, self.tmp).start()
        self._wait_http(f"{self.url()}/healthz", self.supervisor.process, timeout=90)
        names = ["web", *(f"worker{n}" for n in range(1, workers + 1)), "beat"]
        self.supervisor.wait_running(names)
        for name in names[1:-1]:
            self.supervisor.wait_worker_ready(name)
        return self.supervisor

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
        if self.supervisor:
            self.supervisor.stop()
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
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def key_headers(self) -> dict:
        return {"authorization": f"Bearer {self.seed['api_key']}"}

    def cookie(self, who: str = "staff") -> str:
        return f"sessionid={self.seed[f'{who}_session']}"

    def logs(self) -> str:
        supervised = f"--- supervisord ---\n{self.supervisor.output_tail()}\n" if self.supervisor else ""
        return supervised + "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes)


# --- the reference TLS proxy (deploy/nginx/podium.conf) --------------------------------------------------------
def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def nginx_unavailable() -> str | None:
    """Why nginx cannot be used here, or None once it is installed: `make browser-deps` installs it (apt);
    where it did not run, this installs it the same way when it can (root and apt-get), quietly."""
    if nginx_binary():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return ("nginx is not installed and cannot be installed here (needs root and apt-get); "
                "`make browser-deps` installs it where it can")
    done = subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdin=subprocess.DEVNULL)
    if done.returncode or not nginx_binary():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"nginx is not installed and `apt-get install nginx` failed here: {tail[0]}"
    return None


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost (openssl), as a site's real one would be used."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class NginxProxy:
    """deploy/nginx/podium.conf as deployed, with this test's ports, certificate and a directory of its own:
    the site file is included unchanged but for those, in a minimal main nginx.conf (what /etc/nginx/nginx.conf
    is on a server)."""

    def __init__(self, directory: Path, upstream_port: int = 8000) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = self_signed_certificate(self.dir)
        self.https_port, self.http_port = free_port(), free_port()
        site = NGINX_SITE.read_text()
        replacements = {
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{self.https_port} ssl;",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "/etc/ssl/podium/fullchain.pem": str(self.cert),
            "/etc/ssl/podium/privkey.pem": str(self.key),
        }
        for old, new in replacements.items():
            if site.count(old) != 1:
                raise AssertionError(f"{NGINX_SITE} no longer has {old!r} exactly once: update NginxProxy")
            site = site.replace(old, new)
        (self.dir / "podium.conf").write_text(site)
        temp = "\n".join(f"    {name}_temp_path {self.dir}/{name};" for name in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root the workers would switch to an unprivileged user that cannot enter the test's directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(f"""{user}worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
{temp}
    include {self.dir}/podium.conf;
}}
""")
        self.process: Process | None = None

    def command(self, *extra: str) -> list[str]:
        return [nginx_binary(), "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log"), *extra]

    def check(self) -> subprocess.CompletedProcess:
        """`nginx -t`: the configuration parses, the certificate and key load."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> "NginxProxy":
        self.process = Process("nginx", self.command("-g", "daemon off;"), dict(os.environ), self.dir).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"nginx exited:\n{self.process.log_tail()}\n{self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on {self.https_port}:\n{self.error_log()}")

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

"""Run leases: one run executes in one process at a time (why and how: orchestration/runs/recovery.py).

Production (Celery): a Redis key per run, taken by the task: short (PODIUM_RUN_LEASE_S, 30 s) and renewed
by a heartbeat while the run executes, naming its holder (host, pid). A worker that dies stops renewing,
so its lease is gone within PODIUM_RUN_LEASE_S and the run can be taken over at once, not after the
task's hard time limit.
Embedded mode: an exclusive `flock` on a file named after the run, dropped by the operating system
when its process dies, however it dies.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)
LEASE_PREFIX = "podium:run-lease:"

_clients: dict[tuple[int, str], object] = {}


def _client():
    """One client (connection pool) per process: a new client per call costs more than the call."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    key = (os.getpid(), url)
    if key not in _clients:
        import redis

        _clients[key] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _clients[key]


def acquire_lease(run_id: str, ttl_s: float) -> str | None:
    """A token when this worker may execute the run, None while another one holds it. The token names its
    holder ("<host>:<pid>:<random>"), so whoever looks at the key sees who executes the run.

    Without Redis (embedded mode: one process) every caller gets a token."""
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    client = _client()
    if client is None:
        return token
    try:
        return token if client.set(LEASE_PREFIX + run_id, token, nx=True, px=max(1, int(ttl_s * 1000))) else None
    except Exception as exc:  # Redis down: executing is still safe (the run's own status guards re-runs)
        logger.warning("run lease unavailable (%s); executing without one", type(exc).__name__)
        return token


RELEASE_SCRIPT = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
RENEW_SCRIPT = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
                "end return 0")


def renew_lease(run_id: str, token: str, ttl_s: float) -> bool:
    """Extend our own lease; False when it is no longer ours (it expired and someone took it, or Redis is
    away: then the holder goes on, as without a lease, and the run's status guards against re-running)."""
    client = _client()
    if client is None:
        return True
    try:
        return bool(client.eval(RENEW_SCRIPT, 1, LEASE_PREFIX + run_id, token, max(1, int(ttl_s * 1000))))
    except Exception:
        return False


def lease_holder(run_id: str) -> str | None:
    """Who holds the run's lease ("<host>:<pid>:<token>"), or None."""
    client = _client()
    if client is None:
        return None
    value = client.get(LEASE_PREFIX + run_id)
    return value.decode() if value is not None else None


class LeaseHeartbeat:
    """Renews a run's Redis lease every third of its life from a daemon thread, while the run executes.

    A thread, not a task on the run's loop: a run that blocks its loop (a long synchronous step) must not
    lose its lease for it. Stops when asked or when the lease turns out not to be ours any more."""

    def __init__(self, run_id: str, token: str, ttl_s: float) -> None:
        self.run_id, self.token, self.ttl_s = run_id, token, ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id[:8]}", daemon=True)

    def __enter__(self) -> "LeaseHeartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            if not renew_lease(self.run_id, self.token, self.ttl_s):
                self.lost = True
                logger.warning("run %s: its lease could not be renewed (expired, taken over, or Redis away)",
                               self.run_id)
                return


def release_lease(run_id: str, token: str) -> None:
    client = _client()
    if client is None:
        return
    try:
        client.eval(RELEASE_SCRIPT, 1, LEASE_PREFIX + run_id, token)  # only our own lease
    except Exception:
        pass  # it expires by itself


def lease_held(run_id: str) -> bool:
    client = _client()
    if client is None:
        return False
    return bool(client.exists(LEASE_PREFIX + run_id))



def lease_dir() -> Path:
    """Beside the SQLite file the processes share; under PODIUM_VAR_DIR for another database."""
    from django.db import connections

    database = connections["default"].settings_dict
    name = str(database.get("NAME") or "")
    if database["ENGINE"].endswith("sqlite3") and name and ":memory:" not in name and "mode=memory" not in name:
        return Path(name + "-run-leases")
    return Path(settings.VAR_DIR) / "run-leases"


class LocalLease:
    """This process's hold on one run in the embedded mode: an exclusive flock on the run's lease file."""

    def __init__(self, path: Path, fd: int, interruptions: int) -> None:
        self.path, self.fd = path, fd
        self.interruptions = interruptions  # executions that began under this file and never ended

    @classmethod
    def take(cls, run_id: str, *, executing: bool) -> "LocalLease | None":
        """The lease, or None while someone holds it (a live process, or another execution in this one).

        `executing`: an execution begins and is counted; the sweep only looks."""
        import fcntl

        path = lease_dir() / str(run_id)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:  # the first lease here, or the directory was cleaned away
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # its holder removed the file after we opened it (see release): lock the one there now
        count = os.pread(fd, 32, 0).strip()
        began = int(count) if count.isdigit() else 0
        if executing:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % (began + 1), 0)
        return cls(path, fd, began)

    def release(self, *, ended: bool) -> None:
        """Let go. `ended`: the execution finished (the run ended or paused), so the file and its count go;
        removed while still locked, so whoever opened it meanwhile sees it is gone (take)."""
        try:
            if ended:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)


class _CeleryTaskLease:
    """Under Celery the task holds the run's Redis lease (tasks.py): nothing to take here."""

    def release(self, *, ended: bool) -> None:
        pass


def execution_lease(run_id: str) -> "LocalLease | _CeleryTaskLease | None":
    """What an execution holds so no other process executes the run meanwhile; None: another one does.
    Blocking file I/O (a file created, a fraction of a millisecond): call it from a thread in async code."""
    if settings.PODIUM_RUNNER == "celery":
        return _CeleryTaskLease()
    return LocalLease.take(run_id, executing=True)


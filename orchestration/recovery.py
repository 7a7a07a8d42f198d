"""Runs that no process executes any more are handed out again; one run executes in one process at a time.

Production (Celery): a run's task can be lost even though its row committed: the broker was
unreachable when the task was sent after commit, or Redis lost data. Celery beat calls
`requeue_stalled_runs`, which dispatches such runs again. That makes duplicate deliveries possible
(so does at-least-once delivery itself), so a worker takes the run's lease before executing it: a
Redis key that lives no longer than a task may run (the hard time limit, below the broker's
visibility timeout, so a dead worker's lease is gone before its task is delivered again).

Embedded mode (the in-process runner; processes on one host sharing the database): whoever executes
a run holds an exclusive `flock` on a file named after it, beside the SQLite file
(`<database>-run-leases/<run id>`, as SQLite keeps its `-wal` there). The operating system drops the
lock when its process dies, however it dies, so the lock says exactly whether a live process executes
the run: no heartbeat to tune, no age to guess. The embedded scheduler's sweep (`resume_orphaned_runs`)
resumes the queued and running runs whose lock it can take; it leaves alone the runs this process
executes or has queued (the runner knows them), those another live process holds (a server beside a
test process, `podium_run` executing inline), and runs younger than ORPHAN_GRACE_S (the moment between
a run's row and its executor taking the lock). The file counts the executions that began under it
and did not end (an execution that ends, however the run ends, removes it): a run interrupted
MAX_INTERRUPTIONS times, one that kills its process say, is failed with the reason rather than resumed.
"""
from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from orchestration.models import Run
from orchestration.models.runs import RunStatus

logger = logging.getLogger(__name__)
LEASE_PREFIX = "podium:run-lease:"
STALLED_QUEUED_S = 300  # a queued run no worker took within this long is presumed lost
ORPHAN_GRACE_S = 30  # embedded mode: a run's executor takes its lock milliseconds after its row is written
MAX_INTERRUPTIONS = 3  # embedded mode: executions of one run that may be cut short before it is failed


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


def acquire_lease(run_id: str, ttl_s: int) -> str | None:
    """A token when this worker may execute the run, None while another one holds it.

    Without Redis (embedded mode: one process) every caller gets a token."""
    token = uuid.uuid4().hex
    client = _client()
    if client is None:
        return token
    try:
        return token if client.set(LEASE_PREFIX + run_id, token, nx=True, ex=max(1, int(ttl_s))) else None
    except Exception as exc:  # Redis down: executing is still safe (the run's own status guards re-runs)
        logger.warning("run lease unavailable (%s); executing without one", type(exc).__name__)
        return token


RELEASE_SCRIPT = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


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


def requeue_stalled_runs(*, queued_for_s: float = STALLED_QUEUED_S, running_for_s: float | None = None) -> int:
    """Dispatch again the runs queued (or running without a lease) for too long; how many were."""
    from config.celery import VISIBILITY_TIMEOUT_S
    from orchestration.runs import dispatch

    now = timezone.now()
    running_for_s = VISIBILITY_TIMEOUT_S + 300 if running_for_s is None else running_for_s
    queued = Run.objects.filter(status=RunStatus.QUEUED, workflow_version__isnull=False,
                                created_at__lt=now - timedelta(seconds=queued_for_s))
    running = Run.objects.filter(status=RunStatus.RUNNING, workflow_version__isnull=False,
                                 started_at__lt=now - timedelta(seconds=running_for_s))
    requeued = 0
    for run_id in [*queued.values_list("id", flat=True)[:1000], *running.values_list("id", flat=True)[:1000]]:
        if lease_held(str(run_id)):
            continue
        dispatch(str(run_id))
        requeued += 1
    if requeued:
        logger.warning("requeued %d stalled runs", requeued)
    return requeued


def recover_stalled_runs() -> int:
    """The periodic job (the embedded scheduler's and Celery beat's): runs handed out again; how many."""
    if settings.PODIUM_RUNNER == "celery":
        return requeue_stalled_runs()
    return resume_orphaned_runs()


# --- the embedded mode -------------------------------------------------------------------------------------------

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


def resume_orphaned_runs(*, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Embedded mode: hand this process's runner every queued or running run no live process executes, and fail,
    with the reason, those that cannot be resumed (see the module's docstring); how many were resumed."""
    from orchestration.inprocess_runner import runner
    from orchestration.runs import RUNNABLE, dispatch, executing_here, finish_run

    here = executing_here() | runner.in_flight()
    stale = Run.objects.filter(status__in=RUNNABLE, created_at__lt=timezone.now() - timedelta(seconds=grace_s))
    resumed = 0
    for run_id, version_id in stale.values_list("id", "workflow_version_id")[:1000]:
        run_id = str(run_id)
        if run_id in here:
            continue
        lease = LocalLease.take(run_id, executing=False)
        if lease is None:
            continue  # a live process executes it
        if version_id is None:
            reason = "interrupted, and it cannot be resumed: it has no workflow version"
        elif lease.interruptions >= MAX_INTERRUPTIONS:
            reason = (f"interrupted {lease.interruptions} times (the process executing it stopped each time); "
                      f"not resumed again")
        else:
            lease.release(ended=False)
            dispatch(run_id)
            resumed += 1
            continue
        failed = False
        try:
            finish_run(run_id, status=RunStatus.FAILED, result=None, error=reason)
            failed = True
            logger.warning("run %s failed: %s", run_id, reason)
        finally:
            lease.release(ended=failed)
    if resumed:
        logger.warning("resumed %d runs that no process was executing", resumed)
    return resumed

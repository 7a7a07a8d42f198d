"""Runs whose task went missing are handed out again; one run executes in one worker at a time.

A run's task can be lost even though its row committed: the broker was unreachable when the
task was sent after commit, or Redis lost data. Celery beat calls `requeue_stalled_runs`, which
dispatches such runs again. That makes duplicate deliveries possible (so does at-least-once
delivery itself), so a worker takes the run's lease before executing it: a Redis key that lives
no longer than a task may run (the hard time limit, below the broker's visibility timeout, so
a dead worker's lease is gone before its task is delivered again).
"""
from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from orchestration.models import Run
from orchestration.models.runs import RunStatus

logger = logging.getLogger(__name__)
LEASE_PREFIX = "podium:run-lease:"
STALLED_QUEUED_S = 300  # a queued run no worker took within this long is presumed lost


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

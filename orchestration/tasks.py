"""Celery tasks: thin doors that take ids and call orchestration services (at-least-once, idempotent).

Delivery is at least once (acks_late, see config/celery.py): a task may run again after its worker
died, so each one is idempotent — `execute_run` reuses a run's finished steps and leaves an ended
run alone, and a run or review that vanished meanwhile is simply nothing to do. Only transient
infrastructure errors (the database or broker blinking) are retried, with exponential backoff and
jitter; provider errors are the engine's business (retries, fallbacks, circuit breakers).

Runs execute on the worker process's one long-lived event loop (orchestration/process_loop.py),
not a loop per task: the pooled upstream clients and channels-redis connections stay bound to a
loop that never closes, so nothing leaks and nothing fails with "Event loop is closed".
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from orchestration.calibration.fitting import recalibrate
from orchestration.learning import recompute_model_stats
from orchestration.process_loop import process_loop
from orchestration.reviews.actions import expire_due_reviews, lapse_stale_claims
from orchestration import live
from orchestration.runs.delivery import HARD_LIMIT_S
from orchestration.runs.execution import execute_run_async
from orchestration.runs.leases import LeaseHeartbeat, acquire_lease, lease_holder, release_lease
from orchestration.runs.recovery import recover_stalled_runs

logger = logging.getLogger(__name__)
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
RETRY = {"autoretry_for": TRANSIENT_ERRORS, "retry_backoff": 2, "retry_backoff_max": 60, "retry_jitter": True,
         "max_retries": 8, "acks_late": True}


async def _execute(run_id: str) -> str | None:
    from asgiref.sync import sync_to_async
    from django.db import close_old_connections

    # The loop's sync thread keeps its database connection between tasks: drop it if it broke or aged.
    await sync_to_async(close_old_connections)()
    try:
        return await execute_run_async(run_id)
    finally:
        await live.sent()  # the run's last events leave before the task ends (a child may exit after it)
        await sync_to_async(close_old_connections)()


def _execute_leased(run_id: str) -> str | None:
    # A short lease, renewed while the run executes: a worker that dies lets go within RUN_LEASE_S (and never
    # later than its task could be delivered again).
    ttl_s = min(settings.PODIUM_RUN_LEASE_S, HARD_LIMIT_S)
    token = acquire_lease(run_id, ttl_s)
    if token is None:
        logger.info("run %s is executing in another worker (%s); this delivery has nothing to do", run_id,
                    lease_holder(run_id))
        return None
    try:
        with LeaseHeartbeat(run_id, token, ttl_s):
            return process_loop.run(_execute(run_id))
    finally:
        release_lease(run_id, token)


@shared_task(name="orchestration.tasks.execute_run_task", **RETRY)
def execute_run_task(run_id: str) -> str | None:
    """Execute (or go on with) a run; finished steps are reused, an ended or vanished run is left alone."""
    return _execute_leased(str(run_id))


@shared_task(name="orchestration.tasks.resume_run_task", **RETRY)
def resume_run_task(run_id: str) -> str | None:
    """Go on with a run after its review was decided (resume_run moved it back to queued)."""
    return _execute_leased(str(run_id))


@shared_task(name="orchestration.tasks.expire_reviews_task", **RETRY)
def expire_reviews_task() -> int:
    return expire_due_reviews()


@shared_task(name="orchestration.tasks.lapse_claims_task", **RETRY)
def lapse_claims_task() -> int:
    return lapse_stale_claims()


@shared_task(name="orchestration.tasks.learning_cycle_task", **RETRY)
def learning_cycle_task() -> int:
    """Recompute per-model statistics (the metric roll-up routing and dashboards read)."""
    return recompute_model_stats()


@shared_task(name="orchestration.tasks.recalibrate_task", **RETRY)
def recalibrate_task() -> int:
    """Refit confidence calibrators from review labels."""
    return recalibrate()


@shared_task(name="orchestration.tasks.recover_stalled_runs_task", **RETRY)
def recover_stalled_runs_task() -> int:
    return recover_stalled_runs()

"""Runs that no process executes any more are handed out again; one run executes in one process at a time.

Production (Celery): a run's task can be lost even though its row committed: the broker was
unreachable when the task was sent after commit, or Redis lost data; and a worker that dies holds
its task unacknowledged until the broker's visibility timeout (an hour by default). Celery beat calls
`requeue_stalled_runs`, which dispatches such runs again: queued runs no worker took for
STALLED_QUEUED_S, and running runs whose lease expired — the lease is short (PODIUM_RUN_LEASE_S) and
renewed by a heartbeat while the run executes (leases.py), so a dead worker's runs go on elsewhere
within about a lease and a sweep interval, not after the visibility timeout. Duplicate deliveries are
then possible (so are they with at-least-once delivery itself): a worker takes the run's lease before
executing it, and a run that ended is left alone.

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
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from orchestration.models import Run
from orchestration.models.runs import RunStatus
from orchestration.runs.delivery import HARD_LIMIT_S
from orchestration.runs.dispatch import dispatch, runner
from orchestration.runs.executing import executing_here
from orchestration.runs.execution import RUNNABLE, finish_run
from orchestration.runs.leases import LocalLease, lease_held

logger = logging.getLogger(__name__)
STALLED_QUEUED_S = 300  # a queued run no worker took within this long is presumed lost
ORPHAN_GRACE_S = 30  # embedded mode: a run's executor takes its lock milliseconds after its row is written
MAX_INTERRUPTIONS = 3  # embedded mode: executions of one run that may be cut short before it is failed


def requeue_stalled_runs(*, queued_for_s: float = STALLED_QUEUED_S, running_for_s: float | None = None) -> int:
    """Dispatch again the runs queued for too long, and the running ones whose lease expired (their worker
    died: nobody renews it); how many were. A run started less than a lease ago is left to take its lease."""
    now = timezone.now()
    running_for_s = min(settings.PODIUM_RUN_LEASE_S, HARD_LIMIT_S) if running_for_s is None else running_for_s
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


def running_without_lease() -> int:
    """Under Celery: running runs, older than a lease, whose lease expired — their worker died and beat's sweep
    has not handed them out yet (a gauge: it should stay near 0). None of this in the embedded mode: 0."""
    if settings.PODIUM_RUNNER != "celery":
        return 0
    cutoff = timezone.now() - timedelta(seconds=min(settings.PODIUM_RUN_LEASE_S, HARD_LIMIT_S))
    running = Run.objects.filter(status=RunStatus.RUNNING, started_at__lt=cutoff).values_list("id", flat=True)
    return sum(1 for run_id in running[:1000] if not lease_held(str(run_id)))


def recover_stalled_runs() -> int:
    """The periodic job (the embedded scheduler's and Celery beat's): runs handed out again; how many."""
    if settings.PODIUM_RUNNER == "celery":
        return requeue_stalled_runs()
    return resume_orphaned_runs()


# --- the embedded mode -------------------------------------------------------------------------------------------

def resume_orphaned_runs(*, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Embedded mode: hand this process's runner every queued or running run no live process executes, and fail,
    with the reason, those that cannot be resumed (see the module's docstring); how many were resumed."""
    here = executing_here() | runner().in_flight()
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

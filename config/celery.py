"""The Celery app: async runs and review resumes execute in workers, periodic jobs run from beat.

Delivery is at least once, so every task is idempotent (see orchestration/tasks.py):
- acks_late + reject_on_worker_lost: a task is acknowledged only once it finished; a worker that
  dies mid-run (SIGKILL, OOM, lost machine) leaves the message to be delivered again;
- the Redis transport re-delivers an unacknowledged message after `visibility_timeout`, so it
  must be longer than the longest run: the hard time limit is derived from it and stays below it;
- prefetch 1: a worker holds only the task it runs, so a burst spreads over every worker.
"""
from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.env import env_int, share_metrics_dir  # noqa: E402

share_metrics_dir()  # a worker started by hand adds its metrics to its host's too

from celery import Celery  # noqa: E402
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown  # noqa: E402
from django.conf import settings  # noqa: E402

from orchestration.runs.delivery import HARD_LIMIT_S, SOFT_LIMIT_S, VISIBILITY_TIMEOUT_S  # noqa: E402

app = Celery("podium")
app.config_from_object("django.conf:settings", namespace="CELERY")


def beat_schedule() -> dict:
    """The embedded scheduler's table of periodic jobs (orchestration/runner/periodic.py), as Celery tasks."""
    from orchestration.runner.periodic import PERIODIC_JOBS

    return {job.name: {"task": job.task, "schedule": job.interval_s()} for job in PERIODIC_JOBS
            if job.interval_s() > 0}


RESTORE_INTERVAL_S = env_int("PODIUM_BROKER_RESTORE_INTERVAL_S", 30)

app.conf.update(
    broker_url=settings.CELERY_BROKER_URL,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        # How often a worker looks for messages whose worker died (unacknowledged past the visibility timeout).
        "unacked_restore_interval": RESTORE_INTERVAL_S, "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5, "socket_keepalive": True,
    },
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_soft_time_limit=SOFT_LIMIT_S,
    task_time_limit=HARD_LIMIT_S,
    # A leak in one long-lived child is bounded; the parent replaces it.
    worker_max_tasks_per_child=2000,
    worker_hijack_root_logger=False,
    beat_schedule=beat_schedule(),
    timezone="UTC",
)
app.autodiscover_tasks(["orchestration"])


@worker_process_shutdown.connect
def forget_dead_process_gauges(pid=None, **kwargs):
    """Prometheus multiprocess mode: a finished pool process's live gauges must not linger."""
    from observability.prometheus import mark_process_dead

    mark_process_dead(pid or os.getpid())


_presence = {}


@worker_ready.connect
def announce_worker(sender=None, **kwargs):
    """The worker's main process says it is alive until it stops (podium_workers_alive)."""
    from orchestration.runner.presence import WorkerPresence

    _presence["worker"] = WorkerPresence(getattr(sender, "hostname", None) or f"worker-{os.getpid()}").start()


@worker_shutdown.connect
def withdraw_worker(**kwargs):
    presence = _presence.pop("worker", None)
    if presence is not None:
        presence.stop()

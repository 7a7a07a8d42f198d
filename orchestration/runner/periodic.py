"""The periodic jobs, and the in-process timer that runs them in the embedded mode.

`PERIODIC_JOBS` is the one table of them: the embedded mode's timer runs its functions, and
production's Celery beat schedule is built from it (config/celery.py: each job's Celery task calls
the same function). In the embedded mode the ASGI app starts one daemon thread (`start()`, from
lifespan startup or the first request; idempotent) that runs each job when it is due. A failing job
is logged and retried at its next turn; it never stops the others.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    function: str  # imported when due: Celery reads this table before Django's models can be imported
    task: str  # its Celery task (orchestration/tasks.py), which calls the same function
    interval_setting: str  # the setting that holds its interval in seconds (0 = off)

    def interval_s(self) -> float:
        return float(getattr(settings, self.interval_setting))


PERIODIC_JOBS = (
    PeriodicJob("expire_due_reviews", "orchestration.reviews.actions.expire_due_reviews",
                "orchestration.tasks.expire_reviews_task", "PODIUM_SCHEDULER_INTERVAL_S"),
    PeriodicJob("lapse_stale_claims", "orchestration.reviews.actions.lapse_stale_claims",
                "orchestration.tasks.lapse_claims_task", "PODIUM_SCHEDULER_INTERVAL_S"),
    PeriodicJob("recompute_model_stats", "orchestration.learning.recompute_model_stats",
                "orchestration.tasks.learning_cycle_task", "PODIUM_LEARNING_INTERVAL_S"),
    PeriodicJob("recalibrate", "orchestration.calibration.fitting.recalibrate",
                "orchestration.tasks.recalibrate_task", "PODIUM_CALIBRATION_INTERVAL_S"),
    # Runs left queued or running by a process that stopped (orchestration/runs/recovery.py).
    PeriodicJob("recover_stalled_runs", "orchestration.runs.recovery.recover_stalled_runs",
                "orchestration.tasks.recover_stalled_runs_task", "PODIUM_SCHEDULER_INTERVAL_S"),
)


def periodic_jobs() -> list[tuple[str, Callable[[], object], float]]:
    """(name, job, interval in seconds), read from settings each time so tests can change them."""
    return [(job.name, import_string(job.function), job.interval_s()) for job in PERIODIC_JOBS]


def run_due_jobs(last_run: dict[str, float], now: float | None = None) -> list[str]:
    """Run every job whose interval has passed since `last_run[name]`; the names run."""
    now = time.monotonic() if now is None else now
    ran = []
    for name, job, interval in periodic_jobs():
        if interval <= 0 or now - last_run.get(name, float("-inf")) < interval:
            continue
        last_run[name] = now
        try:
            job()
            ran.append(name)
        except Exception:
            logger.exception("periodic job %s failed; it runs again in %ss", name, interval)
    return ran


class Scheduler:
    """One daemon thread waking every second to run the jobs that are due."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.last_run: dict[str, float] = {}
        self._attempted = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start the timer unless it runs already, the runner is Celery (beat schedules the jobs) or the
        interval is 0; True when this call started it."""
        if self.running or settings.PODIUM_RUNNER != "inprocess" or settings.PODIUM_SCHEDULER_INTERVAL_S <= 0:
            return False
        with self._lock:
            if self.running:
                return False
            self._stop.clear()
            # The first turn waits one interval: a fresh process does not need the jobs at once.
            now = time.monotonic()
            self.last_run = {name: now for name, _, _ in periodic_jobs()}
            self._thread = threading.Thread(target=self._loop, name="podium-scheduler", daemon=True)
            self._thread.start()
            return True

    def ensure_started(self) -> None:
        """Cheap enough for every request: servers without ASGI lifespan (daphne) start it on the first one."""
        if not self._attempted:
            self._attempted = True
            self.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            run_due_jobs(self.last_run)
            close_old_connections()  # this thread's own connection: drop it if broken or too old
        close_old_connections()


scheduler = Scheduler()

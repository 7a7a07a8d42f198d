"""Production's runner: runs go to Celery workers (orchestration/tasks.py), after commit."""
from __future__ import annotations

import logging

from orchestration.tasks import execute_run_task, resume_run_task

logger = logging.getLogger(__name__)


class CeleryRunner:
    def submit(self, run_id: str, *, resume: bool = False) -> None:
        try:
            (resume_run_task if resume else execute_run_task).delay(str(run_id))
        except Exception:  # the broker is down: the row is committed, beat's stalled-run sweep sends it later
            logger.exception("run %s could not be handed to Celery; it stays queued until the sweep", run_id)

    def cancel(self, run_id: str) -> None:
        """Nothing to do here: the run's sink, in its worker, sees the status at its next step and stops there."""

    def in_flight(self) -> frozenset[str]:
        return frozenset()  # workers, not this process, hold the runs


runner = CeleryRunner()

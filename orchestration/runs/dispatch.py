"""Handing a run to whatever executes runs in this deployment.

The runner is named by settings.PODIUM_RUNNER_BACKEND, a dotted path, the way Django names its
backends (set from PODIUM_RUNNER: orchestration/runner/inprocess.py or orchestration/runner/celery.py),
so this layer never imports the runners that call back into it.
"""
from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string


def runner():
    """This deployment's runner: `submit(run_id, resume=)`, `cancel(run_id)`, `in_flight()`."""
    return import_string(settings.PODIUM_RUNNER_BACKEND)


def dispatch(run_id: str, *, resume: bool = False) -> None:
    """Hand a run to the runner (call after the run's row is committed)."""
    runner().submit(str(run_id), resume=resume)


def cancel_elsewhere(run_id: str) -> None:
    """Tell the runner a run was cancelled, so a run executing in this process stops at once."""
    runner().cancel(str(run_id))

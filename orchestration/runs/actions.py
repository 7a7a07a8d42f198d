"""Workflow runs' writes with side effects: create, start, resume, cancel.

A run is created `queued` with the workflow's current version and handed to the runner after
commit (orchestration/runs/dispatch.py): the in-process runner (embedded mode) or a Celery task
(PODIUM_RUNNER=celery).
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from orchestration.models import Run, Step, Workflow
from orchestration.models.runs import RunStatus, StepStatus
from orchestration.runs.dispatch import cancel_elsewhere, dispatch
from orchestration.runs.events import publish_run_on_commit
from orchestration.runs.executing import executing_here


class WorkflowNotFound(LookupError):
    def __init__(self, slug: str, why: str = "does not exist or is disabled"):
        super().__init__(f"The workflow '{slug}' {why}.")
        self.slug = slug



def create_run(*, workflow_slug: str, input, metadata: dict | None = None, api_key_id: int | None = None,
               budget_usd: float | None = None, deadline_s: float | None = None,
               status: str = RunStatus.QUEUED) -> Run:
    """A Run row for the workflow's current version (not yet handed to any runner)."""
    workflow = Workflow.objects.filter(slug=workflow_slug, enabled=True).first()
    if workflow is None:
        raise WorkflowNotFound(workflow_slug)
    version = workflow.current_version
    if version is None:
        raise WorkflowNotFound(workflow_slug, "has no version yet")
    now = timezone.now()
    run = Run.objects.create(
        kind=Run.Kind.WORKFLOW, target=f"workflow/{workflow.slug}", workflow_version=version,
        api_key_id=api_key_id, status=status, input=input if isinstance(input, dict) and "messages" in input
        else {"input": input}, metadata=metadata or {},
        budget_usd=Decimal(str(budget_usd)) if budget_usd is not None else None,
        deadline_at=now + timedelta(seconds=deadline_s) if deadline_s else None, created_at=now,
        started_at=now if status == RunStatus.RUNNING else None)
    publish_run_on_commit(run.pk)
    return run


def start_run(*, workflow_slug: str, input, metadata: dict | None = None, api_key_id: int | None = None,
              budget_usd: float | None = None, deadline_s: float | None = None) -> Run:
    """Create a queued run and hand it to the runner once the row is committed."""
    with transaction.atomic():
        run = create_run(workflow_slug=workflow_slug, input=input, metadata=metadata, api_key_id=api_key_id,
                         budget_usd=budget_usd, deadline_s=deadline_s)
        run_id = str(run.pk)
        transaction.on_commit(lambda: dispatch(run_id))
    return run



def resume_run(run_id) -> bool:
    """Hand a run paused for review back to the runner (after commit); False if it was not paused."""
    with transaction.atomic():
        resumed = Run.objects.filter(pk=run_id, status=RunStatus.AWAITING_REVIEW,
                                     workflow_version__isnull=False).update(status=RunStatus.QUEUED)
        if resumed:
            transaction.on_commit(lambda: dispatch(str(run_id), resume=True))
            publish_run_on_commit(run_id)
    return bool(resumed)



def cancel_run(run_id) -> bool:
    """Stop a run that has not ended; False if it already had."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = Run.objects.filter(pk=run_id, status__in=[RunStatus.QUEUED, RunStatus.RUNNING,
                                                             RunStatus.AWAITING_REVIEW]).update(
            status=RunStatus.CANCELLED, finished_at=now, error="cancelled")
        if not cancelled:
            return False
        if str(run_id) not in executing_here():
            Step.objects.filter(run_id=run_id, status=StepStatus.RUNNING).update(status=StepStatus.CANCELLED,
                                                                               finished_at=now)
        publish_run_on_commit(run_id)
    # In-process the runner cancels the run's task; elsewhere (a Celery worker), the run's sink sees the
    # status at its next step and stops there.
    cancel_elsewhere(str(run_id))
    return True


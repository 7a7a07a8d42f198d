"""Workflow runs' writes with side effects: create, start, resume, cancel.

A run is created `queued` with the workflow's current version and handed to the runner after
commit (orchestration/runs/dispatch.py): the in-process runner (embedded mode) or a Celery task
(PODIUM_RUNNER=celery).
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from orchestration.models import IdempotencyKey, Run, Step, Workflow
from orchestration.models.runs import RunStatus, StepStatus
from orchestration.runs.dispatch import cancel_elsewhere, dispatch
from orchestration.runs.events import publish_run_on_commit
from orchestration.runs.executing import executing_here


class WorkflowNotFound(LookupError):
    def __init__(self, slug: str, why: str = "does not exist or is disabled"):
        super().__init__(f"The workflow '{slug}' {why}.")
        self.slug = slug



def create_run(*, workflow_slug: str, input, metadata: dict | None = None, api_key_id: int | None = None,
               team_id: int | None = None, budget_usd: float | None = None, deadline_s: float | None = None,
               status: str = RunStatus.QUEUED) -> Run:
    """A Run row for the workflow's current version (not yet handed to any runner).

    A workflow another team owns is "not found" for a run of `team_id`, as one that does not exist: no hint.
    (A run with no team, an operator's, may run any workflow.)"""
    workflow = Workflow.objects.filter(slug=workflow_slug, enabled=True).first()
    if workflow is None or (team_id is not None and workflow.team_id not in (None, team_id)):
        raise WorkflowNotFound(workflow_slug)
    version = workflow.current_version
    if version is None:
        raise WorkflowNotFound(workflow_slug, "has no version yet")
    now = timezone.now()
    run = Run.objects.create(
        kind=Run.Kind.WORKFLOW, target=f"workflow/{workflow.slug}", workflow_version=version,
        api_key_id=api_key_id, team_id=team_id, status=status,
        input=input if isinstance(input, dict) and "messages" in input else {"input": input}, metadata=metadata or {},
        budget_usd=Decimal(str(budget_usd)) if budget_usd is not None else None,
        deadline_at=now + timedelta(seconds=deadline_s) if deadline_s else None, created_at=now,
        started_at=now if status == RunStatus.RUNNING else None)
    publish_run_on_commit(run.pk)
    return run


IDEMPOTENCY_WINDOW = timedelta(hours=24)
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces, as a header carries it


class IdempotencyConflict(Exception):
    """The idempotency key was used for another request body."""

    code = "idempotency_conflict"


def start_run(*, workflow_slug: str, input, metadata: dict | None = None, api_key_id: int | None = None,
              team_id: int | None = None, budget_usd: float | None = None, deadline_s: float | None = None) -> Run:
    """Create a queued run and hand it to the runner once the row is committed."""
    with transaction.atomic():
        run = create_run(workflow_slug=workflow_slug, input=input, metadata=metadata, api_key_id=api_key_id,
                         team_id=team_id, budget_usd=budget_usd, deadline_s=deadline_s)
        run_id = str(run.pk)
        transaction.on_commit(lambda: dispatch(run_id))
    return run


def start_run_once(*, owner: str, idempotency_key: str, **request) -> tuple[Run, bool]:
    """`start_run`, unless this owner's key already started one in the last 24 h: (run, replayed)."""
    return _once(owner, idempotency_key, request, start_run)


def create_run_once(*, owner: str, idempotency_key: str, **request) -> tuple[Run, bool]:
    """`create_run` (a /v1 workflow call executes its run itself), under an idempotency key as above."""
    return _once(owner, idempotency_key, request, create_run)


def valid_idempotency_key(key: str) -> bool:
    return bool(IDEMPOTENCY_KEY_RE.match(key))


def _once(owner: str, idempotency_key: str, request: dict, make) -> tuple[Run, bool]:
    """The same key with the same request returns the first run (replayed=True) however many retries race;
    the same key with another request raises IdempotencyConflict. The key row is inserted in the run's own
    transaction, so the unique constraint lets exactly one of concurrent attempts create a run."""
    digest = request_digest(request)
    IdempotencyKey.objects.filter(owner=owner, key=idempotency_key,
                                  created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW).delete()
    for _ in range(3):  # the attempt that held the key may have rolled back: then the key is free again
        try:
            with transaction.atomic():
                claim = IdempotencyKey.objects.create(owner=owner, key=idempotency_key, request_hash=digest,
                                                      created_at=timezone.now())
                run = make(**request)
                claim.run = run
                claim.save(update_fields=["run"])
            return run, False
        except IntegrityError:
            first = IdempotencyKey.objects.select_related("run").filter(owner=owner, key=idempotency_key).first()
        if first is not None:
            if first.request_hash != digest:
                raise IdempotencyConflict("This Idempotency-Key was already used with a different request body.")
            return first.run, True
    raise IdempotencyConflict("This Idempotency-Key is being used by a request that keeps failing; retry later.")


def request_digest(request: dict) -> str:
    """A stable digest of a run request (keys sorted; numbers and text as JSON writes them)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()



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


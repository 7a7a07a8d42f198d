"""Executing a workflow run, idempotently, and recording where it ended.

`execute_run` may be called more than once for the same run (Celery delivers at least once, a
crashed worker's run is picked up again): steps already finished are read back from the database
and reused, so no model is called twice for the same step, and a run that already ended is left alone.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from orchestration.access import budgets
from orchestration.access.apikeys import TeamInfo
from orchestration.calibration.store import current_calibrations
from orchestration.engine.executor import (AwaitingReview, BudgetExceeded, DeadlineExceeded, NodeResult, RunContext,
                                           StepFailed)
from orchestration.engine.nodes import RunCancelled
from orchestration.engine.policy import PolicyViolation
from orchestration.engine.spec import SpecInvalid
from orchestration.engine.workflow import run_workflow
from orchestration.engine_config import engine
from orchestration.learning import routing_stats as learned_routing_stats
from orchestration.models import Run, Step
from orchestration.models.runs import FINAL_RUN_STATUSES, RunStatus, StepStatus
from orchestration import live
from orchestration.providers.pool import close_clients
from orchestration.recording import stored_input, workflow_steps_all_local
from orchestration.registry import cached_registry, get_registry
from orchestration.response_cache import cache_scope
from orchestration.reviews.actions import open_review
from orchestration.reviews.selectors import decisions_for_run
from orchestration.runs import executing
from orchestration.runs.events import publish_run_on_commit
from orchestration.runs.leases import execution_lease
from orchestration.runs.sink import DurableSink

logger = logging.getLogger(__name__)
RUNNABLE = (RunStatus.QUEUED, RunStatus.RUNNING)


@dataclass
class Prepared:
    run_id: str
    spec: dict
    workflow: str  # the slug: calibration names a step "<workflow>/<node id>"
    input: object
    api_key_id: int | None
    budget_usd: float | None
    deadline_s: float | None
    spent_usd: float
    started_at: object
    metadata: dict
    completed: dict[str, dict]
    decisions: dict[str, dict]
    team_id: int | None = None  # the run's team: its response-cache space (orchestration/response_cache.py)
    allowed_targets: frozenset[str] | None = None  # what the run's team may call; None = everything
    payer: object | None = None  # access/budgets.Payer: the key's (else the run's team's) budgets each step reserves against


def execute_run(run_id) -> str | None:
    """Execute (or go on with) a run, from sync code; returns its status afterwards. Safe to call twice."""
    async def execute_and_close():
        try:
            return await execute_run_async(run_id)
        finally:
            await live.sent()  # the run's last live events, before this loop ends
            await close_clients()

    return asyncio.run(execute_and_close())


async def execute_run_async(run_id, *, final_stream=None) -> str | None:
    """`final_stream`: where the run's final model call streams its deltas (see engine/workflow.py).
    None when the run is already under way, here or (embedded mode) in another process."""
    run_id = str(run_id)
    if not executing.begin(run_id):
        return None  # already under way in this process
    try:
        lease = await asyncio.to_thread(execution_lease, run_id)  # creates a file: not on the event loop
        if lease is None:
            return None  # another live process executes it
        ended = False
        try:
            prepared = await sync_to_async(_prepare)(run_id)
            if prepared is None:
                status = await sync_to_async(_status)(run_id)
            else:
                status = await _execute(prepared, final_stream=final_stream)
            ended = True
            return status
        finally:
            lease.release(ended=ended)  # not ended (the process stopping, a bug): the sweep resumes it
    finally:
        executing.end(run_id)


def _status(run_id: str) -> str | None:
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


def _prepare(run_id: str) -> Prepared | None:
    """Claim a queued (or interrupted) run and read what executing it needs; None if there is nothing to do."""
    now = timezone.now()
    with transaction.atomic():
        # of=("self",): PostgreSQL cannot lock the nullable side of the outer join to workflow_version.
        run = Run.objects.select_for_update(of=("self",)).select_related(
            "workflow_version__workflow", "team").filter(pk=run_id).first()
        if run is None or run.status not in RUNNABLE or run.workflow_version is None:
            return None
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or now
        run.save(update_fields=["status", "started_at"])
    publish_run_on_commit(run.pk)
    completed = {}
    for step in Step.objects.filter(run_id=run_id, status=StepStatus.SUCCEEDED).only(
            "key", "output", "confidence", "tokens_in", "tokens_out", "cost_usd", "latency_ms", "model_alias",
            "tokens_estimated", "confidence_method", "confidence_raw", "attributes"):
        completed[step.key] = {"output": step.output, "confidence": step.confidence, "tokens_in": step.tokens_in,
                               "tokens_out": step.tokens_out, "cost_usd": float(step.cost_usd),
                               "latency_ms": step.latency_ms, "model": step.model_alias,
                               "tokens_estimated": step.tokens_estimated,
                               "confidence_method": step.confidence_method, "confidence_raw": step.confidence_raw,
                               "attributes": step.attributes}
    return Prepared(
        run_id=run_id, spec=run.workflow_version.spec, workflow=run.workflow_version.workflow.slug, input=run.input, api_key_id=run.api_key_id,
        budget_usd=float(run.budget_usd) if run.budget_usd is not None else None,
        deadline_s=(run.deadline_at - now).total_seconds() if run.deadline_at else None,
        spent_usd=float(run.cost_usd), started_at=run.started_at, metadata=dict(run.metadata or {}),
        completed=completed, decisions=decisions_for_run(run_id), team_id=run.team_id,
        allowed_targets=TeamInfo.of(run.team).allowed_targets if run.team_id else None,
        payer=budgets.Payer.for_run(run.api_key_id, run.team_id))  # no key (a person's run): the team's budgets


def routing_stats() -> dict:
    """Observed per-model statistics for routing (cached by orchestration.learning), or none."""
    try:
        return learned_routing_stats()
    except Exception:  # statistics are a refinement; routing falls back to priors
        logger.warning("routing statistics unavailable", exc_info=True)
        return {}


async def current_registry():
    return cached_registry() or await sync_to_async(get_registry)()


async def _execute(prepared: Prepared, *, final_stream=None) -> str:
    meta = {"completed_steps": prepared.completed, "decisions": prepared.decisions,
            "run_metadata": prepared.metadata, "model_stats": await sync_to_async(routing_stats)(),
            "workflow": prepared.workflow, "cache_scope": cache_scope(prepared.team_id)}
    sink = DurableSink(run_id=prepared.run_id, api_key_id=prepared.api_key_id, meta=meta,
                       loop=asyncio.get_running_loop())
    # A team's run sees only the models and route aliases its team may call (engine/registry.py `within`).
    registry = (await current_registry()).within(prepared.allowed_targets)
    ctx = RunContext(run_id=prepared.run_id, registry=registry, sink=sink,
                     data_class=prepared.metadata.get("data_class"), spent_usd=prepared.spent_usd,
                     budget_usd=prepared.budget_usd, meta=meta, calibrations=await current_calibrations(),
                     deadline=time.monotonic() + prepared.deadline_s if prepared.deadline_s is not None else None,
                     budgets=budgets.RunBudgets(prepared.payer) if prepared.payer is not None else None)
    result: NodeResult | None = None
    review: AwaitingReview | None = None
    error, failure_code = "", ""
    try:
        result = await run_workflow(engine, ctx, prepared.spec, prepared.input, final_stream=final_stream)
        status = RunStatus.SUCCEEDED
    except AwaitingReview as exc:
        status, review = RunStatus.AWAITING_REVIEW, exc
    except BudgetExceeded as exc:
        status, error = RunStatus.BUDGET_EXCEEDED, str(exc)
    except DeadlineExceeded as exc:
        status, error = RunStatus.DEADLINE_EXCEEDED, str(exc)
    except (RunCancelled, asyncio.CancelledError):
        status, error = RunStatus.CANCELLED, "cancelled"
    except StepFailed as exc:
        status, error, failure_code = RunStatus.FAILED, str(exc), policy_refusal_code(exc)
    except SpecInvalid as exc:
        status, error = RunStatus.FAILED, f"the workflow's spec is invalid: {exc}"
    except Exception as exc:  # a bug must still end the run, visibly
        logger.exception("run %s failed unexpectedly", prepared.run_id)
        status, error = RunStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}"
    await asyncio.to_thread(sink.close)
    return await sync_to_async(finish_run)(prepared.run_id, status=status, result=result, error=error, review=review,
                                           failure_code=failure_code)


def policy_refusal_code(exc: BaseException) -> str:
    """The policy's code when a run failed because its data class may go to none of the models it needed
    (the refusal is the failure's cause somewhere down the chain a cascade or route builds), else ""."""
    while exc is not None:
        if isinstance(exc, PolicyViolation):
            return exc.code
        exc = exc.__cause__
    return ""


def finish_run(run_id: str, *, status: str, result: NodeResult | None, error: str = "",
               review: AwaitingReview | None = None, failure_code: str = "") -> str:
    """Record where the run stands, in one transaction with the review it opens; publish after commit.

    `failure_code` (metadata `failure_code`) tells callers why a failed run failed when it was the caller's
    doing rather than a model's: /v1 answers a policy refusal 403, not 502."""
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.status == RunStatus.CANCELLED:
            status = RunStatus.CANCELLED  # a cancel that raced the end wins
        totals = Step.objects.filter(run_id=run_id, node_type="call").aggregate(
            tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"), cost_usd=Sum("cost_usd"))
        run.tokens_in, run.tokens_out = totals["tokens_in"] or 0, totals["tokens_out"] or 0
        run.cost_usd = totals["cost_usd"] or Decimal(0)
        run.status, run.error = status, error[:10_000]
        if failure_code:
            run.metadata = {**(run.metadata or {}), "failure_code": failure_code}
        if result is not None:
            run.output, run.confidence = result.output, result.confidence
        if status in FINAL_RUN_STATUSES:
            # The input stays as written while later steps may need it; once ended it is stored as the policy
            # redacted it for the upstream (in clear only when every call went to a local provider).
            run.input, redacted = stored_input(run.input, all_local=workflow_steps_all_local(run_id))
            if redacted:
                run.metadata = {**(run.metadata or {}), "input_redacted": redacted}
            run.finished_at = now
            run.latency_ms = (now - (run.started_at or run.created_at)).total_seconds() * 1000
            # Steps cut off by the deadline, the budget or a cancel never finished.
            Step.objects.filter(run_id=run_id, status=StepStatus.RUNNING).update(
                status=StepStatus.CANCELLED, finished_at=now)
        run.save()
        if review is not None:
            _open_review(run_id, review)
        publish_run_on_commit(run_id)
    return status


def _open_review(run_id: str, review: AwaitingReview) -> None:
    open_review(run_id=run_id, step_key=review.gate_key, node_id=review.node_id, reason=review.reason,
                request=review.request, candidates=review.candidates, due_in_s=review.due_in_s,
                default_action=review.default_action)


"""`model: "workflow/<slug>"` on /v1: a workflow run executed in the request, answering like one model."""
from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async

from orchestration.access.apikeys import KeyInfo
from orchestration.engine.executor import NodeResult
from orchestration.engine.policy import PolicyViolation
from orchestration.errors import GatewayError
from orchestration.gateway.chat import ChatOutcome
from orchestration.models import ReviewItem, Run
from orchestration.models.runs import RunStatus
from orchestration.runs.actions import (IdempotencyConflict, WorkflowNotFound, create_run, create_run_once,
                                        valid_idempotency_key)
from orchestration.runs.execution import execute_run_async


WORKFLOW_PREFIX = "workflow/"
REPLAY_WAIT_S = 600.0  # a retry waits this long for the first attempt's run to stop before answering 409
REPLAY_POLL_S = 0.2
WORKFLOW_STATUS_CODES = {  # how a workflow run that did not succeed answers /v1 callers
    RunStatus.FAILED: "workflow_failed",
    RunStatus.BUDGET_EXCEEDED: "budget_exceeded",
    RunStatus.DEADLINE_EXCEEDED: "deadline_exceeded",
    RunStatus.CANCELLED: "run_cancelled",
}


def data_class_metadata(data_class: str | None, key: KeyInfo) -> dict:
    """The run's `data_class` metadata (what the run's steps are held to): the request's, else the key's or
    its team's default (the /v1 handler already resolves it; callers without a request class get the key's)."""
    resolved = data_class or key.default_data_class
    return {"data_class": resolved} if resolved else {}


async def run_workflow_sync(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                            metadata: dict | None = None, stream: bool = False, data_class: str | None = None,
                            idempotency_key: str | None = None) -> ChatOutcome:
    """`model: "workflow/<slug>"` on /v1: the run executes in this request and answers like one model.

    A run that pauses at a gate answers with `pending` (HTTP 202: the run id and where to review it).
    Sampling params are not applied to a workflow's calls (its spec sets their params). A retry with the
    first attempt's Idempotency-Key answers with that attempt's run, once it stopped, instead of a second run.
    """
    if stream:  # a streamed workflow is `stream_workflow`'s
        raise GatewayError("run_workflow_sync does not stream; use stream_workflow.",
                           code="unsupported_parameter", param="stream")
    meta = {**(metadata or {}), **data_class_metadata(data_class, key)}
    run, replayed = await _workflow_run(key, model_name, messages, meta, idempotency_key)
    run_id = str(run.pk)
    if replayed:
        await _until_stopped(run_id)
    else:
        await execute_run_async(run_id)
    return await workflow_outcome(run_id, model_name)


async def _workflow_run(key: KeyInfo, model_name: str, messages: list[dict], meta: dict,
                        idempotency_key: str | None) -> tuple[Run, bool]:
    """The run to execute, created now; or, under an Idempotency-Key this key already sent, its first run."""
    request = dict(workflow_slug=model_name.removeprefix(WORKFLOW_PREFIX), input={"messages": messages},
                   metadata=meta, api_key_id=key.id, team_id=key.team_id, status=RunStatus.RUNNING)
    try:
        if idempotency_key is None:
            return await sync_to_async(create_run)(**request), False
        if not valid_idempotency_key(idempotency_key):
            raise GatewayError("The Idempotency-Key header must be 1 to 255 printable ASCII characters, no spaces.",
                               code="invalid_request")
        return await sync_to_async(create_run_once)(owner=f"key:{key.id}", idempotency_key=idempotency_key,
                                                    **request)
    except WorkflowNotFound as exc:
        raise GatewayError(str(exc), code="model_not_found", param="model") from None
    except IdempotencyConflict as exc:
        raise GatewayError(str(exc), code=exc.code) from None


async def _until_stopped(run_id: str) -> None:
    """Wait while the first attempt's run is still under way (it executes in that attempt's request)."""
    deadline = asyncio.get_running_loop().time() + REPLAY_WAIT_S
    while await sync_to_async(_status)(run_id) in (RunStatus.QUEUED, RunStatus.RUNNING):
        if asyncio.get_running_loop().time() > deadline:
            raise GatewayError("The first request with this Idempotency-Key is still running; retry later.",
                               code="idempotency_in_progress", run_id=run_id)
        await asyncio.sleep(REPLAY_POLL_S)


def _status(run_id: str) -> str:
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first() or RunStatus.FAILED


async def workflow_outcome(run_id: str, model_name: str) -> ChatOutcome:
    """How a workflow run that stopped answers /v1: its output, a pending review (202) or a GatewayError."""
    run, review_id = await sync_to_async(_finished_run)(run_id)
    created = int(run.created_at.timestamp())
    if run.status == RunStatus.AWAITING_REVIEW:
        pending = {"id": run_id, "object": "podium.run", "status": run.status, "model": model_name,
                   "run_url": f"/api/runs/{run_id}/",
                   "review_url": f"/api/reviews/{review_id}/" if review_id else f"/api/runs/{run_id}/"}
        return ChatOutcome(run_id=run_id, created=created, model=model_name,
                           result=NodeResult(output="", confidence=0.0), pending=pending)
    if run.status == RunStatus.FAILED and (run.metadata or {}).get("failure_code") == PolicyViolation.code:
        raise GatewayError(f"The workflow run was refused: {run.error}", code=PolicyViolation.code,
                           type="permission_error", param="podium.data_class", run_id=run_id)
    if run.status != RunStatus.SUCCEEDED:
        code = WORKFLOW_STATUS_CODES.get(run.status, "workflow_failed")
        raise GatewayError(f"The workflow run ended {run.status}: {run.error}", code=code, type="api_error",
                           run_id=run_id)
    result = NodeResult(output=run.output, confidence=run.confidence or 0.0, tokens_in=run.tokens_in,
                        tokens_out=run.tokens_out, cost_usd=float(run.cost_usd), latency_ms=run.latency_ms or 0.0,
                        model=model_name)
    return ChatOutcome(run_id=run_id, created=created, model=model_name, result=result)


class WorkflowStream:
    """A streamed `workflow/<slug>` request: the run executes in a task while its final model call's deltas
    (engine/workflow.py: a call, a route's call, or a sequence's last stage) come out of `deltas()`.

    `deltas()` ends when the run stopped, having yielded nothing if the final node does not stream (a
    parallel, cascade, refine, supervisor or gate) or the run failed or paused before it; `outcome()` then
    says how it ended. `aclose()` cancels a run still under way: the streamed step and the run are recorded
    `cancelled` (the client went away)."""

    def __init__(self, *, run_id: str, model_name: str, created: int) -> None:
        self.run_id, self.model, self.created = run_id, model_name, created
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.ensure_future(execute_run_async(run_id, final_stream=self._queue.put))
        self._task.add_done_callback(lambda _: self._queue.put_nowait(None))  # the end of the deltas

    async def deltas(self):
        while (delta := await self._queue.get()) is not None:
            yield delta

    async def outcome(self) -> ChatOutcome:
        await self._task
        return await workflow_outcome(self.run_id, self.model)

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


async def stream_workflow(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                          metadata: dict | None = None, data_class: str | None = None,
                          idempotency_key: str | None = None) -> "WorkflowStream | ReplayedWorkflowStream":
    """`model: "workflow/<slug>"` with stream=true: the run is created now (an unknown workflow is a plain
    404) and executes while the caller reads its final call's deltas (see WorkflowStream). A retry under the
    first attempt's Idempotency-Key gets that run's answer, streamed whole once it stopped."""
    meta = {**(metadata or {}), **data_class_metadata(data_class, key), "stream": True}
    run, replayed = await _workflow_run(key, model_name, messages, meta, idempotency_key)
    stream_class = ReplayedWorkflowStream if replayed else WorkflowStream
    return stream_class(run_id=str(run.pk), model_name=model_name, created=int(run.created_at.timestamp()))


class ReplayedWorkflowStream:
    """A retried streamed request: no deltas of its own; `outcome()` is the first attempt's, once it stopped
    (the caller then sends it as one streamed answer, as for a final node that does not stream)."""

    def __init__(self, *, run_id: str, model_name: str, created: int) -> None:
        self.run_id, self.model, self.created = run_id, model_name, created

    async def deltas(self):
        return
        yield  # an async generator that yields nothing

    async def outcome(self) -> ChatOutcome:
        await _until_stopped(self.run_id)
        return await workflow_outcome(self.run_id, self.model)

    async def aclose(self) -> None:
        pass  # the run belongs to the first attempt: a retry that leaves does not cancel it


def _finished_run(run_id: str):
    run = Run.objects.get(pk=run_id)
    review_id = None
    if run.status == RunStatus.AWAITING_REVIEW:
        review_id = (ReviewItem.objects.filter(run_id=run_id).order_by("-created_at")
                     .values_list("id", flat=True).first())
    return run, review_id

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
from orchestration.runs.actions import WorkflowNotFound, create_run
from orchestration.runs.execution import execute_run_async


WORKFLOW_PREFIX = "workflow/"
WORKFLOW_STATUS_CODES = {  # how a workflow run that did not succeed answers /v1 callers
    RunStatus.FAILED: "workflow_failed",
    RunStatus.BUDGET_EXCEEDED: "budget_exceeded",
    RunStatus.DEADLINE_EXCEEDED: "deadline_exceeded",
    RunStatus.CANCELLED: "run_cancelled",
}


async def run_workflow_sync(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                            metadata: dict | None = None, stream: bool = False,
                            data_class: str | None = None) -> ChatOutcome:
    """`model: "workflow/<slug>"` on /v1: the run executes in this request and answers like one model.

    A run that pauses at a gate answers with `pending` (HTTP 202: the run id and where to review it).
    Sampling params are not applied to a workflow's calls (its spec sets their params).
    """
    if stream:  # a streamed workflow is `stream_workflow`'s
        raise GatewayError("run_workflow_sync does not stream; use stream_workflow.",
                           code="unsupported_parameter", param="stream")
    slug = model_name.removeprefix(WORKFLOW_PREFIX)
    meta = {**(metadata or {}), **({"data_class": data_class} if data_class else {})}
    try:
        run = await sync_to_async(create_run)(workflow_slug=slug, input={"messages": messages}, metadata=meta,
                                                   api_key_id=key.id, status=RunStatus.RUNNING)
    except WorkflowNotFound as exc:
        raise GatewayError(str(exc), code="model_not_found", param="model") from None
    run_id = str(run.pk)
    await execute_run_async(run_id)
    return await workflow_outcome(run_id, model_name)


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
                          metadata: dict | None = None, data_class: str | None = None) -> WorkflowStream:
    """`model: "workflow/<slug>"` with stream=true: the run is created now (an unknown workflow is a plain
    404) and executes while the caller reads its final call's deltas (see WorkflowStream)."""
    slug = model_name.removeprefix(WORKFLOW_PREFIX)
    meta = {**(metadata or {}), **({"data_class": data_class} if data_class else {}), "stream": True}
    try:
        run = await sync_to_async(create_run)(workflow_slug=slug, input={"messages": messages}, metadata=meta,
                                                   api_key_id=key.id, status=RunStatus.RUNNING)
    except WorkflowNotFound as exc:
        raise GatewayError(str(exc), code="model_not_found", param="model") from None
    return WorkflowStream(run_id=str(run.pk), model_name=model_name, created=int(run.created_at.timestamp()))


def _finished_run(run_id: str):
    run = Run.objects.get(pk=run_id)
    review_id = None
    if run.status == RunStatus.AWAITING_REVIEW:
        review_id = (ReviewItem.objects.filter(run_id=run_id).order_by("-created_at")
                     .values_list("id", flat=True).first())
    return run, review_id

"""The entry points the outside world calls. Views, consumers and tasks stay thin doors into here."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from orchestration import live
from orchestration.access.apikeys import KeyInfo
from orchestration.engine.events import now_ms
from orchestration.engine.executor import Engine, NodeResult, RunContext, StepFailed
from orchestration.engine.registry import Registry
from orchestration.engine.embeddings import call_embeddings, serves_embeddings
from orchestration.engine.streaming import ModelStream, stream_model
from orchestration.engine.policy import PolicyViolation
from orchestration.engine.types import ChatRequest, ModelSpec
from orchestration.engine_config import engine
from orchestration.ids import new_id
from orchestration.models import Run
from orchestration.models.runs import RunStatus
from orchestration.recording import Row, money, ms_to_datetime, step_row, writer
from orchestration.registry import cached_registry, get_registry
from orchestration.runs.actions import create_run, WorkflowNotFound
from orchestration.runs.execution import execute_run_async

class GatewayError(Exception):
    """A request Podium refuses or cannot serve; the API layer maps it to its wire format."""

    def __init__(self, status: int, message: str, *, code: str, type: str = "invalid_request_error",
                 param: str | None = None, retry_after: float | None = None, run_id: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type
        self.param, self.retry_after, self.run_id = param, retry_after, run_id


@dataclass
class ChatOutcome:
    run_id: str
    created: int
    model: str
    result: NodeResult
    pending: dict | None = None  # a workflow run paused for review: what the client gets instead (HTTP 202)


class PublishingSink:
    """Publishes every event live and keeps finished steps for the run's record."""

    def __init__(self) -> None:
        self.finished: list[dict] = []

    def emit(self, event: dict) -> None:
        if event["type"] == "step.finished":
            self.finished.append(event)
        live.publish(event)


async def current_registry() -> Registry:
    return cached_registry() or await sync_to_async(get_registry)()


async def open_chat_run(model_name: str, messages: list[dict],
                        data_class: str | None) -> tuple[RunContext, PublishingSink, ModelSpec, dict | None]:
    """A chat run's context and the model to call: the named model, or the one a route alias's strategy picks
    (its other candidates are the fallbacks; route attributes say why). An unknown name is a plain 404."""
    registry = await current_registry()
    model = registry.models.get(model_name)
    if model is None and model_name not in registry.routes:
        raise GatewayError(404, f"The model '{model_name}' does not exist or you do not have access to it.",
                           code="model_not_found", param="model")
    sink = PublishingSink()
    ctx = RunContext(run_id=new_id(), registry=registry, sink=sink, data_class=data_class)
    route_attributes = None
    if model is None:
        model, route_attributes = await resolve_chat_route(ctx, model_name, messages)
    return ctx, sink, model, route_attributes


async def chat_completion(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                          metadata: dict | None = None, data_class: str | None = None,
                          use_cache: bool = True) -> ChatOutcome:
    """A direct call to one model: no database write in the request path (the batched writer records it).

    `data_class` and `use_cache` come from the request's `podium` object (policy and response cache)."""
    ctx, sink, model, route_attributes = await open_chat_run(model_name, messages, data_class)
    run_id = ctx.run_id
    started_ms = now_ms()
    started = time.perf_counter()
    live.publish({"type": "run.updated", "ts": started_ms, "run_id": run_id, "status": RunStatus.RUNNING,
                  "target": model_name, "kind": Run.Kind.CHAT, "api_key": key.prefix})
    result, error, refused = None, "", None
    try:
        result = await engine.call_model(ctx, model, ChatRequest(messages=messages, params=params), cache=use_cache,
                                         attributes=route_attributes)
    except StepFailed as exc:
        error = str(exc)
    except PolicyViolation as exc:  # refused before any call; still recorded as a failed run
        error, refused = str(exc), exc
    latency_ms = (time.perf_counter() - started) * 1000
    status = RunStatus.SUCCEEDED if result else RunStatus.FAILED
    run = Row(  # plain values: the writer needs no Model instance (recording.Row)
        Run, id=run_id, kind=Run.Kind.CHAT, target=model_name, api_key_id=key.id, status=status,
        input={"messages": messages}, output=result.output if result else "",
        confidence=result.confidence if result else None,
        tokens_in=result.tokens_in if result else 0, tokens_out=result.tokens_out if result else 0,
        cost_usd=money(ctx.spent_usd), latency_ms=latency_ms, error=error, metadata=metadata or {},
        created_at=(started_at := ms_to_datetime(started_ms)), started_at=started_at,
        finished_at=ms_to_datetime(finished_ms := now_ms()),
    )
    writer.add(run, [step_row(event) for event in sink.finished])
    live.publish({"type": "run.updated", "ts": finished_ms, "run_id": run_id, "status": status, "target": model_name,
                  "kind": Run.Kind.CHAT, "api_key": key.prefix, "cost_usd": ctx.spent_usd,
                  "latency_ms": latency_ms, "tokens_in": run.tokens_in, "tokens_out": run.tokens_out})
    if refused is not None:
        raise GatewayError(403, error, code=refused.code, type="permission_error", param="podium.data_class",
                           run_id=run_id)
    if result is None:
        raise GatewayError(502, f"The upstream model failed: {error}", code="upstream_error", type="api_error",
                           run_id=run_id)
    return ChatOutcome(run_id=run_id, created=int(started_ms / 1000), model=model_name, result=result)


class ChatStream:
    """A streamed completion under way: iterate for its deltas; the run is recorded when the iteration ends,
    however it ends (finished, failed, or closed because the client went away)."""

    def __init__(self, *, key: KeyInfo, model_name: str, messages: list[dict], metadata: dict | None,
                 ctx: RunContext, sink: PublishingSink, stream: ModelStream) -> None:
        self.key, self.model = key, model_name
        self.run_id, self.ctx, self.sink, self.stream = ctx.run_id, ctx, sink, stream
        self.messages, self.metadata = messages, metadata or {}
        self.started_ms = now_ms()
        self.created = int(self.started_ms / 1000)
        self._started = time.perf_counter()
        self._iterator = self._deltas()

    def __aiter__(self):
        return self._iterator

    async def aclose(self) -> None:
        await self._iterator.aclose()

    async def _deltas(self):
        status, error = RunStatus.FAILED, ""
        live.publish({"type": "run.updated", "ts": self.started_ms, "run_id": self.run_id, "status": RunStatus.RUNNING,
                      "target": self.model, "kind": Run.Kind.CHAT, "api_key": self.key.prefix})
        try:
            async for delta in self.stream:
                yield delta
            status = RunStatus.SUCCEEDED
        except Exception as exc:  # StepFailed, PolicyViolation, the run's limits
            error = str(exc) or type(exc).__name__
            raise
        except BaseException:  # GeneratorExit or CancelledError: the client went away
            status, error = RunStatus.CANCELLED, "the client disconnected"
            raise
        finally:
            await self.stream.aclose()
            self._record(status, error)

    def _record(self, status: str, error: str) -> None:
        result, ctx = self.stream.result, self.ctx
        finished = self.sink.finished
        latency_ms = (time.perf_counter() - self._started) * 1000
        tokens_in = sum(event.get("tokens_in", 0) for event in finished)
        tokens_out = sum(event.get("tokens_out", 0) for event in finished)
        output = result.output if result else (finished[-1].get("output", "") if finished else "")
        run = Row(
            Run, id=self.run_id, kind=Run.Kind.CHAT, target=self.model, api_key_id=self.key.id, status=status,
            input={"messages": self.messages}, output=output, confidence=result.confidence if result else None,
            tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=money(ctx.spent_usd), latency_ms=latency_ms,
            error=error, metadata={**self.metadata, "stream": True}, created_at=ms_to_datetime(self.started_ms),
            started_at=ms_to_datetime(self.started_ms), finished_at=ms_to_datetime(now_ms()),
        )
        writer.add(run, [step_row(event) for event in finished])
        live.publish({"type": "run.updated", "ts": now_ms(), "run_id": self.run_id, "status": status,
                      "target": self.model, "kind": Run.Kind.CHAT, "api_key": self.key.prefix,
                      "cost_usd": ctx.spent_usd, "latency_ms": latency_ms, "tokens_in": tokens_in,
                      "tokens_out": tokens_out})


async def stream_chat_completion(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                                 metadata: dict | None = None, data_class: str | None = None,
                                 use_cache: bool = True) -> ChatStream:
    """A streamed call to a model or route alias (with fallbacks): resolved now, so an unknown model is a
    plain 404. Streams are never served from the response cache (`use_cache` is accepted and ignored)."""
    ctx, sink, model, route_attributes = await open_chat_run(model_name, messages, data_class)
    stream = stream_model(engine, ctx, model, ChatRequest(messages=messages, params=params),
                          attributes=route_attributes)
    return ChatStream(key=key, model_name=model_name, messages=messages, metadata=metadata, ctx=ctx, sink=sink,
                      stream=stream)


@dataclass
class EmbeddingsOutcome:
    run_id: str
    data: dict  # OpenAI's embeddings answer, with the public alias as its model


async def create_embeddings(*, key: KeyInfo, model_name: str, params: dict, metadata: dict | None = None,
                            data_class: str | None = None, use_cache: bool = True) -> EmbeddingsOutcome:
    """Embeddings from a model that serves them, through the policy, redaction, circuit breakers, retries and
    fallbacks chat calls go through (engine/embeddings.py); recorded as a run like a chat call.

    `data_class` comes from the request's `podium` object; embeddings are never served from the response
    cache (`use_cache` is accepted and ignored)."""
    registry = await current_registry()
    model = registry.models.get(model_name)
    if model is None:
        raise GatewayError(404, f"The model '{model_name}' does not exist or you do not have access to it.",
                           code="model_not_found", param="model")
    if not serves_embeddings(engine, model):
        raise GatewayError(400, f"The model '{model_name}' does not serve embeddings.", code="unsupported_model",
                           param="model")
    sink = PublishingSink()
    ctx = RunContext(run_id=new_id(), registry=registry, sink=sink, data_class=data_class)
    run_id = ctx.run_id
    started_ms = now_ms()
    started = time.perf_counter()
    result, error, refused = None, "", None
    try:
        result = await call_embeddings(engine, ctx, model, params)
    except StepFailed as exc:
        error = str(exc)
    except PolicyViolation as exc:  # refused before any call; still recorded as a failed run
        error, refused = str(exc), exc
    latency_ms = (time.perf_counter() - started) * 1000
    status = RunStatus.SUCCEEDED if result else RunStatus.FAILED
    text = params.get("input")
    run = Row(
        Run, id=run_id, kind=Run.Kind.EMBEDDINGS, target=model_name, api_key_id=key.id, status=status,
        input={"input": text if isinstance(text, str) else f"{len(text)} inputs"},
        output=result.output if result else "", tokens_in=result.tokens_in if result else 0,
        cost_usd=money(ctx.spent_usd), latency_ms=latency_ms, error=error, metadata=metadata or {},
        created_at=(started_at := ms_to_datetime(started_ms)), started_at=started_at,
        finished_at=ms_to_datetime(finished_ms := now_ms()),
    )
    writer.add(run, [step_row(event) for event in sink.finished])
    live.publish({"type": "run.updated", "ts": finished_ms, "run_id": run_id, "status": status, "target": model_name,
                  "kind": Run.Kind.EMBEDDINGS, "api_key": key.prefix, "cost_usd": ctx.spent_usd,
                  "latency_ms": latency_ms, "tokens_in": run.tokens_in, "tokens_out": 0})
    if refused is not None:
        raise GatewayError(403, error, code=refused.code, type="permission_error", param="podium.data_class",
                           run_id=run_id)
    if result is None:
        raise GatewayError(502, f"The upstream model failed: {error}", code="upstream_error", type="api_error",
                           run_id=run_id)
    # The answer's `model` is the alias asked for: a fallback serves the same upstream model (engine/embeddings.py).
    return EmbeddingsOutcome(run_id=run_id, data={**result.raw, "model": model_name})


async def resolve_chat_route(ctx: RunContext, route_name: str, messages: list[dict]):
    """(model, step attributes) a route alias picks for a chat request (see orchestration/engine/routing.py)."""
    from orchestration.engine.routing import resolve_route
    from orchestration.engine.workflow import input_text
    from orchestration.runs.execution import routing_stats

    async def classify(alias: str, prompt: str) -> NodeResult:
        return await engine.call_model(ctx, ctx.registry.model(alias),
                                       ChatRequest(messages=[{"role": "user", "content": prompt}]),
                                       key="classify", node_id="classify", attributes={"role": "classifier"})

    try:
        return await resolve_route(ctx.registry.routes[route_name], ctx.registry, text=input_text({"messages": messages}),
                                   stats=await sync_to_async(routing_stats)(), classify=classify)
    except (LookupError, StepFailed) as exc:
        raise GatewayError(503, f"The route '{route_name}' has no model to send this request to: {exc}",
                           code="route_unavailable", type="api_error") from None


WORKFLOW_PREFIX = "workflow/"
WORKFLOW_STATUS_ERRORS = {  # run status -> (HTTP status, code) for /v1 callers
    RunStatus.FAILED: (502, "workflow_failed"),
    RunStatus.BUDGET_EXCEEDED: (402, "budget_exceeded"),
    RunStatus.DEADLINE_EXCEEDED: (504, "deadline_exceeded"),
    RunStatus.CANCELLED: (409, "run_cancelled"),
}


async def run_workflow_sync(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                            metadata: dict | None = None, stream: bool = False, data_class: str | None = None,
                            use_cache: bool = True) -> ChatOutcome:
    """`model: "workflow/<slug>"` on /v1: the run executes in this request and answers like one model.

    A run that pauses at a gate answers with `pending` (HTTP 202: the run id and where to review it).
    Sampling params are not applied to a workflow's calls (its spec sets their params).
    """
    if stream:  # a streamed workflow is `stream_workflow`'s
        raise GatewayError(400, "run_workflow_sync does not stream; use stream_workflow.",
                           code="unsupported_parameter", param="stream")
    slug = model_name.removeprefix(WORKFLOW_PREFIX)
    meta = {**(metadata or {}), **({"data_class": data_class} if data_class else {})}
    try:
        run = await sync_to_async(create_run)(workflow_slug=slug, input={"messages": messages}, metadata=meta,
                                                   api_key_id=key.id, status=RunStatus.RUNNING)
    except WorkflowNotFound as exc:
        raise GatewayError(404, str(exc), code="model_not_found", param="model") from None
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
        raise GatewayError(403, f"The workflow run was refused: {run.error}", code=PolicyViolation.code,
                           type="permission_error", param="podium.data_class", run_id=run_id)
    if run.status != RunStatus.SUCCEEDED:
        status, code = WORKFLOW_STATUS_ERRORS.get(run.status, (502, "workflow_failed"))
        raise GatewayError(status, f"The workflow run ended {run.status}: {run.error}", code=code, type="api_error",
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
                          use_cache: bool = True) -> WorkflowStream:
    """`model: "workflow/<slug>"` with stream=true: the run is created now (an unknown workflow is a plain
    404) and executes while the caller reads its final call's deltas (see WorkflowStream)."""
    slug = model_name.removeprefix(WORKFLOW_PREFIX)
    meta = {**(metadata or {}), **({"data_class": data_class} if data_class else {}), "stream": True}
    try:
        run = await sync_to_async(create_run)(workflow_slug=slug, input={"messages": messages}, metadata=meta,
                                                   api_key_id=key.id, status=RunStatus.RUNNING)
    except WorkflowNotFound as exc:
        raise GatewayError(404, str(exc), code="model_not_found", param="model") from None
    return WorkflowStream(run_id=str(run.pk), model_name=model_name, created=int(run.created_at.timestamp()))


def _finished_run(run_id: str):
    from orchestration.models import ReviewItem

    run = Run.objects.get(pk=run_id)
    review_id = None
    if run.status == RunStatus.AWAITING_REVIEW:
        review_id = (ReviewItem.objects.filter(run_id=run_id).order_by("-created_at")
                     .values_list("id", flat=True).first())
    return run, review_id

"""Chat completions on /v1: one call to a model or a route alias (with its fallbacks), recorded as a run."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from asgiref.sync import sync_to_async

from orchestration import live
from orchestration.access import budgets
from orchestration.access.apikeys import KeyInfo
from orchestration.calibration.store import current_calibrations
from orchestration.engine.events import Event, StepFinished, now_ms, with_team
from orchestration.engine.executor import NodeResult, RunContext, StepFailed
from orchestration.engine.policy import PolicyViolation
from orchestration.engine.registry import Registry
from orchestration.engine.routing import CLASSIFIER_MAX_TOKENS, resolve_route
from orchestration.engine.types import ChatRequest, ModelSpec
from orchestration.engine.workflow import input_text
from orchestration.engine_config import engine
from orchestration.errors import GatewayError
from orchestration.gateway.records import (attempt_call, failed_call_error, publish_call_started, record_call,
                                           record_later)
from orchestration.ids import new_id
from orchestration.models import Run
from orchestration.models.runs import RunStatus
from orchestration.registry import cached_registry, get_registry
from orchestration.response_cache import cache_scope
from orchestration.learning import cached_routing_stats
from orchestration.runs.execution import routing_stats

logger = logging.getLogger(__name__)


@dataclass
class ChatOutcome:
    run_id: str
    created: int
    model: str
    result: NodeResult
    pending: dict | None = None  # a workflow run paused for review: what the client gets instead (HTTP 202)
    # The call's record, when it waits for the answer to be sent (`answered`); None once recorded.
    unrecorded: Callable[[], None] | None = None

    def answered(self) -> None:
        """The answer was handed to the server (or could not be): record the call now if it is still due.
        Never raises: the answer is out, so a failure here can only be logged."""
        record, self.unrecorded = self.unrecorded, None
        if record is None:
            return
        try:
            record()
        except Exception:
            logger.exception("run %s: the call was answered but could not be recorded", self.run_id)


class PublishingSink:
    """Publishes every event live (step events stamped with the key's team) and keeps finished steps for the
    run's record."""

    def __init__(self, team: int | None = None) -> None:
        self.finished: list[StepFinished] = []
        self.team = team

    def emit(self, event: Event) -> None:
        if event["type"] == "step.finished":
            self.finished.append(event)
        live.publish(with_team(event, self.team) if event["type"] in ("step.started", "step.finished") else event)


async def current_registry() -> Registry:
    return cached_registry() or await sync_to_async(get_registry)()


def model_not_found(model_name: str) -> GatewayError:
    """One answer for a model that does not exist and one the key's team may not call: never a hint."""
    return GatewayError(f"The model '{model_name}' does not exist or you do not have access to it.",
                        code="model_not_found", param="model")


async def open_chat_run(model_name: str, messages: list[dict], data_class: str | None,
                        key: KeyInfo | None = None) -> tuple[RunContext, PublishingSink, ModelSpec, dict | None]:
    """A chat run's context and the model to call: the named model, or the one a route alias's strategy picks
    (its other candidates are the fallbacks; route attributes say why). An unknown name, or one the key's team
    may not call, is a plain 404."""
    registry = await current_registry()
    model = registry.models.get(model_name)
    if (model is None and model_name not in registry.routes) or (key is not None and not key.may_call(model_name)):
        raise model_not_found(model_name)
    if key is not None and key.team is not None:  # fallbacks and route candidates: only what the team may call
        registry = registry.within(key.team.allowed_targets)
    sink = PublishingSink(key.team_id if key else None)
    ctx = RunContext(run_id=new_id(), registry=registry, sink=sink, data_class=data_class,
                     calibrations=await current_calibrations(),
                     meta={"cache_scope": cache_scope(key.team_id if key else None)})
    route_attributes = None
    if model is None:
        model, route_attributes = await resolve_chat_route(ctx, model_name, messages)
    return ctx, sink, model, route_attributes


def chat_request(model, messages: list[dict], params: dict) -> ChatRequest:
    """A direct call asks its upstream for logprobs only when the model's confidence method is `logprobs`
    by choice (not `auto`): the hot path pays for no measurement nobody asked for. Sampling and verifier
    methods apply to workflow steps only."""
    return ChatRequest(messages=messages, params=params, want_logprobs=model.confidence.method == "logprobs")


async def chat_completion(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                          metadata: dict | None = None, data_class: str | None = None,
                          use_cache: bool = True) -> ChatOutcome:
    """A direct call to one model: no database write in the request path (the batched writer records it).

    A successful call is recorded once its answer is sent (the caller calls `outcome.answered()`), unless a
    budget hold is open: the hold is settled against the call's run, which it must see before it closes.
    A failed one is recorded before its error is raised.
    `data_class` and `use_cache` come from the request's `podium` object (policy and response cache)."""
    ctx, sink, model, route_attributes = await open_chat_run(model_name, messages, data_class, key)
    run_id = ctx.run_id
    started_ms = now_ms()
    started = time.perf_counter()
    publish_call_started(run_id=run_id, started_ms=started_ms, model_name=model_name, kind=Run.Kind.CHAT, key=key)
    result, error, refused = await attempt_call(engine.call_model(
        ctx, model, chat_request(model, messages, params), cache=use_cache, attributes=route_attributes))
    latency_ms = (time.perf_counter() - started) * 1000
    status = RunStatus.SUCCEEDED if result else RunStatus.FAILED
    record = partial(record_call, run_id=run_id, kind=Run.Kind.CHAT, model_name=model_name, key=key, status=status,
                     finished_ms=now_ms(), input={"messages": messages}, output=result.output if result else "",
                     confidence=result.confidence if result else None, tokens_in=result.tokens_in if result else 0,
                     tokens_out=result.tokens_out if result else 0, spent_usd=ctx.spent_usd, latency_ms=latency_ms,
                     error=error, metadata=metadata or {}, started_ms=started_ms, steps=sink.finished,
                     registry=ctx.registry)
    if result is None:
        record()
        raise failed_call_error(error=error, refused=refused, run_id=run_id)
    if budgets.hold_open():  # the hold is settled against the run: it must have it before it closes (bind_run)
        record()
        return ChatOutcome(run_id=run_id, created=int(started_ms / 1000), model=model_name, result=result)
    return ChatOutcome(run_id=run_id, created=int(started_ms / 1000), model=model_name, result=result,
                       unrecorded=record_later(record))


async def resolve_chat_route(ctx: RunContext, route_name: str, messages: list[dict]):
    """(model, step attributes) a route alias picks for a chat request (see orchestration/engine/routing.py)."""
    async def classify(alias: str, prompt: str) -> NodeResult:
        return await engine.call_model(ctx, ctx.registry.model(alias),
                                       ChatRequest(messages=[{"role": "user", "content": prompt}],
                                                   params={"max_tokens": CLASSIFIER_MAX_TOKENS}),  # its hold's bound
                                       key="classify", node_id="classify", attributes={"role": "classifier"})

    stats = cached_routing_stats()  # empty ({}) is fresh too: test for None
    if stats is None:
        stats = await sync_to_async(routing_stats)()
    try:
        return await resolve_route(ctx.registry.routes[route_name], ctx.registry, text=input_text({"messages": messages}),
                                   stats=stats, classify=classify,
                                   data_class=ctx.data_class)
    except PolicyViolation as exc:  # no candidate may receive the data class: refused, the rule named (403)
        raise GatewayError(str(exc), code=exc.code, type="permission_error", param="podium.data_class") from None
    except (LookupError, StepFailed) as exc:
        raise GatewayError(f"The route '{route_name}' has no model to send this request to: {exc}",
                           code="route_unavailable", type="api_error") from None

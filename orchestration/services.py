"""The entry points the outside world calls. Views, consumers and tasks stay thin doors into here."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from orchestration import live
from orchestration.apikeys import KeyInfo
from orchestration.engine.events import now_ms
from orchestration.engine.executor import Engine, NodeResult, RunContext, StepFailed
from orchestration.engine.registry import Registry
from orchestration.engine.types import ChatRequest
from orchestration.models import Run
from orchestration.models.runs import RunStatus
from orchestration.recording import money, ms_to_datetime, step_from_event, writer
from orchestration.registry import cached_registry, get_registry

engine = Engine()


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


async def chat_completion(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                          metadata: dict | None = None) -> ChatOutcome:
    """A direct call to one model: no database write in the request path (the batched writer records it)."""
    registry = await current_registry()
    model = registry.models.get(model_name)
    if model is None:
        raise GatewayError(404, f"The model '{model_name}' does not exist or you do not have access to it.",
                           code="model_not_found", param="model")
    run_id = str(uuid.uuid4())
    sink = PublishingSink()
    ctx = RunContext(run_id=run_id, registry=registry, sink=sink)
    started_ms = now_ms()
    started = time.perf_counter()
    live.publish({"type": "run.updated", "ts": started_ms, "run_id": run_id, "status": RunStatus.RUNNING,
                  "target": model_name, "kind": Run.Kind.CHAT, "api_key": key.prefix})
    result, error = None, ""
    try:
        result = await engine.call_model(ctx, model, ChatRequest(messages=messages, params=params))
    except StepFailed as exc:
        error = str(exc)
    latency_ms = (time.perf_counter() - started) * 1000
    status = RunStatus.SUCCEEDED if result else RunStatus.FAILED
    run = Run(
        id=run_id, kind=Run.Kind.CHAT, target=model_name, api_key_id=key.id, status=status,
        input={"messages": messages}, output=result.output if result else "",
        confidence=result.confidence if result else None,
        tokens_in=result.tokens_in if result else 0, tokens_out=result.tokens_out if result else 0,
        cost_usd=money(ctx.spent_usd), latency_ms=latency_ms, error=error, metadata=metadata or {},
        created_at=ms_to_datetime(started_ms), started_at=ms_to_datetime(started_ms), finished_at=ms_to_datetime(now_ms()),
    )
    writer.add(run, [step_from_event(event) for event in sink.finished])
    live.publish({"type": "run.updated", "ts": now_ms(), "run_id": run_id, "status": status, "target": model_name,
                  "kind": Run.Kind.CHAT, "api_key": key.prefix, "cost_usd": ctx.spent_usd,
                  "latency_ms": latency_ms, "tokens_in": run.tokens_in, "tokens_out": run.tokens_out})
    if result is None:
        raise GatewayError(502, f"The upstream model failed: {error}", code="upstream_error", type="api_error",
                           run_id=run_id)
    return ChatOutcome(run_id=run_id, created=int(started_ms / 1000), model=model_name, result=result)

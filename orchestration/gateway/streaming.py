"""Streamed chat completions on /v1: the deltas as they come, the run recorded however the stream ends."""
from __future__ import annotations

import time

from orchestration.access.apikeys import KeyInfo
from orchestration.engine.events import now_ms
from orchestration.engine.executor import RunContext
from orchestration.engine.streaming import ModelStream, stream_model
from orchestration.engine_config import engine
from orchestration.gateway.chat import PublishingSink, chat_request, open_chat_run
from orchestration.gateway.records import publish_call_started, record_call
from orchestration.models import Run
from orchestration.models.runs import RunStatus


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
        publish_call_started(run_id=self.run_id, started_ms=self.started_ms, model_name=self.model, kind=Run.Kind.CHAT,
                             key=self.key)
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
        record_call(run_id=self.run_id, kind=Run.Kind.CHAT, model_name=self.model, key=self.key, status=status,
                    input={"messages": self.messages}, output=output, confidence=result.confidence if result else None,
                    tokens_in=tokens_in, tokens_out=tokens_out, spent_usd=ctx.spent_usd, latency_ms=latency_ms,
                    error=error, metadata={**self.metadata, "stream": True}, started_ms=self.started_ms,
                    steps=finished)


async def stream_chat_completion(*, key: KeyInfo, model_name: str, messages: list[dict], params: dict,
                                 metadata: dict | None = None, data_class: str | None = None) -> ChatStream:
    """A streamed call to a model or route alias (with fallbacks): resolved now, so an unknown model is a
    plain 404. Streams are never served from the response cache."""
    ctx, sink, model, route_attributes = await open_chat_run(model_name, messages, data_class, key)
    stream = stream_model(engine, ctx, model, chat_request(model, messages, params),
                          attributes=route_attributes)
    return ChatStream(key=key, model_name=model_name, messages=messages, metadata=metadata, ctx=ctx, sink=sink,
                      stream=stream)

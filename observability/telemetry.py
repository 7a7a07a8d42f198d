"""OpenTelemetry traces: a span per run and per step, with the GenAI semantic-convention attributes.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (then spans go out over OTLP/HTTP in batches; the
standard OTEL_* variables — headers, service name, resource attributes — apply). Spans are built
from the live events every run emits (registered as an `orchestration.live` observer), so the
engine stays free of tracing code and a step's span has the step's own start and end times:

    run <target>                      podium.run.id, podium.run.kind, podium.run.status, usage totals
      └─ chat <model>                 gen_ai.operation.name, gen_ai.provider.name, gen_ai.request.model,
                                      gen_ai.response.model, gen_ai.usage.input_tokens / output_tokens,
                                      podium.cost_usd, podium.confidence, podium.step.key, error.type
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

from orchestration.models.runs import FINAL_RUN_STATUSES, RunStatus

logger = logging.getLogger(__name__)
MAX_OPEN_SPANS = 10_000  # runs that never report an end (a killed worker) must not grow memory forever
# A run's span ends when the run ends, and also when it pauses for review (a resumed run opens a new span).
SPAN_END_STATUSES = FINAL_RUN_STATUSES | {RunStatus.AWAITING_REVIEW}

_lock = threading.Lock()
_state: dict = {"tracer": None, "provider": None}
_runs: OrderedDict = OrderedDict()  # run id -> span
_steps: OrderedDict = OrderedDict()  # step id -> span


def configure(exporter=None):
    """Install tracing with `exporter` (tests pass an in-memory one), or from the environment.

    Returns the TracerProvider, or None when tracing stays off."""
    if exporter is None and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "podium")})
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    with _lock:
        _state["provider"], _state["tracer"] = provider, provider.get_tracer("podium")
        _runs.clear()
        _steps.clear()
    return provider


def disable() -> None:
    with _lock:
        provider = _state["provider"]
        _state["provider"] = _state["tracer"] = None
        _runs.clear()
        _steps.clear()
    if provider is not None:
        provider.shutdown()


def _ns(ms) -> int:
    return int(round(float(ms) * 1000)) * 1000  # via microseconds: exact for epoch milliseconds


def _remember(table: OrderedDict, key: str, span) -> None:
    table[key] = span
    while len(table) > MAX_OPEN_SPANS:
        _, stale = table.popitem(last=False)
        stale.end()


def observe_event(event: dict) -> None:
    """Turn one live event into span starts and ends (registered as an `orchestration.live` observer)."""
    tracer = _state["tracer"]
    if tracer is None:
        return
    kind = event.get("type")
    if kind == "run.updated":
        _run_updated(tracer, event)
    elif kind == "step.started":
        _step_started(tracer, event)
    elif kind == "step.finished":
        _step_finished(tracer, event)


def _context_of(span):
    from opentelemetry import trace

    return trace.set_span_in_context(span) if span is not None else None


def _run_span(tracer, event: dict, start_ms=None):
    """The run's span, started now if this process has not seen the run start (e.g. a resumed run)."""
    run_id = str(event.get("run_id") or "")
    span = _runs.get(run_id)
    if span is None and run_id:
        span = tracer.start_span(f"run {event.get('target') or ''}".strip(), start_time=_ns(start_ms or event["ts"]),
                                 attributes={"podium.run.id": run_id, "podium.run.kind": event.get("kind") or "",
                                             "podium.run.target": event.get("target") or ""})
        _remember(_runs, run_id, span)
    return span


def _run_updated(tracer, event: dict) -> None:
    from opentelemetry.trace import Status, StatusCode

    with _lock:
        span = _run_span(tracer, event)
        if span is None:
            return
        status = event.get("status") or ""
        span.set_attribute("podium.run.status", status)
        if status not in SPAN_END_STATUSES:
            return
        _runs.pop(str(event["run_id"]), None)
    for name, attribute in (("tokens_in", "gen_ai.usage.input_tokens"), ("tokens_out", "gen_ai.usage.output_tokens"),
                            ("cost_usd", "podium.cost_usd")):
        if event.get(name) is not None:
            span.set_attribute(attribute, event[name])
    if status != "succeeded" and status != "awaiting_review":
        span.set_status(Status(StatusCode.ERROR, status))
    span.end(end_time=_ns(event["ts"]))


def _step_attributes(event: dict) -> dict:
    node_type = event.get("node_type") or "call"
    attributes = {"podium.run.id": str(event.get("run_id") or ""), "podium.step.key": event.get("key") or "",
                  "podium.node.id": event.get("node_id") or "", "podium.node.type": node_type}
    if event.get("model") and node_type in ("call", "embeddings"):
        attributes.update({
            "gen_ai.operation.name": "embeddings" if node_type == "embeddings" else "chat",
            "gen_ai.provider.name": event.get("provider") or "",
            "gen_ai.request.model": event["model"],
        })
    return attributes


def _step_name(event: dict) -> str:
    if event.get("model") and (event.get("node_type") or "call") in ("call", "embeddings"):
        operation = "embeddings" if event.get("node_type") == "embeddings" else "chat"
        return f"{operation} {event['model']}"
    return f"{event.get('node_type') or 'step'} {event.get('node_id') or event.get('key') or ''}".strip()


def _start_step(tracer, event: dict, start_ms):
    parent = _steps.get(str(event.get("parent_id"))) if event.get("parent_id") else None
    if parent is None:
        parent = _run_span(tracer, event, start_ms)
    span = tracer.start_span(_step_name(event), context=_context_of(parent), start_time=_ns(start_ms),
                             attributes=_step_attributes(event))
    _remember(_steps, str(event["step_id"]), span)
    return span


def _step_started(tracer, event: dict) -> None:
    if not event.get("step_id"):
        return
    with _lock:
        _start_step(tracer, event, event["ts"])


def _step_finished(tracer, event: dict) -> None:
    from opentelemetry.trace import Status, StatusCode

    if not event.get("step_id"):
        return
    with _lock:
        span = _steps.pop(str(event["step_id"]), None)
        if span is None:  # no started event here (a cached or replayed step): the span covers its times
            span = _start_step(tracer, event, event.get("started_ts", event["ts"]))
            _steps.pop(str(event["step_id"]), None)
    if event.get("model") and (event.get("node_type") or "call") in ("call", "embeddings"):
        span.set_attribute("gen_ai.response.model", event["model"])
        span.set_attribute("gen_ai.usage.input_tokens", int(event.get("tokens_in") or 0))
        span.set_attribute("gen_ai.usage.output_tokens", int(event.get("tokens_out") or 0))
    if event.get("cost_usd") is not None:
        span.set_attribute("podium.cost_usd", float(event["cost_usd"]))
    if event.get("confidence") is not None:
        span.set_attribute("podium.confidence", float(event["confidence"]))
    if event.get("latency_ms") is not None:
        span.set_attribute("podium.latency_ms", float(event["latency_ms"]))
    if event.get("status") == "failed":
        span.set_attribute("error.type", event.get("error_type") or "step_failed")  # a class, not the message
        span.set_status(Status(StatusCode.ERROR, (event.get("error") or "")[:200]))
    span.end(end_time=_ns(event["ts"]))

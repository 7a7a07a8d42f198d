"""OpenTelemetry: a span per run and per step with GenAI attributes; off unless OTLP is configured."""
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability import telemetry
from tests.conftest import wait_for


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    telemetry.configure(exporter=exporter)
    yield exporter
    telemetry.disable()


def test_tracing_is_off_without_an_otlp_endpoint(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert telemetry.configure() is None
    assert telemetry._state["tracer"] is None


def test_tracing_exports_over_otlp_when_an_endpoint_is_set(monkeypatch):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    provider = telemetry.configure()
    try:
        exporters = [p.span_exporter for p in provider._active_span_processor._span_processors]
        assert [type(e) for e in exporters] == [OTLPSpanExporter]
        assert provider.resource.attributes["service.name"] == "podium"
    finally:
        telemetry.disable()


def test_a_v1_call_is_a_run_span_with_a_chat_step_span_carrying_genai_attributes(spans, podium_server, demo_registry,
                                                                                  api_key):
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "swift-mini", "messages": [{"role": "user", "content": "trace me"}]})
    usage = response.json()["usage"]
    # The spans end as the call's events are observed, on the server loop's turn after the answer went out.
    finished = wait_for(lambda: (names := {span.name: span for span in spans.get_finished_spans()})
                        and "run swift-mini" in names and names)
    run, step = finished["run swift-mini"], finished["chat swift-mini"]
    assert step.parent is not None and step.parent.span_id == run.context.span_id
    assert step.context.trace_id == run.context.trace_id
    assert step.attributes["gen_ai.operation.name"] == "chat"
    assert step.attributes["gen_ai.request.model"] == "swift-mini"
    assert step.attributes["gen_ai.provider.name"] == "mock-fast"
    assert step.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert step.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert step.attributes["podium.cost_usd"] > 0
    assert run.attributes["podium.run.id"] == response.headers["x-podium-run-id"]
    assert run.attributes["podium.run.status"] == "succeeded"
    assert run.start_time <= step.start_time <= step.end_time <= run.end_time


def test_a_failed_call_is_an_error_span(spans, podium_server, upstream_model, api_key):
    from opentelemetry.trace import StatusCode

    upstream_model.upstream_name = "fail-500"
    upstream_model.fallbacks = []
    upstream_model.save()
    from orchestration.registry import bump_version

    bump_version()
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "fake-gpt", "messages": [{"role": "user", "content": "fail"}]})
    assert response.status_code == 502
    wait_for(lambda: any(s.name == "run fake-gpt" for s in spans.get_finished_spans()))
    step_spans = [s for s in spans.get_finished_spans() if s.name == "chat fake-gpt"]
    assert step_spans and all(s.status.status_code == StatusCode.ERROR for s in step_spans)
    assert step_spans[-1].attributes["error.type"]
    run = next(s for s in spans.get_finished_spans() if s.name == "run fake-gpt")
    assert run.status.status_code == StatusCode.ERROR


def test_workflow_steps_nest_under_their_run(spans):
    """Events as a workflow run emits them: a sequence node holding two calls."""
    run_id, ts = "6f0b6d2c-0000-4000-8000-000000000001", 1_700_000_000_000
    base = {"run_id": run_id, "provider": "mock-fast"}
    events = [
        {"type": "run.updated", "ts": ts, "run_id": run_id, "status": "running", "target": "workflow/pipe",
         "kind": "workflow"},
        {"type": "step.started", "ts": ts + 1, **base, "step_id": "s", "key": "seq", "node_type": "sequence",
         "node_id": "seq", "parent_id": None},
        {"type": "step.started", "ts": ts + 2, **base, "step_id": "a", "key": "seq/a", "node_type": "call",
         "model": "swift-mini", "parent_id": "s"},
        {"type": "step.finished", "ts": ts + 5, **base, "step_id": "a", "key": "seq/a", "node_type": "call",
         "model": "swift-mini", "parent_id": "s", "status": "succeeded", "tokens_in": 3, "tokens_out": 4,
         "cost_usd": 0.001},
        {"type": "step.finished", "ts": ts + 9, **base, "step_id": "b", "key": "seq/b", "node_type": "call",
         "model": "atlas-pro", "parent_id": "s", "status": "succeeded", "tokens_in": 5, "tokens_out": 6,
         "cost_usd": 0.002, "started_ts": ts + 6},
        {"type": "step.finished", "ts": ts + 10, **base, "step_id": "s", "key": "seq", "node_type": "sequence",
         "model": "atlas-pro", "parent_id": None, "status": "succeeded"},
        {"type": "run.updated", "ts": ts + 11, "run_id": run_id, "status": "succeeded", "target": "workflow/pipe",
         "kind": "workflow", "tokens_in": 8, "tokens_out": 10, "cost_usd": 0.003},
    ]
    for event in events:
        telemetry.observe_event(event)
    by_name = {span.name: span for span in spans.get_finished_spans()}
    run, sequence = by_name["run workflow/pipe"], by_name["sequence seq"]
    first, second = by_name["chat swift-mini"], by_name["chat atlas-pro"]
    assert sequence.parent.span_id == run.context.span_id
    assert first.parent.span_id == second.parent.span_id == sequence.context.span_id
    assert "gen_ai.request.model" not in sequence.attributes  # a composite node calls no model itself
    assert second.start_time == (ts + 6) * 1_000_000 and second.end_time == (ts + 9) * 1_000_000
    assert run.attributes["gen_ai.usage.output_tokens"] == 10
    assert telemetry._runs == {} and telemetry._steps == {}  # nothing left open

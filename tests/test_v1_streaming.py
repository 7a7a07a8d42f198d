"""POST /v1/chat/completions with stream=true: OpenAI's server-sent events, fallback, failures, disconnects."""
import httpx
import openai
import pytest

from orchestration.gateway.writer import writer
from orchestration.models import LLMModel, Run, Step
from tests.conftest import wait_for


@pytest.fixture
def sdk(podium_server, api_key):
    return openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0, timeout=20)


def sick_model(upstream_model, alias: str, upstream_name: str, **fields) -> LLMModel:
    """A model on the fake upstream whose upstream name makes the fake misbehave (see podium/fake_upstream.py)."""
    from orchestration.registry import bump_version

    model = LLMModel.objects.create(provider=upstream_model.provider, alias=alias, upstream_name=upstream_name,
                                    price_in_per_m="1.0", price_out_per_m="4.0", **fields)
    bump_version()
    return model


def sse_events(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def test_the_openai_sdk_streams_text_deltas_and_usage(sdk, upstream_model, fake_upstream):
    chunks = list(sdk.chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "hello there world"}], stream=True,
        stream_options={"include_usage": True}))

    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "echo: hello there world"
    assert len(texts) == 4  # one delta per upstream word, not one blob
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert fake_upstream.requests[-1]["body"]["stream"] is True
    writer.flush()
    run = Run.objects.get()
    step = Step.objects.get()
    assert chunks[0].id == f"chatcmpl-{run.id.hex}"
    assert (run.status, run.output, step.status, step.tokens_out) == ("succeeded", "echo: hello there world",
                                                                       "succeeded", 4)
    assert float(run.cost_usd) == pytest.approx((step.tokens_in * 2.0 + 4 * 8.0) / 1_000_000)


def test_the_openai_sdk_streams_tool_call_deltas(sdk, upstream_model):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    chunks = list(sdk.chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools,
        tool_choice="auto", stream=True))

    calls = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 4  # the first names the function, three carry pieces of the arguments
    assert (calls[0].id, calls[0].function.name) == ("call_1", "get_weather")
    assert "".join(call.function.arguments or "" for call in calls) == '{"city": "Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    writer.flush()
    assert Run.objects.get().status == "succeeded"


def test_a_mock_model_streams_its_reply_word_by_word(sdk, demo_registry):
    chunks = list(sdk.chat.completions.create(
        model="swift-mini", messages=[{"role": "user", "content": "ping pong"}], stream=True))

    texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert texts == ["[swift-mini]", " ping", " pong"]


def test_the_raw_stream_is_server_sent_events_ending_with_done(podium_server, api_key, demo_registry):
    with httpx.stream("POST", f"{podium_server.url}/v1/chat/completions",
                      headers={"authorization": f"Bearer {api_key}"}, timeout=20,
                      json={"model": "swift-mini", "messages": [{"role": "user", "content": "hi"}],
                            "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert all(event.startswith('{"id":"chatcmpl-') for event in events[:-1])
    assert '"usage"' not in "".join(events)  # only when stream_options.include_usage asks for it


def test_an_upstream_failing_before_the_first_token_falls_back_invisibly(sdk, upstream_model, fake_upstream):
    sick_model(upstream_model, "fake-broken", "fail-500", fallbacks=["fake-gpt"])

    chunks = list(sdk.chat.completions.create(
        model="fake-broken", messages=[{"role": "user", "content": "still here"}], stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: still here"
    assert {c.model for c in chunks} == {"fake-broken"}  # the client asked for this alias and sees it
    writer.flush()
    steps = {step.key: step for step in Step.objects.all()}
    assert (steps["call"].model_alias, steps["call"].status) == ("fake-broken", "failed")
    assert (steps["call.fallback1"].model_alias, steps["call.fallback1"].status) == ("fake-gpt", "succeeded")
    assert steps["call.fallback1"].attributes["fallback_from"] == "fake-broken"
    assert Run.objects.get().status == "succeeded"


def test_a_chain_that_fails_before_any_token_is_a_plain_502(podium_server, api_key, upstream_model):
    sick_model(upstream_model, "fake-broken", "fail-500")
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "fake-broken", "messages": [{"role": "user", "content": "x"}], "stream": True},
                          timeout=20)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    writer.flush()
    assert Run.objects.get(id=response.headers["x-podium-run-id"]).status == "failed"


def test_an_unknown_model_is_a_404_before_any_event(podium_server, api_key, demo_registry):
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "nope", "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_a_stream_broken_after_tokens_ends_with_an_error_event_and_no_done(podium_server, api_key, upstream_model):
    sick_model(upstream_model, "fake-cut", "cut-stream", fallbacks=["fake-gpt"])
    with httpx.stream("POST", f"{podium_server.url}/v1/chat/completions",
                      headers={"authorization": f"Bearer {api_key}"}, timeout=20,
                      json={"model": "fake-cut", "messages": [{"role": "user", "content": "one two three four"}],
                            "stream": True}) as response:
        assert response.status_code == 200
        events = sse_events(response)

    assert "[DONE]" not in events
    assert '"content":"echo:"' in events[0] and '"content":" one"' in events[1]  # tokens did reach the client
    assert events[-1].startswith('{"error":') and '"code":"upstream_error"' in events[-1]
    writer.flush()
    run = Run.objects.get()
    assert run.status == "failed" and run.output == "echo: one"
    assert Step.objects.get().status == "failed"  # no fallback once tokens were sent


def test_the_openai_sdk_raises_on_a_broken_stream(sdk, upstream_model):
    sick_model(upstream_model, "fake-cut", "cut-stream")
    stream = sdk.chat.completions.create(model="fake-cut", messages=[{"role": "user", "content": "a b c"}],
                                         stream=True)
    with pytest.raises(openai.APIError, match="upstream"):
        list(stream)


def test_a_client_that_disconnects_cancels_the_upstream_request(podium_server, api_key, upstream_model,
                                                                fake_upstream):
    sick_model(upstream_model, "fake-slow", "slow-stream")
    with httpx.stream("POST", f"{podium_server.url}/v1/chat/completions",
                      headers={"authorization": f"Bearer {api_key}"}, timeout=20,
                      json={"model": "fake-slow", "messages": [{"role": "user", "content": "go"}],
                            "stream": True}) as response:
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(8)) if line.startswith("data: ")]
    assert len(received) >= 3  # the role chunk and a few words; then the client hung up

    wait_for(lambda: fake_upstream.stream_outcomes, timeout=10)
    assert fake_upstream.stream_outcomes == ["aborted"]  # the upstream saw its connection closed

    def recorded_step():
        writer.flush()
        return Step.objects.filter(status="cancelled").first()

    step = wait_for(recorded_step, timeout=10)
    assert step.output.startswith("word0 word1") and len(step.output.split()) < 100
    assert step.tokens_out > 0 and step.tokens_estimated
    assert Run.objects.get().status == "cancelled"


def test_a_route_alias_streams_from_the_model_it_picks_and_falls_back_through_its_candidates(sdk, upstream_model):
    from orchestration.models import RouteAlias
    from orchestration.registry import bump_version

    sick_model(upstream_model, "fake-broken", "fail-500", quality_prior=0.9)
    RouteAlias.objects.create(name="smart", strategy="quality", candidates=["fake-broken", "fake-gpt"])
    bump_version()

    chunks = list(sdk.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}],
                                              stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hi"
    writer.flush()
    answered = Step.objects.get(status="succeeded")
    assert answered.model_alias == "fake-gpt" and answered.attributes["route"] == "smart"
    assert Run.objects.get().target == "smart"


def test_a_workflow_streams_its_final_call_token_by_token(sdk, demo_registry):
    from orchestration.runner.inprocess import runner
    from orchestration.workflows import save_workflow

    save_workflow(slug="draft-then-answer", spec={"root": {"type": "sequence", "steps": [
        {"id": "draft", "type": "call", "model": "swift-mini", "prompt": "Q: {{input}}"},
        {"id": "answer", "type": "call", "model": "atlas-pro", "prompt": "{{previous}}"}]}})
    chunks = list(sdk.chat.completions.create(
        model="workflow/draft-then-answer", messages=[{"role": "user", "content": "hi there"}], stream=True,
        stream_options={"include_usage": True}))

    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["[atlas-pro]", " [swift-mini]", " Q:", " hi", " there"]  # the final call's words, live
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert runner.wait_idle(20)
    writer.flush()
    run = Run.objects.get()
    assert chunks[0].id == f"chatcmpl-{run.id.hex}"
    assert (run.status, run.output) == ("succeeded", "".join(texts))
    answer = Step.objects.get(run=run, key="answer")
    assert (answer.status, answer.output, answer.attributes["stream"]) == ("succeeded", run.output, True)
    assert answer.tokens_out > 0 and answer.cost_usd > 0
    assert Step.objects.get(run=run, key="draft").attributes.get("stream") is None  # earlier steps ran as usual
    assert chunks[-1].usage.completion_tokens == run.tokens_out == sum(
        Step.objects.filter(run=run, node_type="call").values_list("tokens_out", flat=True))


def test_a_workflow_ending_in_a_parallel_answers_in_one_delta(sdk, demo_registry):
    from orchestration.runner.inprocess import runner
    from orchestration.workflows import save_workflow

    save_workflow(slug="vote", spec={"root": {"type": "parallel", "branches": ["swift-mini", "swift-mini"],
                                              "combine": {"strategy": "majority"}}})
    chunks = list(sdk.chat.completions.create(model="workflow/vote", messages=[{"role": "user", "content": "hi"}],
                                              stream=True, stream_options={"include_usage": True}))

    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["[swift-mini] hi"]
    assert chunks[-1].usage.total_tokens > 0
    assert runner.wait_idle(20)
    writer.flush()
    assert (Run.objects.get().status, Run.objects.get().output) == ("succeeded", "[swift-mini] hi")


def test_a_client_leaving_a_streamed_workflow_cancels_its_final_step_and_run(podium_server, api_key, upstream_model,
                                                                             fake_upstream):
    from orchestration.runner.inprocess import runner
    from orchestration.workflows import save_workflow

    sick_model(upstream_model, "fake-slow", "slow-stream")
    save_workflow(slug="slow-answer", spec={"root": {"id": "answer", "type": "route", "route": "fake-slow"}})
    with httpx.stream("POST", f"{podium_server.url}/v1/chat/completions",
                      headers={"authorization": f"Bearer {api_key}"}, timeout=20,
                      json={"model": "workflow/slow-answer", "messages": [{"role": "user", "content": "go"}],
                            "stream": True}) as response:
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(8)) if line.startswith("data: ")]
    assert len(received) >= 3

    def cancelled_run():
        writer.flush()
        return Run.objects.filter(status="cancelled").first()

    run = wait_for(cancelled_run, timeout=10)
    step = Step.objects.get(run=run, key="answer/call")
    assert step.status == "cancelled" and step.output.startswith("word0") and len(step.output.split()) < 100
    wait_for(lambda: fake_upstream.stream_outcomes, timeout=10)
    assert fake_upstream.stream_outcomes == ["aborted"]
    assert runner.wait_idle(20)


def test_a_stream_obeys_the_data_class_policy_and_redaction(podium_server, api_key, upstream_model, fake_upstream):
    LLMModel.objects.filter(alias="fake-gpt").update(allowed_data_classes=["public"])
    sick_model(upstream_model, "vault-gpt", "vault-1", allowed_data_classes=["sensitive"])

    def stream(model: str) -> httpx.Response:
        return httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          timeout=20, json={"model": model, "stream": True, "podium": {"data_class": "sensitive"},
                                            "messages": [{"role": "user", "content": "mail bob@corp.example"}]})

    refused = stream("fake-gpt")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "data_class_not_allowed"
    assert fake_upstream.requests == []

    allowed = stream("vault-gpt")
    assert allowed.status_code == 200 and sse_events(allowed)[-1] == "[DONE]"
    assert fake_upstream.requests[-1]["body"]["messages"][0]["content"] == "mail [EMAIL]"
    writer.flush()
    step = Step.objects.get(status="succeeded")
    assert step.attributes["redacted"] == {"email": 1} and step.attributes["stream"] is True
    assert step.prompt == [{"role": "user", "content": "mail [EMAIL]"}]  # recorded as sent
    assert Run.objects.get(id=refused.headers["x-podium-run-id"]).status == "failed"


@pytest.mark.parametrize("kind, upstream_name", [("anthropic", "claude-haiku"), ("ollama", "llama3.2:3b")])
def test_anthropic_and_ollama_streams_reach_the_sdk_as_openai_chunks(sdk, fake_upstream, kind, upstream_name):
    from orchestration.models import Provider
    from orchestration.registry import bump_version

    provider = Provider.objects.create(name=f"{kind}-box", kind=kind, base_url=fake_upstream.root_url, timeout_s=5)
    LLMModel.objects.create(provider=provider, alias="translated", upstream_name=upstream_name)
    bump_version()

    chunks = list(sdk.chat.completions.create(
        model="translated", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True}))

    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "echo: one two three" and len(texts) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens > 0
    assert fake_upstream.requests[-1]["body"]["model"] == upstream_name
    writer.flush()
    step = Step.objects.get()
    assert (step.status, step.output, step.provider) == ("succeeded", "echo: one two three", f"{kind}-box")

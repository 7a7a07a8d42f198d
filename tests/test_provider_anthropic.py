"""The Anthropic Messages API adapter against the fake upstream's /v1/messages on loopback."""
import httpx
import pytest

from orchestration.engine.types import ChatRequest, ProviderError
from orchestration.models import LLMModel, Provider
from orchestration.providers.anthropic import AnthropicAdapter, messages_url, translate_messages
from orchestration.registry import bump_version
from tests.enginehelpers import fake_model, run

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def claude(upstream, name="claude-test", **fields):
    return fake_model(upstream, "claude", name, provider="anthropic-fake", kind="anthropic", **fields)


def chat(model, text="hi there", messages=None, **params):
    request = ChatRequest(messages=messages or [{"role": "user", "content": text}], params=params)
    return run(lambda: AnthropicAdapter().chat(model, request))


def stream(model, text="hi there", **params):
    request = ChatRequest(messages=[{"role": "user", "content": text}], params=params)

    async def collect():
        return [delta async for delta in AnthropicAdapter().stream(model, request)]
    return run(collect)


def test_the_messages_url_accepts_a_base_with_or_without_v1():
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert messages_url("https://api.anthropic.com/v1/") == "https://api.anthropic.com/v1/messages"


def test_openai_messages_become_anthropic_turns():
    system, turns = translate_messages([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_9", "content": "sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ])
    assert system == "Be brief."
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]  # tool result merged with the next user turn
    assert turns[1]["content"] == [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny"},
                                   {"type": "text", "text": "And tomorrow?"}]


def test_chat_returns_text_usage_and_sends_anthropic_headers(fake_upstream):
    fake_upstream.api_key = "sk-ant-test"
    result = chat(claude(fake_upstream, api_key="sk-ant-test"), messages=[{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "hello claude"}], temperature=0.3, stop="END", seed=4)
    assert result.text == "echo: hello claude"
    assert (result.tokens_in, result.tokens_out, result.tokens_estimated) == (2, 3, False)
    assert result.finish_reason == "stop"
    sent = fake_upstream.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-test" and sent["headers"]["anthropic-version"] == "2023-06-01"
    body = sent["body"]
    assert body["system"] == "Be brief." and body["max_tokens"] == 1024 and body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.3 and "seed" not in body and body["stream"] is False


def test_a_wrong_key_is_a_non_retryable_401(fake_upstream):
    fake_upstream.api_key = "right"
    with pytest.raises(ProviderError) as failure:
        chat(claude(fake_upstream))
    assert failure.value.status == 401 and not failure.value.retryable


def test_tools_are_translated_and_tool_use_comes_back_as_openai_tool_calls(fake_upstream):
    result = chat(claude(fake_upstream), tools=TOOLS, tool_choice="required", max_tokens=50)
    body = fake_upstream.requests[-1]["body"]
    assert body["tools"][0]["name"] == "get_weather" and body["tools"][0]["input_schema"]["type"] == "object"
    assert body["tool_choice"] == {"type": "any"} and body["max_tokens"] == 50
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [{"id": "toolu_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]


def test_missing_usage_is_estimated_and_marked(fake_upstream):
    result = chat(claude(fake_upstream, "no-usage"), text="count these words please")
    assert result.tokens_estimated and result.tokens_in > 0 and result.tokens_out > 0


def test_stream_yields_text_deltas_then_usage(fake_upstream):
    deltas = stream(claude(fake_upstream), text="stream this now")
    assert "".join(d.text for d in deltas) == "echo: stream this now"
    last = deltas[-1]
    assert (last.finish_reason, last.tokens_in, last.tokens_out, last.tokens_estimated) == ("stop", 3, 4, False)
    assert fake_upstream.requests[-1]["body"]["stream"] is True


def test_stream_yields_tool_call_deltas(fake_upstream):
    deltas = stream(claude(fake_upstream), tools=TOOLS)
    calls = [call for d in deltas for call in d.tool_calls or ()]
    assert calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"].get("arguments", "") for c in calls) == '{"city": "Paris"}'
    assert deltas[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("fault, status, kind, retry_after", [
    ("fail-500", 500, "upstream_error", None),
    ("overloaded", 529, "upstream_error", None),
    ("rate-limit:0.3", 429, "rate_limited", 0.3),
    ("malformed", 200, "bad_response", None),
    ("reset", None, "connection_error", None),
])
def test_chat_classifies_upstream_faults_as_retryable(fake_upstream, fault, status, kind, retry_after):
    with pytest.raises(ProviderError) as failure:
        chat(claude(fake_upstream, fault))
    assert (failure.value.status, failure.value.kind, failure.value.retry_after) == (status, kind, retry_after)
    assert failure.value.retryable


def test_chat_times_out(fake_upstream):
    with pytest.raises(ProviderError) as failure:
        chat(claude(fake_upstream, "slow:1", timeout_s=0.3))
    assert failure.value.kind == "timeout" and failure.value.retryable


@pytest.mark.parametrize("fault, kind", [("cut-stream", ("stream_cut", "connection_error")),
                                         ("stream-error", ("upstream_error",)),
                                         ("fail-500", ("upstream_error",))])
def test_a_stream_that_breaks_raises_after_what_arrived(fake_upstream, fault, kind):
    model = claude(fake_upstream, fault)
    received = []

    async def collect():
        async for delta in AnthropicAdapter().stream(model, ChatRequest(messages=[{"role": "user",
                                                                                    "content": "one two three four"}])):
            received.append(delta)
    with pytest.raises(ProviderError) as failure:
        run(collect)
    assert failure.value.kind in kind and failure.value.retryable
    if fault == "cut-stream":
        assert "".join(d.text for d in received) == "echo: one"  # two events arrived before the cut
        assert not any(d.finish_reason for d in received)


def test_an_anthropic_model_is_served_through_v1(podium_server, api_key, fake_upstream):
    provider = Provider.objects.create(name="anthropic", kind=Provider.Kind.ANTHROPIC, base_url=fake_upstream.root_url,
                                       timeout_s=2)
    LLMModel.objects.create(provider=provider, alias="claude-fast", upstream_name="claude-haiku")
    bump_version()
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "claude-fast", "messages": [{"role": "user", "content": "bonjour"}]}, timeout=10)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: bonjour"
    assert fake_upstream.requests[-1]["body"]["model"] == "claude-haiku"

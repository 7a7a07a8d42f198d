"""The Ollama /api/chat adapter against the fake upstream on loopback (JSON and NDJSON streaming)."""
import httpx
import pytest

from orchestration.engine.types import ChatRequest, ProviderError, estimate_tokens
from orchestration.models import LLMModel, Provider
from orchestration.providers.ollama import OllamaAdapter, chat_url, translate_message
from orchestration.registry import bump_version
from tests.enginehelpers import fake_model, run

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def llama(upstream, name="llama3.2", **fields):
    return fake_model(upstream, "llama", name, provider="ollama-fake", kind="ollama", is_local=True, **fields)


def chat(model, text="hi there", **params):
    request = ChatRequest(messages=[{"role": "user", "content": text}], params=params)
    return run(lambda: OllamaAdapter().chat(model, request))


def stream(model, text="hi there", **params):
    request = ChatRequest(messages=[{"role": "user", "content": text}], params=params)

    async def collect():
        return [delta async for delta in OllamaAdapter().stream(model, request)]
    return run(collect)


def test_the_chat_url_accepts_a_base_with_or_without_api():
    assert chat_url("http://gpu-box:11434") == "http://gpu-box:11434/api/chat"
    assert chat_url("http://gpu-box:11434/api/") == "http://gpu-box:11434/api/chat"


def test_messages_are_flattened_to_text_with_images_and_tool_calls_as_ollama_wants():
    out = translate_message({"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]})
    assert out == {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}
    call = translate_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]})
    assert call["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]


def test_chat_returns_text_and_usage_and_maps_sampling_to_options(fake_upstream):
    result = chat(llama(fake_upstream), text="hello llama", temperature=0.1, max_tokens=64, stop="END",
                  response_format={"type": "json_object"}, user="someone")
    assert result.text == "echo: hello llama"
    assert (result.tokens_in, result.tokens_out, result.tokens_estimated) == (2, 3, False)
    sent = fake_upstream.requests[-1]
    assert sent["path"] == "/api/chat"
    body = sent["body"]
    assert body["stream"] is False and body["model"] == "llama3.2" and body["format"] == "json"
    assert body["options"] == {"temperature": 0.1, "num_predict": 64, "stop": ["END"]}
    assert "user" not in body


def test_missing_counts_are_estimated_and_marked(fake_upstream):
    result = chat(llama(fake_upstream, "no-usage"), text="a prompt Ollama had cached")
    assert result.tokens_estimated and result.tokens_in > 0 and result.tokens_out > 0


def test_tool_calls_come_back_in_openai_format(fake_upstream):
    result = chat(llama(fake_upstream), tools=TOOLS)
    assert fake_upstream.requests[-1]["body"]["tools"] == TOOLS
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [{"id": "call_0", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]


def test_stream_yields_ndjson_lines_as_deltas_then_usage(fake_upstream):
    deltas = stream(llama(fake_upstream), text="stream this now")
    assert "".join(d.text for d in deltas) == "echo: stream this now"
    last = deltas[-1]
    assert (last.finish_reason, last.tokens_in, last.tokens_out, last.tokens_estimated) == ("stop", 3, 4, False)
    assert fake_upstream.requests[-1]["body"]["stream"] is True


def test_stream_without_counts_estimates_them(fake_upstream):
    last = stream(llama(fake_upstream, "no-usage"), text="some words to count")[-1]
    assert last.tokens_estimated and last.tokens_out == estimate_tokens("echo: some words to count")
    assert last.tokens_in == estimate_tokens("some words to count")


def test_stream_yields_tool_calls(fake_upstream):
    deltas = stream(llama(fake_upstream), tools=TOOLS)
    [call] = [c for d in deltas for c in d.tool_calls or ()]
    assert call["index"] == 0 and call["function"]["name"] == "get_weather"
    assert deltas[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("fault, status, kind, retry_after", [
    ("fail-500", 500, "upstream_error", None),
    ("overloaded", 503, "upstream_error", None),
    ("rate-limit:0.3", 429, "rate_limited", 0.3),
    ("malformed", 200, "bad_response", None),
    ("reset", None, "connection_error", None),
])
def test_chat_classifies_upstream_faults_as_retryable(fake_upstream, fault, status, kind, retry_after):
    with pytest.raises(ProviderError) as failure:
        chat(llama(fake_upstream, fault))
    assert (failure.value.status, failure.value.kind, failure.value.retry_after) == (status, kind, retry_after)
    assert failure.value.retryable


def test_chat_times_out(fake_upstream):
    with pytest.raises(ProviderError) as failure:
        chat(llama(fake_upstream, "slow:1", timeout_s=0.3))
    assert failure.value.kind == "timeout" and failure.value.retryable


@pytest.mark.parametrize("fault, kinds", [("cut-stream", ("stream_cut", "connection_error")),
                                          ("stream-error", ("upstream_error",)),
                                          ("reset", ("connection_error",))])
def test_a_stream_that_breaks_raises_after_what_arrived(fake_upstream, fault, kinds):
    model = llama(fake_upstream, fault)
    received = []

    async def collect():
        async for delta in OllamaAdapter().stream(model, ChatRequest(messages=[{"role": "user",
                                                                                 "content": "one two three four"}])):
            received.append(delta)
    with pytest.raises(ProviderError) as failure:
        run(collect)
    assert failure.value.kind in kinds and failure.value.retryable
    assert not any(d.finish_reason for d in received)
    if fault == "cut-stream":
        assert "".join(d.text for d in received) == "echo: one"


def test_an_ollama_model_is_served_through_v1(podium_server, api_key, fake_upstream):
    provider = Provider.objects.create(name="gpu-box", kind=Provider.Kind.OLLAMA, base_url=fake_upstream.root_url,
                                       timeout_s=2, is_local=True)
    LLMModel.objects.create(provider=provider, alias="local-llama", upstream_name="llama3.2:3b")
    bump_version()
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "local-llama", "messages": [{"role": "user", "content": "hej"}]}, timeout=10)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hej"
    assert fake_upstream.requests[-1]["body"]["model"] == "llama3.2:3b"

"""The rest of OpenAI's chat schema reaches openai_compatible upstreams unchanged; Podium's own fields do not."""
import httpx
import openai
import pytest

from orchestration.gateway.writer import writer
from orchestration.models import Run

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
PASSED_THROUGH = {
    "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {"type": "json_object"}, "temperature": 0.3, "top_p": 0.9, "max_tokens": 50,
    "max_completion_tokens": 60, "stop": ["\n\n", "END"], "seed": 42, "n": 1, "logprobs": True, "user": "user-7",
    "parallel_tool_calls": False, "x_vendor_extension": {"anything": [1, 2]},  # unknown fields pass too
}


@pytest.fixture
def sdk(podium_server, api_key):
    return openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0, timeout=20)


@pytest.mark.parametrize("stream", [False, True])
def test_every_openai_field_and_unknown_ones_reach_the_upstream_unchanged(podium_server, api_key, upstream_model,
                                                                         fake_upstream, stream):
    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": "weather?"}], **PASSED_THROUGH,
            "stream": stream, "stream_options": {"include_usage": True}, "metadata": {"ticket": "T-1"},
            "podium": {"note": "for Podium only"}}
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", json=body, timeout=20,
                          headers={"authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text

    sent = fake_upstream.requests[-1]["body"]
    assert {name: sent[name] for name in PASSED_THROUGH} == PASSED_THROUGH
    assert sent["model"] == "fake-gpt-1" and sent["messages"] == body["messages"]
    assert "metadata" not in sent and "podium" not in sent
    assert sent["stream"] is stream
    # Podium always asks a streaming upstream for usage, to record real token counts.
    assert sent.get("stream_options") == ({"include_usage": True} if stream else None)


def test_a_tool_call_comes_back_through_the_sdk(sdk, upstream_model):
    completion = sdk.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": "Paris?"}],
                                             tools=TOOLS, tool_choice="required")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert choice.message.tool_calls[0].function.arguments == '{"city": "Paris"}'


def test_n_choices_and_logprobs_are_passed_back(sdk, upstream_model):
    completion = sdk.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": "a b"}],
                                             n=3, logprobs=True)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert {choice.message.content for choice in completion.choices} == {"echo: a b"}
    assert [item.token for item in completion.choices[0].logprobs.content] == ["echo:", "a", "b"]
    writer.flush()
    assert Run.objects.get().confidence == pytest.approx(0.7788, abs=1e-3)  # exp(-0.25) from the logprobs


def test_a_mock_model_ignores_fields_it_cannot_honour(sdk, demo_registry):
    completion = sdk.chat.completions.create(model="swift-mini", messages=[{"role": "user", "content": "hi"}],
                                             temperature=0.1, seed=3, extra_body={"x_vendor_extension": True})
    assert completion.choices[0].message.content == "[swift-mini] hi"

"""Provider adapters: the mock is deterministic; openai_compatible is exercised against a real loopback server."""
import asyncio

import pytest

from orchestration.engine.types import ChatRequest, ModelSpec, ProviderError, ProviderSpec
from orchestration.providers.mock import MockAdapter
from orchestration.providers.openai_compatible import OpenAICompatibleAdapter
from orchestration.providers.pool import close_clients


def mock_model(**options) -> ModelSpec:
    return ModelSpec(alias="m", upstream_name="m", provider=ProviderSpec(name="mock", kind="mock", base_url="",
                                                                         options=options), quality_prior=0.5)


def run_calls(adapter, model, prompts):
    async def go():
        results = []
        for prompt in prompts:
            try:
                results.append(await adapter.chat(model, ChatRequest(messages=[{"role": "user", "content": prompt}])))
            except ProviderError as exc:
                results.append(exc.status)
        return results
    return asyncio.run(go())


def test_the_mock_is_deterministic_from_its_seed():
    options = {"seed": 42, "latency_ms": 1, "failure_rate": 0.3, "reply": ["alpha {input}", "beta {input}"],
               "confidence": [0.2, 0.9]}
    first = run_calls(MockAdapter(), mock_model(**options), [f"q{i}" for i in range(30)])
    second = run_calls(MockAdapter(), mock_model(**options), [f"q{i}" for i in range(30)])
    summary = [r if isinstance(r, int) else (r.text, r.confidence) for r in first]
    assert summary == [r if isinstance(r, int) else (r.text, r.confidence) for r in second]
    failures = sum(1 for r in first if r == 503)
    assert 3 <= failures <= 16  # ~30 % of 30
    assert {r.text.split()[0] for r in first if not isinstance(r, int)} == {"alpha", "beta"}
    other_seed = run_calls(MockAdapter(), mock_model(**{**options, "seed": 43}), [f"q{i}" for i in range(30)])
    assert [isinstance(r, int) for r in other_seed] != [isinstance(r, int) for r in first]


def test_the_mock_echoes_and_counts_tokens():
    (result,) = run_calls(MockAdapter(), mock_model(latency_ms=0), ["hello world"])
    assert result.text == "[m] hello world"
    assert result.tokens_in == 3 and result.tokens_out == 4
    assert result.confidence is None  # nothing configured: the mock measures nothing (the engine records the prior)
    (configured,) = run_calls(MockAdapter(), mock_model(latency_ms=0, confidence=0.9), ["hello world"])
    assert configured.confidence == 0.9 and configured.confidence_signals["statistic"].startswith("simulated")


def upstream_model(upstream, name="fake-1", timeout_s=2.0, api_key="") -> ModelSpec:
    provider = ProviderSpec(name="fake", kind="openai_compatible", base_url=upstream.base_url, timeout_s=timeout_s,
                            api_key=api_key, max_concurrency=8)
    return ModelSpec(alias="fake", upstream_name=name, provider=provider)


def call_upstream(model, messages=None, **params):
    async def go():
        try:
            return await OpenAICompatibleAdapter().chat(
                model, ChatRequest(messages=messages or [{"role": "user", "content": "hi there"}], params=params))
        finally:
            await close_clients()
    return asyncio.run(go())


def test_openai_compatible_returns_text_and_provider_usage(fake_upstream):
    result = call_upstream(upstream_model(fake_upstream), temperature=0.1)
    assert result.text == "echo: hi there"
    assert (result.tokens_in, result.tokens_out, result.tokens_estimated) == (2, 3, False)
    sent = fake_upstream.requests[-1]
    assert sent["body"]["model"] == "fake-1" and sent["body"]["temperature"] == 0.1 and sent["body"]["stream"] is False


def test_openai_compatible_sends_the_key_from_the_environment_only_as_a_header(fake_upstream):
    fake_upstream.api_key = "sk-test-secret"
    result = call_upstream(upstream_model(fake_upstream, api_key="sk-test-secret"))
    assert result.text.startswith("echo")
    with pytest.raises(ProviderError) as failure:
        call_upstream(upstream_model(fake_upstream, api_key="wrong"))
    assert failure.value.status == 401 and not failure.value.retryable
    assert "sk-test-secret" not in str(failure.value)


@pytest.mark.parametrize("fault, status, retryable, retry_after", [
    ("fail-500", 500, True, None),
    ("rate-limit", 429, True, 1.0),
    ("malformed", 200, True, None),
    ("reset", None, True, None),
])
def test_openai_compatible_classifies_upstream_faults(fake_upstream, fault, status, retryable, retry_after):
    with pytest.raises(ProviderError) as failure:
        call_upstream(upstream_model(fake_upstream, name=fault))
    assert failure.value.status == status
    assert failure.value.retryable is retryable
    assert failure.value.retry_after == retry_after


def test_openai_compatible_times_out(fake_upstream):
    with pytest.raises(ProviderError) as failure:
        call_upstream(upstream_model(fake_upstream, name="slow", timeout_s=0.3))
    assert failure.value.kind == "timeout" and failure.value.retryable


def test_openai_compatible_returns_tool_calls(fake_upstream):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    result = call_upstream(upstream_model(fake_upstream), tools=tools)
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls[0]["function"]["name"] == "get_weather"

"""Retries, backoff, Retry-After, timeouts and fallback chains, against the fake upstream on loopback."""
import asyncio
import random
import time

import httpx
import pytest

from orchestration.engine.circuit_breaker import circuit_breakers
from orchestration.engine.executor import DeadlineExceeded, StepFailed
from orchestration.engine.resilience import RetryPolicy
from orchestration.engine.types import ProviderError
from orchestration.engine_config import engine
from orchestration.gateway.writer import writer
from orchestration.models import LLMModel, Provider, Step
from orchestration.providers.mock import MockAdapter
from orchestration.providers.pool import concurrency_limit
from orchestration.registry import bump_version
from podium.fake_upstream import FakeUpstream
from tests.enginehelpers import context, fake_model, finished_steps, quick_engine, run, user


def test_the_backoff_doubles_with_jitter_and_stops_after_the_last_retry():
    policy = RetryPolicy(max_retries=3, base_delay_s=0.1, max_delay_s=0.3)
    error = ProviderError("boom", status=500, retryable=True)
    rng = random.Random(7)
    delays = [[policy.delay(retry, error, rng) for retry in range(3)] for _ in range(50)]
    for first, second, third in delays:
        assert 0.05 <= first <= 0.1 and 0.1 <= second <= 0.2 and 0.15 <= third <= 0.3  # capped at max_delay_s
    assert len({round(d[0], 6) for d in delays}) > 10  # jittered, not fixed
    assert policy.delay(3, error, rng) is None
    assert policy.delay(0, ProviderError("bad request", status=400, retryable=False)) is None


def test_a_retry_after_is_honoured_unless_it_is_too_long():
    policy = RetryPolicy(base_delay_s=0.01, max_retry_after_s=5)
    assert policy.delay(0, ProviderError("slow down", status=429, retryable=True, retry_after=2.0)) == 2.0
    assert policy.delay(0, ProviderError("slow down", status=429, retryable=True, retry_after=60.0)) is None


def test_provider_options_override_the_engine_defaults():
    model = fake_model(None, "m", kind="mock", options={"max_retries": 5, "retry_base_delay_s": 0.002})
    assert RetryPolicy().for_model(model) == RetryPolicy(max_retries=5, base_delay_s=0.002)


def test_a_500_is_retried_and_the_step_counts_the_retries(fake_upstream):
    fake_upstream.inject("fail-500", "fail-500")
    model = fake_model(fake_upstream, "gpt")
    ctx = context(model)
    result = run(lambda: quick_engine().call_model(ctx, model, user("hello")))

    assert result.output == "echo: hello" and result.model == "gpt"
    [step] = finished_steps(ctx)
    assert step["status"] == "succeeded" and step["key"] == "call"
    assert step["attributes"]["retries"] == 2
    assert [e.split(":")[0] for e in step["attributes"]["attempt_errors"]] == ["upstream_error", "upstream_error"]
    assert len(fake_upstream.requests) == 3


@pytest.mark.parametrize("fault, kind", [("reset", "connection_error"), ("malformed", "bad_response")])
def test_resets_and_malformed_answers_are_retried(fake_upstream, fault, kind):
    fake_upstream.inject(fault)
    model = fake_model(fake_upstream, "gpt")
    ctx = context(model)
    result = run(lambda: quick_engine().call_model(ctx, model, user("again")))

    assert result.output == "echo: again"
    [step] = finished_steps(ctx)
    assert step["attributes"]["retries"] == 1
    assert step["attributes"]["attempt_errors"][0].startswith(("connection_error", "timeout", kind))


def test_a_429_waits_as_long_as_retry_after_says(fake_upstream):
    fake_upstream.inject("rate-limit:0.4")
    model = fake_model(fake_upstream, "gpt")
    ctx = context(model)
    started = time.monotonic()
    run(lambda: quick_engine(base_delay_s=0.001).call_model(ctx, model, user("patience")))
    elapsed = time.monotonic() - started

    [step] = finished_steps(ctx)
    assert step["attributes"]["backoff_s"] >= 0.4
    assert elapsed >= 0.35  # loosely: the 1 ms backoff alone would have retried at once
    first, second = fake_upstream.requests
    assert second["at"] - first["at"] >= 0.35


def test_a_retry_after_longer_than_allowed_falls_back_at_once(fake_upstream):
    fake_upstream.inject("rate-limit:30")
    primary = fake_model(fake_upstream, "primary", fallbacks=("backup",))
    backup = fake_model(fake_upstream, "backup")
    ctx = context(primary, backup)
    result = run(lambda: quick_engine(max_retry_after_s=5).call_model(ctx, primary, user("hurry")))

    assert result.model == "backup"
    failed, succeeded = finished_steps(ctx)
    assert failed["status"] == "failed" and "HTTP 429" in failed["error"] and "retries" not in failed["attributes"]
    assert succeeded["attributes"]["fallback_from"] == "primary"


def test_a_timeout_is_retried_then_the_fallback_answers(fake_upstream):
    primary = fake_model(fake_upstream, "primary", "slow:0.6", timeout_s=0.3, fallbacks=("backup",))
    backup = fake_model(fake_upstream, "backup")
    ctx = context(primary, backup)
    result = run(lambda: quick_engine(retries=1).call_model(ctx, primary, user("late")))

    assert result.output == "echo: late" and result.model == "backup"
    failed, succeeded = finished_steps(ctx)
    assert (failed["key"], failed["model"], failed["status"]) == ("call", "primary", "failed")
    assert failed["attributes"]["retries"] == 1
    assert all(error.startswith("timeout") for error in failed["attributes"]["attempt_errors"])
    assert (succeeded["key"], succeeded["model"]) == ("call.fallback1", "backup")
    assert succeeded["attributes"]["fallback_from"] == "primary"


def test_a_request_error_is_not_retried_nor_counted_against_the_circuit(fake_upstream):
    fake_upstream.api_key = "right"
    model = fake_model(fake_upstream, "gpt")
    engine = quick_engine(failures=1)
    ctx = context(model)
    with pytest.raises(StepFailed) as failure:
        run(lambda: engine.call_model(ctx, model, user("x")))
    assert failure.value.error.status == 401
    [step] = finished_steps(ctx)
    assert "retries" not in step["attributes"] and len(step["attributes"]["attempt_errors"]) == 1
    assert engine.breakers.for_model(model).state == "closed"


def test_when_every_model_fails_the_step_failure_names_the_last_error(fake_upstream):
    fake_upstream.default_fault = "fail-500"
    primary = fake_model(fake_upstream, "primary", fallbacks=("backup", "not-in-registry"))
    backup = fake_model(fake_upstream, "backup")
    ctx = context(primary, backup)
    with pytest.raises(StepFailed, match="every model of the fallback chain failed.*HTTP 500"):
        run(lambda: quick_engine(retries=1).call_model(ctx, primary, user("doomed")))
    assert [(s["key"], s["status"]) for s in finished_steps(ctx)] == [("call", "failed"), ("call.fallback1", "failed")]
    assert len(fake_upstream.requests) == 4


def test_the_run_deadline_cuts_retries_short(fake_upstream):
    fake_upstream.default_fault = "fail-500"
    model = fake_model(fake_upstream, "gpt")
    ctx = context(model, deadline=time.monotonic() + 0.3)
    with pytest.raises(DeadlineExceeded):
        run(lambda: quick_engine(retries=50, base_delay_s=0.05).call_model(ctx, model, user("tick")))
    assert len(fake_upstream.requests) < 20


def test_mock_calls_respect_the_provider_concurrency_limit():
    model = fake_model(None, "mocked", kind="mock", max_concurrency=2, options={"latency_ms": 50})

    async def scenario():
        tasks = [asyncio.create_task(MockAdapter().chat(model, user(f"q{i}"))) for i in range(6)]
        await asyncio.sleep(0)  # every task runs to where it waits: two in their latency, four for the limit
        semaphore = concurrency_limit(model.provider)
        locked, waiting = semaphore.locked(), len(semaphore._waiters or ())
        return locked, waiting, await asyncio.gather(*tasks)

    locked, waiting, results = run(scenario)
    assert locked and waiting == 4
    assert len(results) == 6


# --- through /v1 on a live server ------------------------------------------------------------------
@pytest.fixture
def quick_gateway(monkeypatch):
    """The live server's engine with millisecond backoff; breakers reset before and after."""
    monkeypatch.setattr(engine, "retry", RetryPolicy(max_retries=2, base_delay_s=0.002))
    defaults = circuit_breakers.settings
    circuit_breakers.reset()
    yield engine
    circuit_breakers.configure(**defaults.__dict__)


@pytest.fixture
def sick_upstream():
    upstream = FakeUpstream().start_in_thread()
    upstream.default_fault = "fail-500"
    yield upstream
    upstream.stop()


def test_with_one_provider_failing_every_call_100_requests_through_the_fallback_chain_all_succeed(
        podium_server, api_key, quick_gateway, published, fake_upstream, sick_upstream):
    sick = Provider.objects.create(name="sick", kind=Provider.Kind.OPENAI_COMPATIBLE, base_url=sick_upstream.base_url,
                                   timeout_s=2)
    healthy = Provider.objects.create(name="healthy", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                      base_url=fake_upstream.base_url, timeout_s=2)
    LLMModel.objects.create(provider=sick, alias="primary", upstream_name="p-1", fallbacks=["backup"])
    LLMModel.objects.create(provider=healthy, alias="backup", upstream_name="b-1")
    bump_version()

    async def scenario():
        limit = asyncio.Semaphore(10)
        async with httpx.AsyncClient(base_url=podium_server.url, timeout=30,
                                     headers={"authorization": f"Bearer {api_key}"}) as client:
            async def one(i):
                async with limit:
                    return await client.post("/v1/chat/completions", json={
                        "model": "primary", "messages": [{"role": "user", "content": f"question {i}"}]})
            return await asyncio.gather(*(one(i) for i in range(100)))

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 100
    assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {f"echo: question {i}" for i in range(100)}
    # The circuit opened after 5 failed calls, so the sick provider was spared most of the traffic.
    assert len(sick_upstream.requests) < 30
    assert ("primary", "open") in [(e["model"], e["state"]) for e in published if e["type"] == "model.health"]

    writer.flush()
    served = Step.objects.filter(status="succeeded")
    assert served.count() == 100 and set(served.values_list("model_alias", flat=True)) == {"backup"}
    assert all(step.attributes["fallback_from"] == "primary" for step in served)
    assert Step.objects.filter(model_alias="primary", status="failed").count() == len(
        [e for e in published if e["type"] == "step.finished" and e["model"] == "primary"])

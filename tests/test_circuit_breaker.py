"""The per-model circuit breaker: opens on failures, probes after a cooldown, recovers; model.health events."""
import asyncio

import httpx
import pytest

from orchestration.engine.circuit_breaker import BreakerSettings, CircuitBreaker, CircuitBreakers, circuit_breakers
from orchestration.engine.events import ListSink
from orchestration.engine.executor import StepFailed
from orchestration.engine.resilience import RetryPolicy
from orchestration.engine_config import engine
from orchestration.models import LLMModel, Provider
from orchestration.registry import bump_version
from podium.fake_upstream import FakeUpstream
from tests.enginehelpers import (SteppedClock, context, fake_model, finished_steps, health_events, quick_engine, run,
                                 user)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def breaker(clock=None, **settings) -> tuple[CircuitBreaker, ListSink]:
    return CircuitBreaker("m", BreakerSettings(**settings), clock or Clock()), ListSink()


def fail(b: CircuitBreaker, sink, times: int = 1) -> None:
    for _ in range(times):
        b.release(b.admit(sink), failed=True, sink=sink)


def test_it_opens_after_n_consecutive_failures_and_then_refuses_calls():
    b, sink = breaker(failures=3)
    fail(b, sink, 2)
    b.release(b.admit(sink), failed=False, sink=sink)  # a success resets the streak
    fail(b, sink, 2)
    assert b.state == "closed"
    fail(b, sink)
    assert b.state == "open" and b.admit(sink) is None
    [event] = sink.events
    assert event["type"] == "model.health" and (event["model"], event["state"], event["in_flight"]) == ("m", "open", 0)
    assert isinstance(event["ts"], int)


def test_it_opens_on_the_error_rate_without_a_streak():
    b, sink = breaker(failures=100, error_rate=0.5, window=10, min_calls=6)
    for failed in (True, False, True, False, True):
        b.release(b.admit(sink), failed=failed, sink=sink)
    assert b.state == "closed"  # 3 of 5, but fewer calls than min_calls
    b.release(b.admit(sink), failed=True, sink=sink)
    assert b.state == "open"


def test_after_the_cooldown_a_single_probe_goes_through_and_its_success_closes_the_circuit():
    clock = Clock()
    b, sink = breaker(clock, failures=1, cooldown_s=10)
    fail(b, sink)
    clock.now += 9.9
    assert b.admit(sink) is None
    clock.now += 0.2
    probe = b.admit(sink)
    assert probe is not None and probe.probe and b.state == "half_open"
    assert b.admit(sink) is None  # one probe at a time
    b.release(probe, failed=False, sink=sink)
    assert b.state == "closed" and b.admit(sink) is not None
    assert [e["state"] for e in sink.events] == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_the_circuit_for_another_cooldown():
    clock = Clock()
    b, sink = breaker(clock, failures=1, cooldown_s=10)
    fail(b, sink)
    clock.now += 10
    b.release(b.admit(sink), failed=True, sink=sink)
    assert b.state == "open"
    clock.now += 5
    assert b.admit(sink) is None
    assert [e["state"] for e in sink.events] == ["open", "half_open", "open"]


def test_a_cancelled_probe_lets_the_next_call_probe():
    clock = Clock()
    b, sink = breaker(clock, failures=1, cooldown_s=1)
    fail(b, sink)
    clock.now += 1
    b.release(b.admit(sink), failed=None, sink=sink)
    assert b.state == "half_open"
    assert b.admit(sink).probe


def test_in_flight_calls_are_counted_in_health_events():
    b, sink = breaker(failures=1)
    first, second = b.admit(sink), b.admit(sink)
    assert b.in_flight == 2
    b.release(first, failed=True, sink=sink)
    assert sink.events[-1]["in_flight"] == 1
    b.release(second, failed=False, sink=sink)  # admitted before it opened: no say any more
    assert b.state == "open" and b.in_flight == 0


def test_breakers_are_shared_per_alias_and_renewed_when_the_model_is_reconfigured():
    breakers = CircuitBreakers(BreakerSettings(failures=1))
    model = fake_model(None, "m", kind="mock")
    fail(breakers.for_model(model), ListSink())
    assert breakers.for_model(model).state == "open"
    assert breakers.states() == {"m": {"state": "open", "in_flight": 0}}
    moved = fake_model(None, "m", "another-upstream-name", kind="mock")
    assert breakers.for_model(moved).state == "closed"
    tuned = fake_model(None, "m", "another-upstream-name", kind="mock", options={"circuit_failures": 3})
    assert breakers.for_model(tuned).settings.failures == 3


def test_the_circuit_opens_then_recovers_through_a_half_open_probe(fake_upstream):
    primary = fake_model(fake_upstream, "primary", "primary-1", fallbacks=("backup",))
    backup = fake_model(fake_upstream, "backup", "backup-1")
    clock = SteppedClock()
    engine = quick_engine(retries=0, failures=3, cooldown_s=30, clock=clock)

    async def scenario():
        contexts = []
        # The queue is played in request order: primary fails, backup answers, three times.
        fake_upstream.inject("fail-500", "backup-ok", "fail-500", "backup-ok", "fail-500", "backup-ok")
        for i in range(5):
            ctx = context(primary, backup)
            result = await engine.call_model(ctx, primary, user(f"q{i}"))
            assert result.output == f"echo: q{i}"
            contexts.append(ctx)
        calls_while_open = fake_upstream.model_counts["primary-1"]
        clock.advance(30)
        ctx = context(primary, backup)
        recovered = await engine.call_model(ctx, primary, user("healed"))
        contexts.append(ctx)
        return contexts, calls_while_open, recovered

    contexts, calls_while_open, recovered = run(scenario)
    assert calls_while_open == 3  # the 4th and 5th requests skipped the open circuit
    assert [health_events(ctx) for ctx in contexts] == [[], [], [("primary", "open")], [], [],
                                                        [("primary", "half_open"), ("primary", "closed")]]
    skipped_step = finished_steps(contexts[3])[0]
    assert skipped_step["model"] == "backup" and skipped_step["attributes"]["circuit_skipped"] == ["primary"]
    assert skipped_step["attributes"]["fallback_from"] == "primary"
    opened_step = finished_steps(contexts[2])[0]
    assert opened_step["status"] == "failed" and opened_step["attributes"]["circuit"] == "open"
    assert recovered.model == "primary"
    [probe_step] = finished_steps(contexts[5])
    assert probe_step["attributes"]["circuit"] == "closed"


def test_concurrent_requests_during_half_open_send_a_single_probe():
    upstream = FakeUpstream(delay_ms=150).start_in_thread()
    try:
        primary = fake_model(upstream, "primary", "primary-1", fallbacks=("backup",))
        backup = fake_model(upstream, "backup", "backup-1")
        engine = quick_engine(retries=0, failures=1, cooldown_s=0.05)

        async def scenario():
            upstream.inject("fail-500")
            await engine.call_model(context(primary, backup), primary, user("trip"))
            await asyncio.sleep(0.1)
            before = upstream.model_counts["primary-1"]
            results = await asyncio.gather(*(engine.call_model(context(primary, backup), primary, user(f"c{i}"))
                                             for i in range(5)))
            return upstream.model_counts["primary-1"] - before, results

        probes, results = run(scenario)
        assert probes == 1
        assert sorted(r.model for r in results) == ["backup"] * 4 + ["primary"]
    finally:
        upstream.stop()


def test_when_every_circuit_is_open_the_call_fails_without_reaching_the_provider(fake_upstream):
    model = fake_model(fake_upstream, "lonely", "lonely-1")
    engine = quick_engine(retries=0, failures=1)
    fake_upstream.inject("fail-500")
    with pytest.raises(StepFailed):
        run(lambda: engine.call_model(context(model), model, user("one")))
    ctx = context(model)
    with pytest.raises(StepFailed, match="circuit open for lonely"):
        run(lambda: engine.call_model(ctx, model, user("two")))
    assert fake_upstream.model_counts["lonely-1"] == 1
    [step] = finished_steps(ctx)
    assert step["status"] == "failed" and step["attributes"]["circuit"] == "open"


# --- through /v1 on a live server, as the dashboard sees it ---------------------------------------------
def test_a_v1_model_circuit_opens_and_recovers_and_the_dashboard_is_told(podium_server, api_key, fake_upstream,
                                                                          published, monkeypatch):
    monkeypatch.setattr(engine, "retry", RetryPolicy(max_retries=0))
    clock = SteppedClock()
    monkeypatch.setattr(circuit_breakers, "_clock", clock)  # new breakers take it
    defaults = circuit_breakers.settings
    circuit_breakers.configure(failures=2, cooldown_s=30)
    try:
        provider = Provider.objects.create(name="flaky", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                           base_url=fake_upstream.base_url, timeout_s=2)
        LLMModel.objects.create(provider=provider, alias="flaky-gpt", upstream_name="flaky-1", fallbacks=["steady"])
        LLMModel.objects.create(provider=provider, alias="steady", upstream_name="steady-1")
        bump_version()
        headers = {"authorization": f"Bearer {api_key}"}

        def ask(text):
            response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers=headers, timeout=10,
                                  json={"model": "flaky-gpt", "messages": [{"role": "user", "content": text}]})
            assert response.status_code == 200
            return response.json()["choices"][0]["message"]["content"]

        fake_upstream.inject("fail-500", "steady-ok", "fail-500", "steady-ok")
        assert [ask(f"q{i}") for i in range(4)] == [f"echo: q{i}" for i in range(4)]
        assert fake_upstream.model_counts["flaky-1"] == 2
        clock.advance(30)
        assert ask("after the cooldown") == "echo: after the cooldown"
        assert fake_upstream.model_counts["flaky-1"] == 3
        health = [(e["model"], e["state"]) for e in published if e["type"] == "model.health"]
        assert health == [("flaky-gpt", "open"), ("flaky-gpt", "half_open"), ("flaky-gpt", "closed")]
        assert all(isinstance(e["in_flight"], int) for e in published if e["type"] == "model.health")
    finally:
        circuit_breakers.configure(**defaults.__dict__)

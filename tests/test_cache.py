"""The exact-match response cache: keys, TTL and LRU, hits as zero-cost steps, opt-out, Django's cache on /v1."""
import uuid

import httpx
import pytest

from orchestration.engine.cache import MemoryResponseCache, cache_key
from orchestration.engine.types import ChatRequest
from orchestration.gateway.writer import writer
from orchestration.models import LLMModel, Provider, Run
from orchestration.registry import bump_version
from tests.enginehelpers import context, fake_model, finished_steps, quick_engine, run, user


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_key_covers_model_messages_and_sampling_params_only():
    model = fake_model(None, "m", kind="mock")
    messages = [{"role": "user", "content": "hi"}]
    key = cache_key(model, ChatRequest(messages=messages, params={"temperature": 0.2, "max_tokens": 5}))
    assert len(key) == 64
    assert key == cache_key(model, ChatRequest(messages=list(messages), params={"max_tokens": 5, "temperature": 0.2,
                                                                                "user": "someone", "stream": False}))
    assert key != cache_key(model, ChatRequest(messages=messages, params={"temperature": 0.3, "max_tokens": 5}))
    assert key != cache_key(model, ChatRequest(messages=[{"role": "user", "content": "hi!"}],
                                               params={"temperature": 0.2, "max_tokens": 5}))
    assert key != cache_key(fake_model(None, "m2", kind="mock"),
                            ChatRequest(messages=messages, params={"temperature": 0.2, "max_tokens": 5}))


def test_the_memory_cache_expires_entries_and_evicts_the_least_recently_used():
    clock = Clock()
    cache = MemoryResponseCache(max_entries=2, clock=clock)

    async def scenario():
        await cache.set("a", {"v": 1}, ttl_s=10)
        await cache.set("b", {"v": 2}, ttl_s=100)
        assert await cache.get("a") == {"v": 1}  # a is now the most recent
        await cache.set("c", {"v": 3}, ttl_s=100)
        assert await cache.get("b") is None and await cache.get("c") == {"v": 3}
        clock.now = 10
        assert await cache.get("a") is None and await cache.get("c") == {"v": 3}
    run(scenario)


def test_a_repeated_call_is_a_cache_hit_with_zero_cost(fake_upstream):
    model = fake_model(fake_upstream, "cached", cache_ttl_s=60, price_in_per_m=1000.0, price_out_per_m=1000.0)
    engine = quick_engine()
    first_ctx, second_ctx = context(model), context(model)

    async def scenario():
        first = await engine.call_model(first_ctx, model, user("same question"))
        second = await engine.call_model(second_ctx, model, user("same question"))
        return first, second

    first, second = run(scenario)
    assert len(fake_upstream.requests) == 1
    assert second.output == first.output == "echo: same question"
    assert (second.tokens_in, second.tokens_out) == (first.tokens_in, first.tokens_out)
    assert first.cost_usd > 0 and second.cost_usd == 0 and second_ctx.spent_usd == 0
    [miss], [hit] = finished_steps(first_ctx), finished_steps(second_ctx)
    assert "cached" not in miss["attributes"]
    assert hit["attributes"]["cached"] is True and hit["cost_usd"] == 0 and hit["status"] == "succeeded"


def test_a_request_can_opt_out_and_a_model_without_ttl_never_caches(fake_upstream):
    cached = fake_model(fake_upstream, "cached", cache_ttl_s=60)
    uncached = fake_model(fake_upstream, "uncached")
    engine = quick_engine()

    async def scenario():
        await engine.call_model(context(cached), cached, user("q"))
        await engine.call_model(context(cached), cached, user("q"), cache=False)
        await engine.call_model(context(uncached), uncached, user("q"))
        await engine.call_model(context(uncached), uncached, user("q"))
    run(scenario)
    assert len(fake_upstream.requests) == 4
    assert len(engine.cache) == 1


def test_failures_are_not_cached(fake_upstream):
    model = fake_model(fake_upstream, "cached", cache_ttl_s=60)
    engine = quick_engine(retries=0)
    fake_upstream.inject("fail-500")

    async def scenario():
        try:
            await engine.call_model(context(model), model, user("q"))
        except Exception:
            pass
        return await engine.call_model(context(model), model, user("q"))
    assert run(scenario).output == "echo: q"
    assert len(fake_upstream.requests) == 2


def test_a_broken_cache_costs_a_call_not_the_request(fake_upstream):
    class BrokenCache:
        async def get(self, key):
            raise ConnectionError("cache down")

        async def set(self, key, value, ttl_s):
            raise ConnectionError("cache down")

    model = fake_model(fake_upstream, "cached", cache_ttl_s=60)
    engine = quick_engine()
    engine.cache = BrokenCache()
    assert run(lambda: engine.call_model(context(model), model, user("q"))).output == "echo: q"


# --- through /v1, on Django's cache ----------------------------------------------------------------------
@pytest.fixture
def cached_model(db, fake_upstream):
    provider = Provider.objects.create(name="cachable", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                       base_url=fake_upstream.base_url, timeout_s=2)
    LLMModel.objects.create(provider=provider, alias="cached-gpt", upstream_name=f"cached-{uuid.uuid4().hex[:8]}",
                            cache_ttl_s=60, price_in_per_m="2", price_out_per_m="8")
    bump_version()


def test_v1_serves_a_repeat_from_the_cache_and_honours_the_opt_out(podium_server, api_key, cached_model,
                                                                  fake_upstream):
    body = {"model": "cached-gpt", "messages": [{"role": "user", "content": f"cache me {uuid.uuid4().hex}"}],
            "temperature": 0}
    headers = {"authorization": f"Bearer {api_key}"}

    def post(extra=None):
        response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers=headers, json={**body, **(extra or {})},
                              timeout=10)
        assert response.status_code == 200
        return response

    first, second = post(), post()
    assert len(fake_upstream.requests) == 1
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    post({"podium": {"cache": False}})
    assert len(fake_upstream.requests) == 2

    writer.flush()
    hit = Run.objects.get(id=second.headers["x-podium-run-id"])
    assert float(hit.cost_usd) == 0 and hit.steps.get().attributes["cached"] is True
    assert float(Run.objects.get(id=first.headers["x-podium-run-id"]).cost_usd) > 0

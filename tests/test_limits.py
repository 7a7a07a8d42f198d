"""Per-key rate limits and budgets (embedded mode: the in-process limiter, the database's reservations) on /v1
and /api. tests/test_budgets.py has the reservations themselves."""
import time

import httpx
import pytest

from orchestration.access import budgets, limits
from orchestration.gateway.writer import writer
from orchestration.models import APIKey


@pytest.fixture(autouse=True)
def inside_one_window():
    """The windows are fixed minutes: start well inside one so a test's requests share it."""
    limits.local.reset()
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    yield
    limits.local.reset()


def chat(server, raw_key: str, model: str = "swift-mini", **params) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", headers={"authorization": f"Bearer {raw_key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hello there"}], **params},
                      timeout=10)


def test_a_key_over_its_requests_per_minute_gets_429_with_retry_after_in_openai_format(podium_server, demo_registry):
    _, raw = APIKey.issue("rpm", requests_per_minute=2)
    codes = [chat(podium_server, raw).status_code for _ in range(2)]
    refused = chat(podium_server, raw)
    assert codes == [200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "requests per minute (limit 2)" in error["message"]


def test_a_key_without_limits_is_never_refused(podium_server, demo_registry, api_key):
    assert {chat(podium_server, api_key).status_code for _ in range(5)} == {200}


def test_tokens_per_minute_hold_each_calls_upper_bound_then_its_actual_tokens(podium_server, demo_registry):
    # The limit fits one call's bound (its prompt's bound + max_tokens) and one token more: the call holds its bound,
    # settles to its actual tokens (at least two), and a second bound no longer fits in this minute.
    bound = budgets.prompt_token_bound([{"role": "user", "content": "hello there"}]) + 20
    _, raw = APIKey.issue("tpm", tokens_per_minute=bound + 1)
    assert chat(podium_server, raw, max_tokens=20).status_code == 200
    writer.flush()  # the batched writer settles the call's actual tokens as it records it
    refused = chat(podium_server, raw, max_tokens=20)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens" and "retry-after" in refused.headers


def test_a_request_whose_bound_alone_exceeds_tokens_per_minute_is_refused_without_retry_after(podium_server,
                                                                                             demo_registry):
    _, raw = APIKey.issue("tpm-small", tokens_per_minute=5)
    refused = chat(podium_server, raw)  # no max_tokens: the bound is the model's whole context window
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "tokens" and "max_tokens" in error["message"] and "retry-after" not in refused.headers


def test_a_key_that_spent_its_budget_is_refused_without_retry_after(podium_server, demo_registry):
    key, raw = APIKey.issue("budget", budget_usd="0.0100")
    assert chat(podium_server, raw, "titan-ultra", max_tokens=10).status_code == 200  # its bound fits
    APIKey.objects.filter(pk=key.pk).update(spent_usd="0.0100")  # as if the rest had been spent elsewhere
    refused = chat(podium_server, raw, "titan-ultra", max_tokens=10)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "retry-after" not in refused.headers  # waiting does not refill a budget


def test_api_requests_count_against_the_same_key_limits_with_drf_429(client, demo_registry):
    _, raw = APIKey.issue("api-rpm", scopes=["runs", "runs:read"], requests_per_minute=3)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    codes = [client.get("/api/runs/", **headers).status_code for _ in range(3)]
    refused = client.get("/api/runs/", **headers)
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    assert "requests per minute" in refused.json()["detail"]


def test_a_key_over_budget_may_still_read_its_runs_but_not_start_one(client, demo_registry):
    key, raw = APIKey.issue("api-budget", scopes=["runs", "runs:read"], budget_usd="1")
    APIKey.objects.filter(pk=key.pk).update(spent_usd="1.5")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get("/api/runs/", **headers).status_code == 200
    refused = client.post("/api/runs/", {"workflow": "anything", "input": "x"}, content_type="application/json",
                          **headers)
    assert refused.status_code == 429 and "budget" in refused.json()["detail"]


def test_the_local_limiter_admits_exactly_the_limit_from_many_threads():
    import threading

    key = limits.KeyLimits(key_id=987654, requests_per_minute=50)
    admitted = []

    def hammer():
        for _ in range(20):
            code, _ = limits.local.admit(key, time.time())
            admitted.append(code == 0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 50 and len(admitted) == 160

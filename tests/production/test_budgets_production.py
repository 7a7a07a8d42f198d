"""Budgets on the real PostgreSQL and Redis with two web processes (gunicorn, one port): every call holds an upper
bound of its cost in Redis (one Lua script) before the upstream sees it, so concurrent calls spread over both
processes never spend past a key's or a team's budget; a killed process's holds expire.

The upstream is the fake one (podium/fake_upstream.py) in this test process: it counts the requests it saw.
Skipped, with the reason, where PostgreSQL or Redis does not answer (see stack.py).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from decimal import Decimal

import httpx
import pytest

from orchestration.access import budgets
from podium.fake_upstream import FakeUpstream
from tests.conftest import wait_for
from tests.production.stack import Stack, require_services

pytestmark = [pytest.mark.production, pytest.mark.timeout(240)]
RESERVATION_TTL_S = 4  # a killed process's holds are released this long after they were taken
# "hello" on fake-gpt ($2 in, $8 out per million): 1 prompt token, "echo: hello" 2 tokens = $0.000018 a call; its
# bound with max_tokens 4 is ~$0.00007. $0.0001 pays for 5 calls, not 6.
CALL_COST = Decimal("0.000018")
BUDGET = Decimal("0.0001")
HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
# A team's tokens per minute: three calls' bounds (each call's actual tokens are 3: 1 prompt + 2 answer).
TPM = 3 * (budgets.prompt_token_bound(HELLO["messages"]) + 4)
SEED = """
import json
from orchestration.models import APIKey, LLMModel, Provider, Team
from orchestration.registry import bump_version
from orchestration.workflows import save_workflow
provider = Provider.objects.create(name="fake", kind=Provider.Kind.OPENAI_COMPATIBLE, base_url=BASE_URL, timeout_s=30)
for alias, upstream in (("fake-gpt", "fake-gpt-1"), ("fake-slow", "slow:30")):
    LLMModel.objects.create(provider=provider, alias=alias, upstream_name=upstream, price_in_per_m="2.0",
                            price_out_per_m="8.0", quality_prior=0.7)
save_workflow(slug="budgeted", spec={"root": {"type": "call", "model": "fake-gpt", "params": {"max_tokens": 4}}})
team = Team.objects.create(slug="thrifty", name="Thrifty", budget_usd_per_day=BUDGET)
keys = {name: APIKey.issue(name, team=team if name.startswith("team") else None,
                           budget_usd=None if name.startswith("team") else BUDGET)
        for name in ("key", "team1", "team2", "runs", "crash", "big", "outage")}
APIKey.objects.filter(pk=keys["big"][0].pk).update(budget_usd="0.0010")
streaming = Team.objects.create(slug="streaming", name="Streaming", budget_usd_per_day=BUDGET)
keys["streams"] = APIKey.issue("streams", team=streaming)
busy = Team.objects.create(slug="busy", name="Busy", tokens_per_minute=TPM)
for name in ("busy1", "busy2"):
    keys[name] = APIKey.issue(name, team=busy)
bump_version()
print(json.dumps({name: {"id": key.id, "raw": raw} for name, (key, raw) in keys.items()}))
"""


@pytest.fixture(scope="module")
def upstream():
    fake = FakeUpstream().start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def stack(upstream):
    require_services()
    stack = Stack()
    try:
        stack.base_env["PODIUM_BUDGET_RESERVATION_TTL_S"] = str(RESERVATION_TTL_S)
        stack.prepare()
        code = (SEED.replace("BASE_URL", repr(upstream.base_url)).replace("BUDGET", repr(str(BUDGET)))
                .replace("TPM", str(TPM)))
        stack.keys = json.loads(stack.manage("shell", "-c", code).strip().splitlines()[-1])
        stack.start_web(2)
        yield stack
    finally:
        stack.stop()


async def _calls(stack: Stack, raw_keys: list[str], count: int, model: str, body: dict) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=stack.url(), timeout=60,
                                 limits=httpx.Limits(max_connections=count)) as client:
        async def one(index: int):
            return await client.post("/v1/chat/completions", json={"model": model, **body},
                                     headers={"authorization": f"Bearer {raw_keys[index % len(raw_keys)]}"})
        return await asyncio.gather(*(one(index) for index in range(count)))


def calls(stack: Stack, raw_keys: list[str], count: int, model: str = "fake-gpt", body: dict = HELLO):
    return asyncio.run(_calls(stack, raw_keys, count, model, body))


def raw(stack: Stack, name: str) -> str:
    return stack.keys[name]["raw"]


def key_id(stack: Stack, name: str) -> int:
    return stack.keys[name]["id"]


def recorded_spend(stack: Stack, where: str, value, calls_succeeded: int) -> Decimal:
    """What the runs of a key or team cost, once the batched writers of both processes committed the calls that
    succeeded (their rows come within a flush interval)."""
    def spent() -> Decimal:
        return Decimal(stack.db.value(f"SELECT coalesce(sum(cost_usd), 0) FROM orchestration_run WHERE {where} = %s",
                                      [value]))
    wait_for(lambda: spent() >= calls_succeeded * CALL_COST, timeout=10)
    return spent()


def until_refused(stack: Stack, raw_keys: list[str]) -> list[httpx.Response]:
    """Calls one by one after the burst until the budget refuses one: it is spent, not only held."""
    answers = []
    for index in range(20):
        time.sleep(0.5)  # the batched writers (0.1 s here) commit the calls before and settle their holds
        answers += calls(stack, [raw_keys[index % len(raw_keys)]], 1)
        if answers[-1].status_code == 429:
            return answers
    return answers


def assert_refused_by(answers: list[httpx.Response], budget: str) -> None:
    for answer in answers:
        if answer.status_code != 200:
            assert answer.status_code == 429, answer.text
            error = answer.json()["error"]
            assert error["code"] == "insufficient_quota" and budget in error["message"], error


def test_fifty_concurrent_calls_on_two_processes_spend_at_most_the_key_budget(stack, upstream):
    before = upstream.model_counts["fake-gpt-1"]
    answers = calls(stack, [raw(stack, "key")], 50)
    answers += until_refused(stack, [raw(stack, "key")])
    succeeded = sum(answer.status_code == 200 for answer in answers)
    print(f"\nkey budget: {succeeded} of {len(answers)} calls succeeded")
    assert 1 <= succeeded <= 5 and answers[-1].status_code == 429
    assert_refused_by(answers, "this API key's lifetime budget")
    spent = recorded_spend(stack, "api_key_id", key_id(stack, "key"), succeeded)
    assert spent == succeeded * CALL_COST <= BUDGET
    assert Decimal(stack.db.value("SELECT spent_usd FROM orchestration_apikey WHERE id = %s",
                                  [key_id(stack, "key")])) <= BUDGET
    assert upstream.model_counts["fake-gpt-1"] - before == succeeded


def test_a_team_budget_holds_for_its_two_keys_across_both_processes(stack, upstream):
    before = upstream.model_counts["fake-gpt-1"]
    keys = [raw(stack, "team1"), raw(stack, "team2")]
    answers = calls(stack, keys, 50)
    answers += until_refused(stack, keys)
    succeeded = sum(answer.status_code == 200 for answer in answers)
    print(f"\nteam budget: {succeeded} of {len(answers)} calls succeeded")
    assert 1 <= succeeded <= 5 and answers[-1].status_code == 429
    assert_refused_by(answers, "the team 'thrifty's daily budget")
    team_id = stack.db.value("SELECT id FROM orchestration_team WHERE slug = 'thrifty'")
    assert recorded_spend(stack, "team_id", team_id, succeeded) == succeeded * CALL_COST <= BUDGET
    assert upstream.model_counts["fake-gpt-1"] - before == succeeded


def test_a_40_kb_prompt_on_a_tiny_budget_never_reaches_the_upstream(stack, upstream):
    before = sum(upstream.model_counts.values())
    big = {"messages": [{"role": "user", "content": "lorem ipsum " * 3400}], "max_tokens": 10}
    answer = calls(stack, [raw(stack, "big")], 1, body=big)[0]
    assert answer.status_code == 429
    assert "this API key's lifetime budget of $0.001" in answer.json()["error"]["message"]
    assert sum(upstream.model_counts.values()) == before
    assert recorded_spend(stack, "api_key_id", key_id(stack, "big"), 0) == 0


def test_twenty_concurrent_workflow_runs_stop_at_the_budget(stack, upstream):
    before = upstream.model_counts["fake-gpt-1"]
    answers = calls(stack, [raw(stack, "runs")], 20, model="workflow/budgeted")
    succeeded = sum(answer.status_code == 200 for answer in answers)
    print(f"\nworkflow runs: {succeeded} of 20 succeeded")
    assert 1 <= succeeded <= 5
    for answer in answers:
        if answer.status_code != 200:
            assert answer.json()["error"]["code"] in ("budget_exceeded", "insufficient_quota"), answer.text
    runs = dict(stack.db.query("SELECT status, count(*) FROM orchestration_run WHERE api_key_id = %s GROUP BY status",
                               [key_id(stack, "runs")]))
    assert runs.get("succeeded", 0) == succeeded and set(runs) <= {"succeeded", "budget_exceeded"}
    assert recorded_spend(stack, "api_key_id", key_id(stack, "runs"), succeeded) == succeeded * CALL_COST <= BUDGET
    assert upstream.model_counts["fake-gpt-1"] - before == succeeded


def test_twenty_concurrent_streamed_workflow_runs_stop_at_the_teams_daily_budget(stack, upstream):
    """The streamed final call (engine/streaming.py) holds its bound in Redis as call_model does; the team's day's
    spend is its runs' finished steps (PostgreSQL)."""
    before = upstream.model_counts["fake-gpt-1"]
    answers = calls(stack, [raw(stack, "streams")], 20, model="workflow/budgeted", body={**HELLO, "stream": True})
    succeeded = [answer for answer in answers if answer.status_code == 200]
    print(f"\nstreamed workflow runs: {len(succeeded)} of 20 succeeded")
    assert succeeded and all(answer.text.rstrip().endswith("data: [DONE]") for answer in succeeded)
    refused = [answer for answer in answers if answer.status_code != 200]
    assert refused and all(answer.json()["error"]["code"] == "budget_exceeded" for answer in refused)
    team_id = stack.db.value("SELECT id FROM orchestration_team WHERE slug = 'streaming'")
    runs = dict(stack.db.query("SELECT status, count(*) FROM orchestration_run WHERE team_id = %s GROUP BY status",
                               [team_id]))
    assert runs == {"succeeded": len(succeeded), "budget_exceeded": len(refused)}
    spent = Decimal(stack.db.value("SELECT coalesce(sum(s.cost_usd), 0) FROM orchestration_step s JOIN "
                                   "orchestration_run r ON r.id = s.run_id WHERE r.team_id = %s AND "
                                   "s.node_type = 'call'", [team_id]))
    assert 0 < spent <= BUDGET
    assert upstream.model_counts["fake-gpt-1"] - before == len(succeeded)


def test_the_holds_of_a_killed_process_are_released_at_their_expiry(stack, upstream):
    key = raw(stack, "crash")

    async def hold_then_kill():
        async with httpx.AsyncClient(base_url=stack.url(), timeout=60) as client:
            stuck = asyncio.ensure_future(client.post(
                "/v1/chat/completions", json={"model": "fake-slow", **HELLO},
                headers={"authorization": f"Bearer {key}"}))
            await asyncio.to_thread(wait_for, lambda: upstream.model_counts["slow:30"] >= 1, 20)
            # The call's bound is held: the same key's next call does not fit beside it.
            refused = await client.post("/v1/chat/completions", json={"model": "fake-gpt", **HELLO},
                                        headers={"authorization": f"Bearer {key}"})
            workers = stack.web_workers()
            for pid in workers:  # every web process dies holding what it held; gunicorn starts new ones
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(httpx.HTTPError):
                await stuck
            return refused, workers

    refused, killed = asyncio.run(hold_then_kill())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    stack.wait_web_workers(2, besides=frozenset(killed))
    held = stack.redis.client.zcard(f"podium:budget:{{k{key_id(stack, 'crash')}}}:exp")
    assert held == 1  # the dead process's hold is still there ...

    def a_call_fits():
        answer = calls(stack, [key], 1)[0]
        return answer if answer.status_code == 200 else None

    answer = wait_for(a_call_fits, timeout=RESERVATION_TTL_S * 5, interval=0.5)  # ... until it expires
    assert answer.json()["choices"][0]["message"]["content"] == "echo: hello"
    # That call's own hold, settled when its run is committed, is the last: nothing of the dead process is left.
    wait_for(lambda: stack.redis.client.zcard(f"podium:budget:{{k{key_id(stack, 'crash')}}}:exp") == 0, timeout=10)


def test_a_team_tokens_per_minute_hold_across_its_keys_and_both_processes(stack, upstream):
    if time.time() % 60 > 50:  # one minute's window for the whole test
        time.sleep(61 - time.time() % 60)
    before = upstream.model_counts["fake-gpt-1"]
    answers = calls(stack, [raw(stack, "busy1"), raw(stack, "busy2")], 40)
    succeeded = sum(answer.status_code == 200 for answer in answers)
    print(f"\nteam tokens per minute {TPM}: {succeeded} of 40 calls succeeded")
    assert 1 <= succeeded and succeeded * 3 <= TPM
    for answer in answers:
        if answer.status_code != 200:
            assert answer.status_code == 429 and answer.json()["error"]["type"] == "tokens", answer.text
            assert "the team 'busy's" in answer.json()["error"]["message"] and "retry-after" in answer.headers
    assert upstream.model_counts["fake-gpt-1"] - before == succeeded


def test_with_redis_unreachable_the_database_holds_the_budget_across_both_processes(stack, upstream):
    before = upstream.model_counts["fake-gpt-1"]
    stack.proxy.cut()  # the web processes reach Redis through this proxy: now they cannot
    try:
        answers = calls(stack, [raw(stack, "outage")], 50)
        answers += until_refused(stack, [raw(stack, "outage")])
    finally:
        stack.proxy.restore()
    succeeded = sum(answer.status_code == 200 for answer in answers)
    print(f"\nRedis cut, PostgreSQL holds: {succeeded} of {len(answers)} calls succeeded")
    assert 1 <= succeeded <= 5 and answers[-1].status_code == 429
    assert_refused_by(answers, "this API key's lifetime budget")
    assert recorded_spend(stack, "api_key_id", key_id(stack, "outage"), succeeded) == succeeded * CALL_COST <= BUDGET
    assert upstream.model_counts["fake-gpt-1"] - before == succeeded
    holds = stack.db.query("SELECT settled, amount_usd FROM orchestration_budgetreservation WHERE api_key_id = %s",
                           [key_id(stack, "outage")])
    assert holds and all(settled and amount == 0 for settled, amount in holds)  # the database held them, all settled

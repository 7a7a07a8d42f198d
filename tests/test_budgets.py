"""Budgets that hold (embedded mode: SQLite, the database's reservations) on a live /v1 server with the fake upstream.

Every call holds an upper bound of its cost before the upstream sees it and settles to its recorded cost after;
so concurrent calls never spend past a budget. tests/production/test_budgets_production.py runs the same on
PostgreSQL and Redis with two server processes.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from orchestration.access import budgets
from orchestration.engine.registry import Registry, RouteSpec
from orchestration.engine.routing import CLASSIFIER_MAX_TOKENS, classifier_prompt
from orchestration.engine.types import ModelSpec, ProviderSpec
from orchestration.gateway.writer import writer
from orchestration.models import APIKey, BudgetReservation, LLMModel, RouteAlias, Run, Step, Team
from orchestration.registry import bump_version
from orchestration.runner.inprocess import runner
from orchestration.workflows import save_workflow
from tests.conftest import wait_for

# "hello" on fake-gpt ($2 in, $8 out per million): 1 prompt token and "echo: hello" (2 tokens) = $0.000018 a call;
# its bound with max_tokens 4 is ~$0.00007. $0.0001 pays for 5 calls, not 6.
CALL_COST = Decimal("0.000018")
BUDGET = "0.0001"
HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


async def many_calls(server, raw_keys: list[str], count: int, model: str = "fake-gpt", body: dict | None = None):
    async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                 limits=httpx.Limits(max_connections=count)) as client:
        async def one(index: int):
            return await client.post("/v1/chat/completions", json={"model": model, **(body or HELLO)},
                                     headers={"authorization": f"Bearer {raw_keys[index % len(raw_keys)]}"})
        return await asyncio.gather(*(one(index) for index in range(count)))


def concurrently(server, raw_keys: list[str], count: int, **kwargs) -> list[httpx.Response]:
    return asyncio.run(many_calls(server, raw_keys, count, **kwargs))


def until_refused(server, raw_keys: list[str]) -> list[httpx.Response]:
    """Sequential calls after the burst, until the budget refuses one: the budget is really spent, not just held."""
    answers = []
    for index in range(20):
        writer.flush()
        answers.append(concurrently(server, [raw_keys[index % len(raw_keys)]], 1)[0])
        if answers[-1].status_code == 429:
            break
    return answers


def assert_refusals_are_insufficient_quota(answers: list[httpx.Response], names: str) -> None:
    for answer in answers:
        if answer.status_code != 200:
            assert answer.status_code == 429, answer.text
            error = answer.json()["error"]
            assert error["code"] == "insufficient_quota" and names in error["message"], error
            assert "retry-after" not in answer.headers


def spent_by(**filters) -> Decimal:
    writer.flush()
    return sum((run.cost_usd for run in Run.objects.filter(**filters)), Decimal(0))


def test_fifty_concurrent_calls_never_spend_past_the_key_budget(podium_server, upstream_model, fake_upstream):
    key, raw = APIKey.issue("tight", budget_usd=BUDGET)
    answers = concurrently(podium_server, [raw], 50)
    answers += until_refused(podium_server, [raw])
    succeeded = [answer for answer in answers if answer.status_code == 200]
    assert 1 <= len(succeeded) <= 5
    assert_refusals_are_insufficient_quota(answers, "this API key's lifetime budget")
    assert answers[-1].status_code == 429  # the budget ran out: the calls were refused by it, not by luck
    assert spent_by(api_key=key) == len(succeeded) * CALL_COST <= Decimal(BUDGET)
    key.refresh_from_db()
    assert key.spent_usd <= Decimal(BUDGET)
    assert fake_upstream.model_counts["fake-gpt-1"] == len(succeeded)  # refused calls never reached it


def test_a_team_budget_holds_across_the_teams_keys(podium_server, upstream_model, fake_upstream):
    team = Team.objects.create(slug="thrifty", name="Thrifty", budget_usd_per_day=BUDGET)
    _, first = APIKey.issue("one", team=team)
    _, second = APIKey.issue("two", team=team)
    answers = concurrently(podium_server, [first, second], 50)
    answers += until_refused(podium_server, [first, second])
    succeeded = [answer for answer in answers if answer.status_code == 200]
    assert 1 <= len(succeeded) <= 5
    assert_refusals_are_insufficient_quota(answers, "the team 'thrifty's daily budget")
    assert spent_by(team=team) == len(succeeded) * CALL_COST <= Decimal(BUDGET)
    assert fake_upstream.model_counts["fake-gpt-1"] == len(succeeded)


def test_a_40_kb_prompt_on_a_tiny_budget_is_refused_before_the_upstream_sees_it(podium_server, upstream_model,
                                                                                 fake_upstream):
    key, raw = APIKey.issue("tiny", budget_usd="0.0010")
    big = {"messages": [{"role": "user", "content": "lorem ipsum " * 3400}], "max_tokens": 10}  # ~40 KB
    answer = concurrently(podium_server, [raw], 1, body=big)[0]
    assert answer.status_code == 429
    error = answer.json()["error"]
    assert error["code"] == "insufficient_quota" and "this API key's lifetime budget of $0.001" in error["message"]
    assert fake_upstream.model_counts["fake-gpt-1"] == 0
    assert spent_by(api_key=key) == 0 and not BudgetReservation.objects.filter(amount_usd__gt=0).exists()


def test_each_call_settles_to_its_recorded_cost_and_its_tokens(podium_server, upstream_model, fake_upstream):
    key, raw = APIKey.issue("settles", budget_usd_per_month="1", tokens_per_minute=1000)
    assert concurrently(podium_server, [raw], 3)[0].status_code == 200
    writer.flush()
    holds = list(BudgetReservation.objects.filter(api_key=key))
    assert len(holds) == 3 and all(hold.settled and hold.amount_usd == 0 for hold in holds)
    assert sorted(hold.tokens for hold in holds) == [3, 3, 3]  # 1 prompt + 2 answer tokens, the actual ones
    assert spent_by(api_key=key) == 3 * CALL_COST


def test_a_finished_call_holds_its_actual_cost_not_its_bound_until_it_is_committed(podium_server, upstream_model):
    key, raw = APIKey.issue("shrinks", budget_usd="1")
    assert concurrently(podium_server, [raw], 1)[0].status_code == 200
    hold = BudgetReservation.objects.get(api_key=key)  # answered: committed by now, or not yet (0.25 s flushes)
    assert hold.amount_usd == (0 if hold.settled else CALL_COST)
    writer.flush()
    hold.refresh_from_db()
    assert hold.settled and hold.amount_usd == 0


def test_twenty_concurrent_workflow_runs_stop_at_the_budget(podium_server, upstream_model, fake_upstream):
    save_workflow(slug="budgeted", spec={"root": {"type": "call", "model": "fake-gpt", "params": {"max_tokens": 4}}})
    key, raw = APIKey.issue("runs", budget_usd=BUDGET)
    answers = concurrently(podium_server, [raw], 20, model="workflow/budgeted")
    assert runner.wait_idle(20)
    succeeded = [answer for answer in answers if answer.status_code == 200]
    assert 1 <= len(succeeded) <= 5
    for answer in answers:
        if answer.status_code != 200:
            assert answer.json()["error"]["code"] in ("budget_exceeded", "insufficient_quota"), answer.text
    runs = Run.objects.filter(api_key=key)
    stopped = runs.filter(status="budget_exceeded")
    assert runs.filter(status="succeeded").count() == len(succeeded)
    assert stopped.count() + len(succeeded) == runs.count()
    assert all("budget" in run.error for run in stopped)
    key.refresh_from_db()
    assert key.spent_usd == len(succeeded) * CALL_COST <= Decimal(BUDGET)
    assert fake_upstream.model_counts["fake-gpt-1"] == len(succeeded)


def test_a_hold_of_a_process_that_died_is_released_at_its_expiry(podium_server, upstream_model, fake_upstream,
                                                                  monkeypatch):
    monkeypatch.setitem(settings.PODIUM, "BUDGET_RESERVATION_TTL_S", 1.0)  # PODIUM_BUDGET_RESERVATION_TTL_S
    key, raw = APIKey.issue("crashed", budget_usd=BUDGET)
    payer = budgets.Payer.for_key_id(key.id)
    budgets.reserve(payer, float(BUDGET), 0)  # held and never settled: its process is gone
    refused = concurrently(podium_server, [raw], 1)[0]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert fake_upstream.model_counts["fake-gpt-1"] == 0
    answer = wait_for(lambda: (lambda a: a if a.status_code == 200 else None)(concurrently(podium_server, [raw], 1)[0]),
                      timeout=10, interval=0.2)
    assert answer.json()["choices"][0]["message"]["content"] == "echo: hello"


def test_a_key_and_team_without_budgets_hold_nothing(podium_server, upstream_model, fake_upstream):
    team = Team.objects.create(slug="free", name="Free")
    _, raw = APIKey.issue("free", team=team)
    assert {answer.status_code for answer in concurrently(podium_server, [raw], 5)} == {200}
    assert not BudgetReservation.objects.exists()


def test_the_bound_covers_the_prompt_bytes_the_output_limit_and_the_dearest_candidate():
    provider = ProviderSpec(name="p", kind="mock", base_url="")
    cheap = ModelSpec(alias="cheap", upstream_name="c", provider=provider, price_in_per_m=1, price_out_per_m=2,
                      context_window=1000, fallbacks=("dear",))
    dear = ModelSpec(alias="dear", upstream_name="d", provider=provider, price_in_per_m=10, price_out_per_m=40,
                     context_window=500)
    registry = Registry(models={"cheap": cheap, "dear": dear},
                        routes={"auto": RouteSpec(name="auto", strategy="cost", candidates=("cheap",))})
    messages = [{"role": "user", "content": "héllo wörld"}]  # 13 UTF-8 bytes
    prompt = budgets.prompt_token_bound(messages)
    assert prompt >= len("héllo wörld".encode()) + len("user")
    assert [model.alias for model in budgets.candidates(registry, "auto")] == ["cheap", "dear"]
    usd, tokens = budgets.call_bound(budgets.candidates(registry, "cheap"), messages, {"max_tokens": 7})
    assert usd == pytest.approx(dear.cost_usd(prompt, 7)) and tokens == prompt + 7
    usd, _ = budgets.call_bound([dear], messages, {})  # no max_tokens: the whole window may be answer
    assert usd == pytest.approx(dear.cost_usd(prompt, 500))
    usd, _ = budgets.call_bound([dear], messages, {"max_tokens": 7, "n": 3})
    assert usd == pytest.approx(dear.cost_usd(prompt, 21))


def test_a_streamed_call_holds_its_bound_and_settles_to_its_cost(podium_server, upstream_model, fake_upstream):
    key, raw = APIKey.issue("streams", budget_usd=BUDGET)
    with httpx.stream("POST", f"{podium_server.url}/v1/chat/completions", json={"model": "fake-gpt", "stream": True,
                                                                                **HELLO},
                      headers={"authorization": f"Bearer {raw}"}, timeout=30) as answer:
        assert answer.status_code == 200
        assert "data: [DONE]" in answer.read().decode()
    writer.flush()
    hold = BudgetReservation.objects.get(api_key=key)
    assert hold.settled and hold.amount_usd == 0
    run = Run.objects.get(api_key=key)
    assert 0 < run.cost_usd <= Decimal(BUDGET) and hold.tokens == run.tokens_in + run.tokens_out


def test_embeddings_reserve_their_input_before_the_upstream_sees_it(podium_server, upstream_model, fake_upstream):
    LLMModel.objects.create(provider=upstream_model.provider, alias="embed", upstream_name="text-embed-1",
                            price_in_per_m="10.0")
    bump_version()
    _, raw = APIKey.issue("embeds", budget_usd="0.0010")
    headers = {"authorization": f"Bearer {raw}"}
    small = httpx.post(f"{podium_server.url}/v1/embeddings", json={"model": "embed", "input": "hello"},
                       headers=headers, timeout=30)
    assert small.status_code == 200, small.text
    big = httpx.post(f"{podium_server.url}/v1/embeddings", json={"model": "embed", "input": ["lorem ipsum " * 1000] * 10},
                     headers=headers, timeout=30)  # 120 KB at $10 per million tokens: up to $0.0012
    assert big.status_code == 429 and big.json()["error"]["code"] == "insufficient_quota"
    assert [request["body"]["input"] for request in fake_upstream.requests
            if request.get("path") == "/v1/embeddings"] == ["hello"]  # the big one never reached it


def test_a_used_up_budget_refuses_priced_calls_but_not_free_ones(podium_server, upstream_model, fake_upstream):
    LLMModel.objects.create(provider=upstream_model.provider, alias="free-gpt", upstream_name="free-1",
                            price_in_per_m="0", price_out_per_m="0")
    bump_version()
    key, raw = APIKey.issue("used-up", budget_usd=BUDGET)
    APIKey.objects.filter(pk=key.pk).update(spent_usd=BUDGET)
    refused = concurrently(podium_server, [raw], 1)[0]
    assert refused.status_code == 429 and "is used up" not in refused.json()["error"]["message"]
    assert "more than is left of this API key's lifetime budget" in refused.json()["error"]["message"]
    assert concurrently(podium_server, [raw], 1, model="free-gpt")[0].status_code == 200
    assert fake_upstream.model_counts == {"free-1": 1}


def test_a_model_outside_the_team_is_a_404_even_when_its_bound_exceeds_the_budget(podium_server, upstream_model,
                                                                                   fake_upstream):
    team = Team.objects.create(slug="narrow", name="Narrow", budget_usd_per_month="0.0001")
    other = LLMModel.objects.create(provider=upstream_model.provider, alias="elsewhere", upstream_name="x",
                                    price_in_per_m="1000", price_out_per_m="1000")
    team.allowed_models.add(upstream_model)
    bump_version()
    _, raw = APIKey.issue("narrow", team=team)
    answer = concurrently(podium_server, [raw], 1, model=other.alias)[0]
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found"
    assert concurrently(podium_server, [raw], 1)[0].status_code == 200  # its own model: held and served
    assert fake_upstream.model_counts == {"fake-gpt-1": 1}


def test_a_run_a_person_starts_pays_with_its_teams_budget_and_stops_at_it(podium_server, upstream_model,
                                                                         fake_upstream):
    """No key: a session's POST /api/runs/ makes a run of the person's team, and each of its steps reserves against
    the team's budget (Payer.for_team_id) — the runs past it stop with budget_exceeded, their upstream not asked."""
    import secrets

    from django.contrib.auth import get_user_model

    from orchestration.models import TeamMembership
    from tests.livehelpers import session_cookie

    save_workflow(slug="team-budgeted", spec={"root": {"type": "call", "model": "fake-gpt",
                                                       "params": {"max_tokens": 4}}})
    team = Team.objects.create(slug="paying", name="Paying", budget_usd_per_day=BUDGET)
    person = get_user_model().objects.create_user("starter", password="starter-password-1")
    TeamMembership.objects.create(team=team, user=person, role="reviewer")
    csrf = secrets.token_hex(16)
    headers = {"cookie": f"{session_cookie(person)}; {settings.CSRF_COOKIE_NAME}={csrf}", "x-csrftoken": csrf,
               "origin": podium_server.url}

    async def start_all(count: int):
        async with httpx.AsyncClient(base_url=podium_server.url, headers=headers, timeout=30) as client:
            return await asyncio.gather(*(client.post("/api/runs/", json={"workflow": "team-budgeted",
                                                                          "input": "hello"})
                                          for _ in range(count)))
    started = asyncio.run(start_all(10))
    assert {answer.status_code for answer in started} == {202}, [a.text for a in started]
    assert {answer.json()["team"] for answer in started} == {"paying"}
    assert runner.wait_idle(20)
    writer.flush()

    runs = Run.objects.filter(team=team)
    assert runs.count() == 10 and not runs.filter(api_key__isnull=False).exists()
    succeeded, stopped = runs.filter(status="succeeded"), runs.filter(status="budget_exceeded")
    assert 1 <= succeeded.count() <= 5 and stopped.count() == 10 - succeeded.count()
    assert all("paying" in run.error and "budget" in run.error for run in stopped)
    assert spent_by(team=team) == succeeded.count() * CALL_COST <= Decimal(BUDGET)
    assert fake_upstream.model_counts["fake-gpt-1"] == succeeded.count()
    holds = BudgetReservation.objects.filter(team=team)
    assert holds.count() == succeeded.count() and not holds.filter(api_key__isnull=False).exists()
    assert all(hold.settled for hold in holds)

    # Once the team's budget is used up a person's next run is refused up front (429), as a key's would be,
    # rather than accepted and stopped at its first step.
    # (A probe refuses a budget fully used; what is left here may be less than a call but more than nothing, so
    # the budget is lowered to what was spent.)
    Team.objects.filter(pk=team.pk).update(budget_usd_per_day=spent_by(team=team))
    bump_version()
    with httpx.Client(base_url=podium_server.url, headers=headers, timeout=30) as client:
        refused = client.post("/api/runs/", json={"workflow": "team-budgeted", "input": "again"})
    assert refused.status_code == 429, refused.text
    assert "paying" in refused.json()["detail"]
    assert Run.objects.filter(team=team).count() == 10


def test_twenty_concurrent_streamed_workflow_runs_hold_their_final_call_and_stop_at_the_budget(
        podium_server, upstream_model, fake_upstream):
    """A streamed workflow's final call goes through engine/streaming.py, not call_model: it holds its bound too, so
    the runs past the budget stop with budget_exceeded before their upstream is asked."""
    save_workflow(slug="streamed-budgeted", spec={"root": {"type": "call", "model": "fake-gpt",
                                                           "params": {"max_tokens": 4}}})
    key, raw = APIKey.issue("streamed-runs", budget_usd=BUDGET)
    answers = concurrently(podium_server, [raw], 20, model="workflow/streamed-budgeted",
                           body={**HELLO, "stream": True})
    succeeded = [answer for answer in answers if answer.status_code == 200]
    assert succeeded and all(answer.text.rstrip().endswith("data: [DONE]") for answer in succeeded)
    refused = [answer for answer in answers if answer.status_code != 200]
    assert refused  # 20 calls' bounds are far more than the budget: the holds kept most of them out
    for answer in refused:  # before the first delta: a plain error, no stream
        assert answer.json()["error"]["code"] == "budget_exceeded", answer.text
    runs = Run.objects.filter(api_key=key)
    assert runs.count() == 20 and runs.filter(status="succeeded").count() == len(succeeded)
    stopped = runs.filter(status="budget_exceeded")
    assert stopped.count() == len(refused) and all("budget" in run.error for run in stopped)
    key.refresh_from_db()
    assert 0 < key.spent_usd == sum(run.cost_usd for run in runs) <= Decimal(BUDGET)
    assert fake_upstream.model_counts["fake-gpt-1"] == len(succeeded)  # the refused never reached it
    assert all(hold.settled for hold in BudgetReservation.objects.filter(api_key=key))


def classifier_route(upstream_model) -> None:
    """A classifier route whose candidate is free but whose classifier and general model are fake-gpt (paid)."""
    LLMModel.objects.create(provider=upstream_model.provider, alias="free-local", upstream_name="free-1",
                            price_in_per_m="0", price_out_per_m="0")
    RouteAlias.objects.create(name="triage", strategy="classifier", candidates=["free-local"],
                              options={"classifier_model": "fake-gpt", "general": "fake-gpt",
                                       "categories": {"code": "free-local"}})
    bump_version()


def test_a_classifier_route_with_free_candidates_is_refused_by_a_used_up_budget(podium_server, upstream_model,
                                                                               fake_upstream):
    """The route's classifier and general model are paid though its one candidate is free: its bound is not $0."""
    classifier_route(upstream_model)
    key, raw = APIKey.issue("triaged", budget_usd=BUDGET)
    APIKey.objects.filter(pk=key.pk).update(spent_usd=BUDGET)
    refused = concurrently(podium_server, [raw], 1, model="triage")[0]
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and "this API key's lifetime budget" in error["message"]
    assert not fake_upstream.model_counts  # neither the classifier nor the general model was asked


def test_a_classifier_routes_hold_covers_its_classification_call_and_its_answer(podium_server, upstream_model,
                                                                               fake_upstream):
    classifier_route(upstream_model)
    key, raw = APIKey.issue("triage-paid", budget_usd="1")
    answer = concurrently(podium_server, [raw], 1, model="triage")[0]
    assert answer.status_code == 200, answer.text
    # The classification (the fake echoes the prompt's example, {"category": "code", ...}), then the code model.
    assert fake_upstream.model_counts == {"fake-gpt-1": 1, "free-1": 1}
    registry = budgets.get_registry()
    bound_usd = (budgets.call_bound(budgets.candidates(registry, "triage"), HELLO["messages"], {"max_tokens": 4})[0]
                 + budgets.classifier_bound(registry, "triage", HELLO["messages"])[0])
    writer.flush()
    run = Run.objects.get(api_key=key)
    assert 0 < run.cost_usd <= Decimal(repr(bound_usd))
    assert BudgetReservation.objects.get(api_key=key).settled


def test_the_bound_of_a_route_covers_every_model_its_options_name_and_the_classifier_call():
    provider = ProviderSpec(name="p", kind="mock", base_url="")
    spec = (lambda alias, price, **extra: ModelSpec(alias=alias, upstream_name=alias, provider=provider,
                                                    price_in_per_m=price, price_out_per_m=price * 4,
                                                    context_window=1000, **extra))
    models = {"local": spec("local", 0), "general": spec("general", 3), "coder": spec("coder", 5),
              "judge": spec("judge", 1, fallbacks=("judge-backup",)), "judge-backup": spec("judge-backup", 4),
              "unrelated": spec("unrelated", 100)}
    route = RouteSpec(name="triage", strategy="classifier", candidates=("local",),
                      options={"general": "general", "classifier_model": "judge",
                               "categories": {"code": "coder", "chat": "local"}})
    registry = Registry(models=models, routes={"triage": route})
    assert {model.alias for model in budgets.candidates(registry, "triage")} == {
        "local", "general", "coder", "judge", "judge-backup"}
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "fix my python"}]
    usd, tokens = budgets.classifier_bound(registry, "triage", messages)
    asked = [{"role": "user", "content": classifier_prompt("fix my python", ["code", "chat"])}]
    prompt = budgets.prompt_token_bound(asked)
    assert tokens == prompt + CLASSIFIER_MAX_TOKENS
    assert usd == pytest.approx(models["judge-backup"].cost_usd(prompt, CLASSIFIER_MAX_TOKENS))  # the dearer
    routed_usd, _ = budgets.call_bound(budgets.candidates(registry, "triage"), messages, {"max_tokens": 10})
    assert routed_usd == pytest.approx(models["coder"].cost_usd(budgets.prompt_token_bound(messages), 10))
    assert budgets.classifier_bound(registry, "coder", messages) == (0.0, 0)  # a model classifies nothing


def test_a_run_created_yesterday_pays_its_steps_finished_today_into_todays_budget(podium_server, upstream_model,
                                                                                 fake_upstream):
    """A period budget counts the model calls that finished in it, not the runs created in it: a run paused at a
    review gate yesterday and resumed today adds its today's steps to today's spend."""
    save_workflow(slug="daily", spec={"root": {"type": "call", "model": "fake-gpt", "params": {"max_tokens": 4}}})
    team = Team.objects.create(slug="daily", name="Daily", budget_usd_per_day=BUDGET)
    key, raw = APIKey.issue("daily", team=team, budget_usd_per_day=BUDGET)
    assert concurrently(podium_server, [raw], 1, model="workflow/daily")[0].status_code == 200
    run = Run.objects.get(api_key=key)
    yesterday = timezone.now() - timedelta(days=1, minutes=1)  # before today's start, whatever the hour
    Run.objects.filter(pk=run.pk).update(created_at=yesterday)
    step = Step.objects.get(run=run, node_type="call")
    assert step.finished_at.date() == timezone.now().date() and step.cost_usd > 0
    payer = budgets.Payer.for_key_id(key.id)
    daily = {budget.owner: budget for budget in payer.budgets(timezone.now().timestamp())}
    assert budgets.spent_in_database(payer, daily["key"]) == step.cost_usd
    assert budgets.spent_in_database(payer, daily["team"]) == step.cost_usd
    # Its steps of yesterday count in yesterday's period, not today's.
    Step.objects.filter(pk=step.pk).update(finished_at=yesterday)
    assert budgets.spent_in_database(payer, daily["key"]) == 0

    # Through /v1: today's spend, held against the day's budget, keeps out what would cross it.
    Step.objects.filter(pk=step.pk).update(finished_at=timezone.now())
    Team.objects.filter(pk=team.pk).update(budget_usd_per_day=step.cost_usd)  # used up by that run's step alone
    bump_version()
    refused = concurrently(podium_server, [raw], 1)[0]
    assert refused.status_code == 429, refused.text
    assert "the team 'daily's daily budget" in refused.json()["error"]["message"]
    assert fake_upstream.model_counts["fake-gpt-1"] == 1


def test_a_v1_call_counts_once_in_its_days_spend_and_the_lifetime_spend_is_the_keys(podium_server, upstream_model):
    key, raw = APIKey.issue("once", budget_usd="1", budget_usd_per_day="1", budget_usd_per_month="1")
    assert {answer.status_code for answer in concurrently(podium_server, [raw], 3)} == {200}
    writer.flush()
    assert Step.objects.filter(run__api_key=key).count() == 3  # one step per call, written with its run
    payer = budgets.Payer.for_key_id(key.id)
    spent = {budget.scope.split(":")[1][0]: budgets.spent_in_database(payer, budget)
             for budget in payer.budgets(timezone.now().timestamp())}
    assert spent == {"l": 3 * CALL_COST, "d": 3 * CALL_COST, "m": 3 * CALL_COST}
    key.refresh_from_db()
    assert key.spent_usd == spent_by(api_key=key) == 3 * CALL_COST

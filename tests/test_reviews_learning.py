"""Learning from decisions: rolling model statistics, the `learned` bandit strategy, the periodic jobs."""
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from bench.routing_sim import simulate
from orchestration import learning
from orchestration.engine import bandit
from orchestration.engine.route_choice import RouteRequest
from orchestration.engine.routing import STRATEGIES, choose
from orchestration.engine.types import ModelSpec, ProviderSpec
from orchestration.models import ModelStat, ReviewItem, Run, Step
from orchestration.reviews import actions as review_actions
from orchestration.reviews.actions import (Reviewer, approve_review, claim_review, edit_review, expire_due_reviews,
                                           reject_review)
from orchestration.runner import periodic as scheduler
from tests.reviewhelpers import another_reviewer, open_item, paused_run


def call_step(run, alias, *, status="succeeded", latency_ms=100.0, cost="0.001", age=timedelta(minutes=5), key=None):
    finished = timezone.now() - age
    return Step.objects.create(run=run, key=key or f"call-{Step.objects.count()}", node_type="call", model_alias=alias,
                               status=status, latency_ms=latency_ms, cost_usd=Decimal(cost), tokens_in=10,
                               tokens_out=20, started_at=finished - timedelta(milliseconds=latency_ms),
                               finished_at=finished)


def stat(alias, window, category=""):
    return ModelStat.objects.get(model_alias=alias, window=window, category=category)


def test_stats_hold_success_rate_latency_percentiles_and_mean_cost_per_window(db):
    run = paused_run(metadata={"category": "code"})
    for latency in range(1, 21):  # 20 calls in the last hour, 10..200 ms
        call_step(run, "swift-code", latency_ms=latency * 10.0, status="failed" if latency <= 2 else "succeeded")
    call_step(run, "swift-code", latency_ms=5000.0, age=timedelta(hours=3))  # only in the 24 h window
    call_step(run, "swift-code", latency_ms=9000.0, age=timedelta(hours=30))  # in neither
    learning.recompute_model_stats()
    hour, day = stat("swift-code", "1h"), stat("swift-code", "24h")
    assert (hour.calls, day.calls) == (20, 21)
    assert hour.success_rate == pytest.approx(0.9)
    assert (hour.latency_p50_ms, hour.latency_p95_ms) == (100.0, 190.0)
    assert day.latency_p95_ms == 200.0 and day.mean_cost_usd == pytest.approx(0.001)
    assert hour.tokens == 20 * 30
    assert stat("swift-code", "1h", "code").calls == 20  # the run's category


def test_approval_rate_per_category_counts_what_reviewers_approved_as_it_is(db, reviewer):
    me = Reviewer(user=reviewer)
    approve_review(item_id=open_item(step_key="a").id, reviewer=me, candidate=1)  # atlas approved
    edit_review(item_id=open_item(step_key="b").id, reviewer=me, output="x", candidate=1)
    reject_review(item_id=open_item(step_key="c", request={"category": "code"}).id, reviewer=me)
    expired = open_item(step_key="d", due_in_s=1)
    expire_due_reviews(now=timezone.now() + timedelta(seconds=5))
    assert ReviewItem.objects.get(pk=expired.pk).status == "expired"
    learning.recompute_model_stats(now=timezone.now() + timedelta(seconds=10))
    atlas_chat = stat("atlas-pro", "24h", "chat")
    assert (atlas_chat.approvals, atlas_chat.reviews) == (1, 2)  # approved once, edited once; expiry not counted
    assert stat("swift-mini", "24h", "chat").approval_rate == 0.0
    assert (stat("atlas-pro", "24h", "code").approvals, stat("atlas-pro", "24h", "code").reviews) == (0, 1)
    assert stat("atlas-pro", "1h").reviews == 3


def test_routing_stats_prefer_the_last_hour_when_it_has_enough_calls(db, reviewer):
    run = paused_run()
    for _ in range(learning.MIN_RECENT_CALLS):
        call_step(run, "atlas-pro", latency_ms=50.0)
    for _ in range(learning.MIN_RECENT_CALLS):
        call_step(run, "atlas-pro", latency_ms=900.0, age=timedelta(hours=5))
    call_step(run, "swift-mini", latency_ms=300.0, age=timedelta(hours=5))
    approve_review(item_id=open_item().id, reviewer=Reviewer(user=reviewer), candidate=1)
    learning.recompute_model_stats()
    stats = learning.routing_stats()
    assert stats["atlas-pro"]["latency_p50_ms"] == 50.0  # the recent hour, not the day
    assert stats["swift-mini"]["latency_p50_ms"] == 300.0  # too few recent calls: the day
    assert stats["atlas-pro"]["categories"]["chat"] == {"approvals": 1, "reviews": 1, "approval_rate": 1.0}


def test_recompute_replaces_rows_that_aged_out(db):
    run = paused_run()
    call_step(run, "swift-mini")
    learning.recompute_model_stats()
    assert ModelStat.objects.filter(model_alias="swift-mini").exists()
    learning.recompute_model_stats(now=timezone.now() + timedelta(days=2))
    assert not ModelStat.objects.exists()


# --- the bandit ------------------------------------------------------------------------------------------------

MOCK = ProviderSpec(name="m", kind="mock", base_url="")
CHEAP = ModelSpec("cheap", "cheap", MOCK, "fast", 0.1, 0.4, 0.6)
PRICEY = ModelSpec("pricey", "pricey", MOCK, "large", 5.0, 20.0, 0.9)


def test_learned_is_a_registered_routing_strategy():
    assert STRATEGIES["learned"] is bandit.choose


def test_without_evidence_the_priors_and_the_cost_weight_decide():
    picks = {bandit.choose([CHEAP, PRICEY], RouteRequest(text="", options={"seed": seed})).model for seed in range(50)}
    assert picks == {"cheap", "pricey"}  # both plausible: it explores


def test_evidence_that_the_cheap_model_is_as_good_moves_traffic_to_it():
    stats = {"cheap": {"approvals": 190, "reviews": 200}, "pricey": {"approvals": 93, "reviews": 100}}
    picks = [bandit.choose([CHEAP, PRICEY], RouteRequest(text="", options={"seed": s}, stats=stats)).model
             for s in range(100)]
    assert picks.count("cheap") == 100  # pricey is eliminated: its optimistic score is below cheap's pessimistic one


def test_evidence_that_the_cheap_model_fails_a_category_sends_that_category_to_the_better_one():
    stats = {"cheap": {"approvals": 380, "reviews": 800,
                       "categories": {"code": {"approvals": 40, "reviews": 400},
                                      "chat": {"approvals": 340, "reviews": 400}}},
             "pricey": {"approvals": 720, "reviews": 800,
                        "categories": {"code": {"approvals": 360, "reviews": 400},
                                       "chat": {"approvals": 360, "reviews": 400}}}}
    rules = {"code": ["python", "function"], "chat": ["hello"]}

    def pick(text, seed):
        request = RouteRequest(text=text, options={"rules": rules, "seed": seed}, stats=stats)
        return bandit.choose([CHEAP, PRICEY], request)

    assert {pick("write a python function", s).model for s in range(30)} == {"pricey"}
    assert {pick("hello there", s).model for s in range(30)} == {"cheap"}
    assert pick("write a python function", 1).category == "code"


def test_a_clearly_worse_arm_is_never_drawn():
    arms = [bandit.arm("good", 1.0, 0.5, approvals=90, reviews=100),
            bandit.arm("bad", 1.0, 0.5, approvals=20, reviews=100)]
    rng = random.Random(3)
    assert {bandit.choose_arm(arms, rng=rng)[0] for _ in range(500)} == {"good"}


def test_the_route_chooser_runs_the_learned_strategy():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    # Its own thread: a browser test's Playwright may hold an event loop on this one.
    with ThreadPoolExecutor(1) as pool:
        choice = pool.submit(asyncio.run, choose("learned", [CHEAP, PRICEY],
                                                 RouteRequest(text="", options={"seed": 1}))).result()
    assert choice.model in {"cheap", "pricey"} and "Thompson" in choice.reason


def test_the_seeded_simulation_meets_the_quality_and_cost_targets():
    result = simulate(seed=7, requests=3000)
    assert result.final["quality_ratio"] >= 0.90, result.final
    assert result.final["cost_ratio"] <= 0.50, result.final
    assert result.curve[0]["quality_ratio"] < result.final["quality_ratio"]  # it learned something
    assert result.static["cost"]["quality_ratio"] < 0.90  # and the target is not met by just being cheap


# --- the periodic jobs -----------------------------------------------------------------------------------------

def test_the_periodic_jobs_expire_lapse_and_learn_when_due(db, reviewer):
    expiring = open_item(step_key="a", due_in_s=-1)
    claimed = open_item(step_key="b")
    claim_review(item_id=claimed.id, reviewer=Reviewer(user=another_reviewer("bob")))
    ReviewItem.objects.filter(pk=claimed.pk).update(claimed_at=timezone.now() - timedelta(hours=2))
    call_step(paused_run(), "swift-mini")
    last_run: dict = {}
    with override_settings(PODIUM_REVIEW_CLAIM_TTL_S=60, PODIUM_SCHEDULER_INTERVAL_S=10,
                           PODIUM_LEARNING_INTERVAL_S=60):
        assert scheduler.run_due_jobs(last_run, now=1000.0) == ["expire_due_reviews", "lapse_stale_claims",
                                                                  "recompute_model_stats", "recalibrate",
                                                                  "recover_stalled_runs"]
        assert scheduler.run_due_jobs(last_run, now=1005.0) == []
        assert scheduler.run_due_jobs(last_run, now=1011.0) == ["expire_due_reviews", "lapse_stale_claims",
                                                                  "recover_stalled_runs"]
    assert ReviewItem.objects.get(pk=expiring.pk).status == "expired"
    assert ReviewItem.objects.get(pk=claimed.pk).status == "pending"
    assert ModelStat.objects.filter(model_alias="swift-mini").exists()


def test_a_failing_job_does_not_stop_the_others(db, monkeypatch):
    def broken(now=None):
        raise RuntimeError("database blinked")

    monkeypatch.setattr(review_actions, "expire_due_reviews", broken)
    assert scheduler.run_due_jobs({}, now=0.0) == ["lapse_stale_claims", "recompute_model_stats", "recalibrate",
                                                   "recover_stalled_runs"]


def test_the_in_process_timer_stays_off_under_celery(db):
    timer = scheduler.Scheduler()
    with override_settings(PODIUM_RUNNER="celery"):
        assert timer.start() is False
    with override_settings(PODIUM_RUNNER="inprocess", PODIUM_SCHEDULER_INTERVAL_S=10):
        assert timer.start() is True and timer.running
        assert timer.start() is False  # one per process
        timer.stop()
    assert not timer.running


# --- end to end: decisions -> statistics -> a learned route on /v1 ------------------------------------------

def test_a_learned_route_sends_traffic_to_the_model_reviewers_approve(podium_server, demo_registry, reviewer, api_key):
    import httpx

    from orchestration.models import RouteAlias
    from orchestration.gateway.writer import writer
    from orchestration.registry import bump_version

    RouteAlias.objects.create(name="smart", strategy="learned", candidates=["titan-ultra", "swift-mini"],
                              options={"category": "chat"})
    bump_version()
    me = Reviewer(user=reviewer)
    for index in range(40):  # reviewers approved swift-mini's chat answers every time, titan-ultra's 38 times in 40
        for model in ("swift-mini", "titan-ultra"):
            item = open_item(step_key=f"{model}-{index}",
                             candidates=[{"model": model, "output": "ok", "confidence": 0.5}])
            if model == "titan-ultra" and index < 2:
                reject_review(item_id=item.id, reviewer=me)
            else:
                approve_review(item_id=item.id, reviewer=me)
    learning.recompute_model_stats()
    assert stat("swift-mini", "24h", "chat").approval_rate == 1.0

    chosen = []
    for _ in range(5):
        response = httpx.post(f"{podium_server.url}/v1/chat/completions",
                              headers={"authorization": f"Bearer {api_key}"}, timeout=10,
                              json={"model": "smart", "messages": [{"role": "user", "content": "hello"}]})
        assert response.status_code == 200, response.text
        chosen.append(response.json()["choices"][0]["message"]["content"].split("]")[0].lstrip("["))
    writer.flush()
    # titan-ultra is eliminated: as approved, at 25 times the price (cost weight 0.15)
    assert chosen == ["swift-mini"] * 5


def test_a_judge_s_score_counts_as_fractional_approvals_for_the_candidate_it_picked(db):
    run = Run.objects.create(kind="workflow", target="workflow/fact-check", status="succeeded",
                             created_at=timezone.now(), metadata={"category": "science"})
    finished = timezone.now() - timedelta(minutes=1)
    for key, attributes in (
            ("fact", {"judge": "titan-ultra", "best": 2, "judge_score": 0.8, "judged_model": "atlas-pro",
                      "judge_wrote_answer": False}),
            ("fact2", {"judge": "titan-ultra", "best": 1, "judge_score": 0.3, "judged_model": "atlas-pro",
                       "judge_wrote_answer": False}),
            # The judge wrote its own answer: its score is not the candidate's.
            ("fact3", {"judge": "titan-ultra", "best": 1, "judge_score": 0.9, "judged_model": "swift-mini",
                       "judge_wrote_answer": True})):
        Step.objects.create(run=run, key=key, node_type="parallel", status="succeeded", attributes=attributes,
                            started_at=finished, finished_at=finished)
    learning.recompute_model_stats()
    for category in ("", "science"):
        assert stat("atlas-pro", "24h", category).approvals == pytest.approx(1.1)
        assert stat("atlas-pro", "24h", category).reviews == 2
    assert not ModelStat.objects.filter(model_alias="swift-mini").exists()
    learning._routing_cache["checked_at"] = 0.0
    assert learning.routing_stats()["atlas-pro"]["categories"]["science"]["approval_rate"] == pytest.approx(0.55)

"""Routing strategies, in route nodes and behind route aliases on /v1 (documented in orchestration/engine/routing.py)."""
from __future__ import annotations

import httpx
import openai
import pytest

from orchestration.engine.registry import RouteSpec
from orchestration.gateway.writer import writer
from orchestration.models import LLMModel, RouteAlias, Run, Step
from orchestration.registry import bump_version
from tests.test_engine_nodes import CHEAP, MID, TOP, model, provider, registry, run


def strategy_registry():
    return registry(model("cheap", CHEAP, tier="fast", quality=0.5, price=0.1),
                    model("mid", MID, tier="medium", quality=0.8, price=1.0),
                    model("best", TOP, tier="large", quality=0.97, price=10.0),
                    model("coder", CHEAP, tier="fast", quality=0.6, price=0.2),
                    model("classifier", provider("cls", reply_rules=[
                        {"contains": "Classify the request", "reply": '{"category": "code", "confidence": 0.9}'}])),
                    routes={"auto": RouteSpec(name="auto", strategy="quality", candidates=("cheap", "mid"))})


def route(strategy, candidates=("cheap", "mid", "best"), **options):
    node = {"type": "route", "id": "r", "strategy": strategy, "options": options, "prompt": "{{input}}"}
    return {"root": {**node, "candidates": list(candidates)} if candidates else node}


@pytest.mark.parametrize("strategy, options, stats, chosen", [
    ("cost", {}, {}, "cheap"),
    ("quality", {}, {}, "best"),
    ("latency", {}, {}, "cheap"),  # fast tier prior
    ("latency", {}, {"cheap": {"latency_p50_ms": 5000}, "mid": {"latency_p50_ms": 200}}, "mid"),
    ("balanced", {}, {}, "mid"),
    ("balanced", {"weights": {"quality": 1, "success": 0, "cost": 0, "latency": 0}}, {}, "best"),
    ("balanced", {}, {"mid": {"success_rate": 0.1, "latency_p50_ms": 9000}}, "cheap"),
    ("tier", {"tier": "large"}, {}, "best"),
    ("tier", {"tier": "fast"}, {}, "cheap"),
])
def test_route_strategies_pick_as_documented(strategy, options, stats, chosen):
    result, steps = run(route(strategy, **options), strategy_registry(), meta={"model_stats": stats})
    assert result.model == chosen
    call = steps["r/call"]
    assert call["attributes"]["strategy"] == strategy and call["attributes"]["chosen"] == chosen
    assert call["attributes"]["fallback_order"] == [a for a in ("cheap", "mid", "best") if a != chosen]


def test_the_balanced_score_is_the_documented_formula():
    from orchestration.engine.route_choice import RouteRequest
    from orchestration.engine.routing import balanced_scores

    reg = strategy_registry()
    scores = balanced_scores([reg.models["cheap"], reg.models["best"]], RouteRequest(text=""))
    c = (0.1 + 0.4) / 2, (10 + 40) / 2
    assert scores["cheap"] == pytest.approx(0.4 * 0.5 + 0.2 * 0.99 + 0.25 * (1 - c[0] / c[1]) + 0.15 * (1 - 400 / 2500))
    assert scores["best"] == pytest.approx(0.4 * 0.97 + 0.2 * 0.99 + 0.25 * 0 + 0.15 * 0)


CLASSIFIER_OPTIONS = {"categories": {"code": "coder", "legal": "best"}, "general": "mid", "threshold": 0.6,
                      "rules": {"code": ["python", "traceback"], "legal": ["contract"]}}


@pytest.mark.parametrize("text, chosen, category", [
    ("my python traceback", "coder", "code"),
    ("a contract question", "best", "legal"),
    ("python contract", "mid", "code"),  # 1 hit each: confidence 0.5 < 0.6 -> general model
    ("the weather", "mid", None),
])
def test_the_classifier_sends_a_request_to_its_specialist_only_when_confident(text, chosen, category):
    result, steps = run(route("classifier", (), **CLASSIFIER_OPTIONS), strategy_registry(), input=text)
    assert result.model == chosen
    assert steps["r/call"]["attributes"].get("category") == category


def test_the_classifier_can_ask_a_model():
    options = {**CLASSIFIER_OPTIONS, "rules": {}, "classifier_model": "classifier"}
    result, steps = run(route("classifier", (), **options), strategy_registry(), input="anything")
    assert result.model == "coder" and steps["r/call/classify"]["model"] == "classifier"
    assert steps["r/call"]["attributes"]["classifier_confidence"] == 0.9


def test_a_route_node_can_name_a_route_alias_and_a_call_can_too():
    result, steps = run({"root": {"type": "sequence", "steps": [
        {"type": "route", "id": "r", "route": "auto"}, {"type": "call", "id": "c", "model": "auto"}]}},
        strategy_registry())
    assert steps["r/call"]["model"] == "mid" and steps["c"]["model"] == "mid"
    assert steps["c"]["attributes"]["route"] == "auto" and steps["c"]["attributes"]["fallback_order"] == ["cheap"]


def v1(server, key, model_name: str, text: str = "hello") -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", timeout=15, headers={"authorization": f"Bearer {key}"},
                      json={"model": model_name, "messages": [{"role": "user", "content": text}]})


def recorded(response: httpx.Response) -> tuple[Run, list[Step]]:
    writer.flush()
    run = Run.objects.get(pk=response.headers["x-podium-run-id"])
    return run, list(run.steps.order_by("started_at"))


@pytest.mark.parametrize("strategy, options, chosen", [
    ("cost", {}, "swift-mini"),
    ("quality", {}, "titan-ultra"),
    ("latency", {}, "swift-mini"),
    ("balanced", {}, "swift-mini"),  # 0.815 against atlas-pro's 0.808: cheap and fast outweigh quality
    ("balanced", {"weights": {"quality": 0.7, "success": 0.1, "cost": 0.1, "latency": 0.1}}, "atlas-pro"),
    ("tier", {"tier": "medium"}, "atlas-pro"),
    ("classifier", {"categories": {"code": "swift-code"}, "rules": {"code": ["python"]}, "general": "atlas-pro"},
     "swift-code"),
])
def test_a_route_alias_on_v1_resolves_to_a_model_by_its_strategy(podium_server, api_key, demo_registry, strategy,
                                                                  options, chosen):
    RouteAlias.objects.create(name="auto", strategy=strategy, options=options,
                              candidates=["swift-mini", "atlas-pro", "titan-ultra"])
    response = v1(podium_server, api_key, "auto", "fix my python script")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"[{chosen}] fix my python script"
    run, steps = recorded(response)
    assert run.target == "auto" and steps[-1].model_alias == chosen
    attributes = steps[-1].attributes
    assert (attributes["route"], attributes["strategy"], attributes["chosen"]) == ("auto", strategy, chosen)
    assert attributes["fallback_order"] == [a for a in ("swift-mini", "atlas-pro", "titan-ultra") if a != chosen]


def test_a_route_alias_falls_back_through_its_candidates(podium_server, api_key, upstream_model, fake_upstream):
    LLMModel.objects.create(provider=upstream_model.provider, alias="fake-broken", upstream_name="fail-500",
                            quality_prior=0.9)
    RouteAlias.objects.create(name="smart", strategy="quality", candidates=["fake-broken", "fake-gpt"])
    bump_version()
    client = openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0)
    for _ in range(5):
        completion = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content == "echo: hi"
    writer.flush()
    answered = Step.objects.filter(status="succeeded").values_list("model_alias", "attributes")
    assert {alias for alias, _ in answered} == {"fake-gpt"}
    assert all(attributes["route"] == "smart" for _, attributes in answered)


def test_a_route_with_no_enabled_candidate_is_a_503(podium_server, api_key, demo_registry):
    RouteAlias.objects.create(name="empty", strategy="cost", candidates=["gone"])
    response = v1(podium_server, api_key, "empty")
    assert response.status_code == 503 and response.json()["error"]["code"] == "route_unavailable"

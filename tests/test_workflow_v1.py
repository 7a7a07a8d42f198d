"""`model: "workflow/<slug>"` on /v1: every node type and combine mode end to end through a live server."""
from __future__ import annotations

import httpx
import openai
import pytest

from orchestration.demo import DEMO_REPLY_RULES, seed_demo_workflows
from orchestration.models import Provider, ReviewItem, Run, Step
from orchestration.registry import bump_version
from orchestration.runner.inprocess import runner
from orchestration.workflows import save_workflow


@pytest.fixture(autouse=True)
def runs_finish_before_teardown():
    yield
    assert runner.wait_idle(20)


@pytest.fixture
def sdk(podium_server, api_key, demo_registry):
    Provider.objects.filter(kind="mock").update(mock_options={"seed": 1, "latency_ms": 5, "failure_rate": 0,
                                                               "reply_rules": DEMO_REPLY_RULES})
    bump_version()
    seed_demo_workflows()
    return openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0)


def ask(sdk, slug: str, text: str = "hello"):
    return sdk.chat.completions.create(model=f"workflow/{slug}", messages=[{"role": "user", "content": text}])


PRIORS = {"swift-mini": 0.62, "atlas-pro": 0.80, "titan-ultra": 0.93}
NODE_SPECS = [
    # (name, root node, expected output (prefix), expected confidence or None when it is drawn)
    ("call", {"type": "call", "model": "swift-mini", "prompt": "Q: {{input}}"}, "[swift-mini] Q: hello", 0.62),
    ("route", {"type": "route", "strategy": "cost", "candidates": ["atlas-pro", "swift-mini"]},
     "[swift-mini] hello", 0.62),
    ("cascade", {"type": "cascade", "tiers": ["swift-mini", "titan-ultra"], "threshold": 0.9},
     "[titan-ultra] hello", 0.93),
    ("sequence", {"type": "sequence", "steps": [{"type": "call", "model": "swift-mini"},
                                                 {"type": "call", "model": "atlas-pro"}]},
     "[atlas-pro] [swift-mini] hello", 0.80),
    ("majority", {"type": "parallel", "branches": ["swift-mini", "swift-mini", "atlas-pro"],
                  "combine": {"strategy": "majority"}}, "[swift-mini] hello", 2 / 3),
    ("weighted", {"type": "parallel", "branches": ["swift-mini", "swift-mini", "atlas-pro"],
                  "combine": {"strategy": "weighted"}}, "[swift-mini] hello",
     2 * 0.62 * 0.62 / (2 * 0.62 * 0.62 + 0.8 * 0.8)),
    ("judge", {"type": "parallel", "branches": ["swift-mini", "atlas-pro", "titan-ultra"],
               "combine": {"strategy": "judge", "model": "titan-ultra"}}, "[", None),
    ("merge", {"type": "parallel", "branches": ["swift-mini", "atlas-pro"],
               "combine": {"strategy": "merge", "model": "atlas-pro"}}, "[atlas-pro] Merge the candidate answers",
     (0.62 + 0.80) / 2),
    ("refine", {"type": "refine", "model": "atlas-pro", "critic": "titan-ultra", "threshold": 0.8}, "[atlas-pro] ",
     None),
    ("supervisor", {"type": "supervisor", "planner": "atlas-pro", "workers": "swift-mini"},
     "[atlas-pro] Compose the final answer", 0.80),
    ("gate", {"type": "gate", "threshold": 0.5, "node": {"type": "call", "model": "titan-ultra"}},
     "[titan-ultra] hello", 0.93),
]


@pytest.mark.parametrize("name, root, output, confidence", NODE_SPECS, ids=[n for n, *_ in NODE_SPECS])
def test_each_node_type_and_combine_mode_answers_through_v1(sdk, name, root, output, confidence):
    save_workflow(slug=name, spec={"root": root})
    completion = ask(sdk, name)
    assert completion.choices[0].message.content.startswith(output)
    assert completion.model == f"workflow/{name}"
    run = Run.objects.get(id=completion.id.removeprefix("chatcmpl-"))
    assert (run.kind, run.status, run.target) == ("workflow", "succeeded", f"workflow/{name}")
    assert run.workflow_version.workflow.slug == name
    if confidence is not None:
        assert run.confidence == pytest.approx(confidence)
    root_step = Step.objects.get(run=run, parent__isnull=True)
    assert root_step.node_type == root["type"] and root_step.status == "succeeded"
    assert completion.usage.prompt_tokens == run.tokens_in > 0


def test_a_judge_score_is_the_runs_confidence(sdk):
    completion = ask(sdk, "fact-check", "The moon is made of cheese.")
    run = Run.objects.get(id=completion.id.removeprefix("chatcmpl-"))
    judge = Step.objects.get(run=run, key="fact/judge")
    assert run.confidence in (0.78, 0.86, 0.93) and judge.attributes["role"] == "judge"


def test_a_workflow_over_the_fake_upstream(podium_server, api_key, upstream_model, fake_upstream):
    save_workflow(slug="echo-twice", spec={"root": {"type": "sequence", "steps": [
        {"type": "call", "model": "fake-gpt", "prompt": "first {{input}}"},
        {"type": "call", "model": "fake-gpt", "prompt": "then {{previous}}"}]}})
    client = openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0)
    completion = client.chat.completions.create(model="workflow/echo-twice",
                                                messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: then echo: first hi"
    assert len(fake_upstream.requests) == 2


def test_a_run_awaiting_review_answers_202_with_where_to_review_it(podium_server, api_key, sdk):
    Provider.objects.filter(kind="mock").update(mock_options={"latency_ms": 5, "confidence": 0.3})
    bump_version()
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", timeout=15,
                          headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "workflow/support-reply",
                                "messages": [{"role": "user", "content": "refund please"}]})
    assert response.status_code == 202
    body = response.json()
    item = ReviewItem.objects.get(run_id=body["id"])
    assert body == {"id": body["id"], "object": "podium.run", "status": "awaiting_review",
                    "model": "workflow/support-reply", "run_url": f"/api/runs/{body['id']}/",
                    "review_url": f"/api/reviews/{item.id}/"}
    assert response.headers["x-podium-run-id"] == body["id"]


@pytest.mark.parametrize("body, status, code", [
    ({"model": "workflow/nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ({"model": "workflow/nope", "stream": True, "messages": [{"role": "user", "content": "x"}]}, 404,
     "model_not_found"),  # streamed workflows: tests/test_v1_streaming.py
])
def test_unknown_workflows_are_refused_streamed_or_not(podium_server, api_key, sdk, body, status, code):
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", json=body, timeout=15,
                          headers={"authorization": f"Bearer {api_key}"})
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_a_failed_workflow_is_a_502_with_its_run_id(podium_server, api_key, sdk):
    save_workflow(slug="planless", spec={"root": {"type": "supervisor", "planner": "swift-mini",
                                                  "workers": "swift-mini"}})
    Provider.objects.filter(kind="mock").update(mock_options={"latency_ms": 5, "reply": "I cannot plan that."})
    bump_version()
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", timeout=15,
                          headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "workflow/planless", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 502
    assert "did not return valid JSON subtasks after 2 attempts" in response.json()["error"]["message"]
    run = Run.objects.get(pk=response.headers["x-podium-run-id"])
    assert run.status == "failed" and run.steps.get(node_type="supervisor").status == "failed"
    assert run.steps.filter(key__startswith="supervisor-1/plan#").count() == 2

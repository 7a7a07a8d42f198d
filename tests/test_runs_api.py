"""/api/runs/ and /api/workflows/ over a live server: async runs end to end, reviews, limits, cancel, resume."""
from __future__ import annotations

import httpx
import pytest
from django.test import Client
from rest_framework.test import APIClient

from orchestration.demo import DEMO_REPLY_RULES, seed_demo_workflows
from orchestration.models import APIKey, Provider, ReviewItem, Run, Step, Workflow
from orchestration.models.runs import RunStatus
from orchestration.registry import bump_version
from orchestration.reviews.actions import Reviewer, approve_review
from orchestration.runner.inprocess import runner
from orchestration.runs.actions import create_run
from orchestration.runs.execution import execute_run
from orchestration.workflows import save_workflow
from tests.conftest import wait_for

SETTLED = {"succeeded", "failed", "cancelled", "budget_exceeded", "deadline_exceeded", "awaiting_review"}


@pytest.fixture(autouse=True)
def runs_finish_before_teardown():
    yield
    assert runner.wait_idle(20), "a run was still executing at the end of the test"


@pytest.fixture
def workflows(demo_registry):
    """The demo workflows over fast mocks that can act as planner and judge."""
    Provider.objects.filter(kind="mock").update(mock_options={"seed": 1, "latency_ms": 5, "failure_rate": 0,
                                                               "reply_rules": DEMO_REPLY_RULES})
    bump_version()
    seed_demo_workflows()


def api(server, key, method, path, **kwargs):
    return httpx.request(method, f"{server.url}{path}", headers={"authorization": f"Bearer {key}"}, timeout=15,
                         **kwargs)


def settled(server, key, run_id) -> dict:
    def poll():
        body = api(server, key, "GET", f"/api/runs/{run_id}/").json()
        return body if body["status"] in SETTLED else None
    return wait_for(poll, timeout=20, interval=0.05)


def test_a_run_starts_with_202_and_ends_with_output_confidence_totals_and_a_step_tree(podium_server, api_key,
                                                                                     workflows):
    response = api(podium_server, api_key, "POST", "/api/runs/",
                   json={"workflow": "fact-check", "input": "Water boils at 100 C at sea level.",
                         "metadata": {"ticket": 7}})
    assert response.status_code == 202
    created = response.json()
    assert created["status"] == "queued" and created["url"] == f"/api/runs/{created['id']}/"
    run = settled(podium_server, api_key, created["id"])
    assert run["status"] == "succeeded", run["error"]
    assert run["workflow"] == "fact-check" and run["workflow_version"] == 1
    assert 0 <= run["confidence"] <= 1 and run["output"] and run["metadata"] == {"ticket": 7}
    calls = [s for s in run["steps"] if s["node_type"] == "call"]
    assert len(calls) == 4  # three branches and the judge
    assert {s["status"] for s in run["steps"]} == {"succeeded"} and all(s["tokens_out"] > 0 for s in calls)
    assert run["tokens_in"] == sum(s["tokens_in"] for s in calls)
    assert float(run["cost_usd"]) == pytest.approx(sum(float(s["cost_usd"]) for s in calls))
    (root,) = run["step_tree"]
    assert (root["key"], root["node_type"]) == ("fact", "parallel")
    assert sorted(child["key"] for child in root["children"]) == ["fact-0", "fact-1", "fact-2", "fact/judge"]
    parallel = next(s for s in run["steps"] if s["key"] == "fact")
    assert all(s["parent"] == parallel["id"] for s in calls)
    key = APIKey.objects.get()
    assert float(key.spent_usd) == pytest.approx(float(run["cost_usd"]), abs=1e-8)


def test_a_supervisor_workflow_runs_through_the_api(podium_server, api_key, workflows):
    created = api(podium_server, api_key, "POST", "/api/runs/", json={"workflow": "report", "input": "tides"}).json()
    run = settled(podium_server, api_key, created["id"])
    assert run["status"] == "succeeded", run["error"]
    keys = {s["key"] for s in run["steps"]}
    assert keys == {"report", "report/plan#1", "report/synthesize", *(f"report/worker@{i}" for i in range(4))}


def test_starting_a_run_needs_the_runs_scope_or_a_staff_session(podium_server, workflows, staff_user, outsider):
    _, chat_only = APIKey.issue("chat-only", scopes=["chat"])
    body = {"workflow": "fact-check", "input": "x"}
    assert api(podium_server, chat_only, "POST", "/api/runs/", json=body).status_code == 403
    _, reader = APIKey.issue("reader", scopes=["runs:read"])
    assert api(podium_server, reader, "POST", "/api/runs/", json=body).status_code == 403
    assert api(podium_server, reader, "GET", "/api/runs/").status_code == 200
    for user, expected in ((outsider, 403), (staff_user, 202)):
        client = APIClient()
        client.force_authenticate(user)
        assert client.post("/api/runs/", body, format="json").status_code == expected
    run = Run.objects.get()
    assert run.api_key_id is None and run.target == "workflow/fact-check"


def test_a_key_sees_only_the_runs_it_started(podium_server, api_key, workflows):
    created = api(podium_server, api_key, "POST", "/api/runs/", json={"workflow": "fact-check", "input": "x"}).json()
    settled(podium_server, api_key, created["id"])
    _, other = APIKey.issue("other")
    assert api(podium_server, other, "GET", f"/api/runs/{created['id']}/").status_code == 404
    assert api(podium_server, other, "GET", "/api/runs/").json()["results"] == []


@pytest.mark.parametrize("body, field", [
    ({"workflow": "no-such-flow", "input": "x"}, "workflow"),
    ({"input": "x"}, "workflow"),
    ({"workflow": "fact-check"}, "input"),
    ({"workflow": "fact-check", "input": "x", "deadline_s": -1}, "deadline_s"),
])
def test_a_bad_run_request_is_a_400_naming_the_field(podium_server, api_key, workflows, body, field):
    response = api(podium_server, api_key, "POST", "/api/runs/", json=body)
    assert response.status_code == 400 and field in response.json()
    assert not Run.objects.exists()


def test_a_gate_pauses_the_run_and_an_approval_resumes_it(podium_server, api_key, workflows, reviewer):
    # Low-confidence mocks: the cascade accepts its last tier, the gate (0.8) sends it to a person.
    Provider.objects.filter(kind="mock").update(mock_options={"latency_ms": 5, "confidence": 0.5})
    bump_version()
    created = api(podium_server, api_key, "POST", "/api/runs/",
                  json={"workflow": "support-reply", "input": "Where is my parcel?"}).json()
    run = settled(podium_server, api_key, created["id"])
    assert run["status"] == "awaiting_review"
    item = ReviewItem.objects.get(run_id=created["id"])
    assert (item.step_key, item.node_id, item.reason) == ("review", "review", "low_confidence")
    assert item.candidates[0]["model"] == "titan-ultra" and item.step is not None
    assert item.request["prompt"] == "Customer message:\nWhere is my parcel?"

    approve_review(item_id=item.id, reviewer=Reviewer(user=reviewer), candidate=0)
    run = settled(podium_server, api_key, created["id"])
    assert run["status"] == "succeeded", run["error"]
    assert run["confidence"] == 1.0 and run["output"] == item.candidates[0]["output"]
    gate = next(s for s in run["steps"] if s["key"] == "review")
    assert gate["status"] == "succeeded" and gate["attributes"]["decision"] == "approve"
    # the cascade's calls ran once: resuming reused them
    assert sorted(s["key"] for s in run["steps"] if s["node_type"] == "call") == [
        "answer/tier@0", "answer/tier@1", "answer/tier@2"]


def test_a_run_over_budget_stops_with_its_finished_steps_kept(podium_server, api_key, workflows):
    save_workflow(slug="two-steps", spec={"root": {"type": "sequence", "steps": [
        {"type": "call", "id": "first", "model": "swift-mini"}, {"type": "call", "id": "second", "model": "titan-ultra"}]}})
    created = api(podium_server, api_key, "POST", "/api/runs/",
                  json={"workflow": "two-steps", "input": "hello " * 50, "budget_usd": "0.0002"}).json()
    run = settled(podium_server, api_key, created["id"])
    assert run["status"] == "budget_exceeded" and "budget" in run["error"]
    steps = {s["key"]: s for s in run["steps"]}
    assert steps["first"]["status"] == "succeeded" and "second" not in steps
    assert float(run["cost_usd"]) == pytest.approx(float(steps["first"]["cost_usd"]))


def test_a_run_past_its_deadline_stops_with_its_finished_steps_kept(podium_server, api_key, workflows):
    Provider.objects.filter(name="mock-large").update(mock_options={"latency_ms": 5000})
    bump_version()
    save_workflow(slug="slow-second", spec={"root": {"type": "sequence", "steps": [
        {"type": "call", "id": "first", "model": "swift-mini"}, {"type": "call", "id": "second", "model": "titan-ultra"}]}})
    created = api(podium_server, api_key, "POST", "/api/runs/",
                  json={"workflow": "slow-second", "input": "hi", "deadline_s": 0.5}).json()
    run = settled(podium_server, api_key, created["id"])
    assert run["status"] == "deadline_exceeded"
    steps = {s["key"]: s for s in run["steps"]}
    assert steps["first"]["status"] == "succeeded" and steps["second"]["status"] in ("cancelled", "failed")


def test_a_running_run_can_be_cancelled_once(podium_server, api_key, workflows):
    Provider.objects.filter(kind="mock").update(mock_options={"latency_ms": 5000})
    bump_version()
    created = api(podium_server, api_key, "POST", "/api/runs/", json={"workflow": "fact-check", "input": "x"}).json()
    wait_for(lambda: Step.objects.filter(run_id=created["id"], node_type="call").count() == 3, timeout=10)
    response = api(podium_server, api_key, "POST", f"/api/runs/{created['id']}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert runner.wait_idle(10)
    assert set(Step.objects.filter(run_id=created["id"]).values_list("status", flat=True)) == {"cancelled"}
    assert api(podium_server, api_key, "POST", f"/api/runs/{created['id']}/cancel/").status_code == 409


SEQUENCE_ON_UPSTREAM = {"root": {"type": "sequence", "id": "seq", "steps": [
    {"type": "call", "id": "a", "model": "fake-gpt", "prompt": "one {{input}}"},
    {"type": "call", "id": "b", "model": "fake-gpt", "prompt": "two {{previous}}"},
    {"type": "call", "id": "c", "model": "fake-gpt", "prompt": "three {{previous}}"},
]}}


def test_re_executing_an_interrupted_run_calls_no_model_twice(transactional_db, upstream_model, fake_upstream):
    save_workflow(slug="chain", spec=SEQUENCE_ON_UPSTREAM)
    run = create_run(workflow_slug="chain", input="x")
    assert execute_run(run.pk) == "succeeded"
    assert len(fake_upstream.requests) == 3
    expected = Run.objects.get(pk=run.pk).output
    # What a worker that died during call b leaves behind: a finished, b started, nothing after.
    Step.objects.filter(run_id=run.pk, key="c").delete()
    Step.objects.filter(run_id=run.pk, key__in=["b", "seq"]).update(status="running", output="")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, output="", finished_at=None)

    assert execute_run(run.pk) == "succeeded"
    assert [r["body"]["messages"][-1]["content"] for r in fake_upstream.requests[3:]] == [
        "two echo: one x", "three echo: two echo: one x"]
    run.refresh_from_db()
    assert run.output == expected and run.status == "succeeded"
    assert Step.objects.filter(run_id=run.pk).count() == 4  # one row per key, however often it ran
    # and a run that ended is left alone
    assert execute_run(run.pk) == "succeeded" and len(fake_upstream.requests) == 5


def test_workflows_are_listed_with_their_current_spec(podium_server, api_key, workflows):
    body = api(podium_server, api_key, "GET", "/api/workflows/").json()
    slugs = {w["slug"]: w for w in body["results"]}
    assert set(slugs) == {"fact-check", "report", "support-reply"}
    assert slugs["report"]["spec"]["root"]["type"] == "supervisor" and slugs["report"]["version"] == 1
    one = api(podium_server, api_key, "GET", "/api/workflows/report/").json()
    assert one["versions"][0]["number"] == 1
    assert api(podium_server, api_key, "POST", "/api/workflows/", json={"slug": "x", "spec": {}}).status_code == 403


def test_staff_create_and_update_workflows_and_bad_specs_are_refused_with_paths(admin_user, demo_registry):
    client = APIClient()
    client.force_authenticate(admin_user)
    spec = {"root": {"type": "call", "model": "swift-mini"}}
    created = client.post("/api/workflows/", {"slug": "hello", "description": "hi", "spec": spec}, format="json")
    assert created.status_code == 201 and created.json()["version"] == 1
    bad = {"root": {"type": "parallel", "branches": ["swift-mini"], "combine": {"strategy": "best"}}}
    refused = client.patch("/api/workflows/hello/", {"spec": bad}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"spec": ["root.combine.strategy: must be one of majority, weighted, judge, merge"]}
    unknown = client.patch("/api/workflows/hello/", {"spec": {"root": {"type": "call", "model": "gpt-9"}}},
                           format="json")
    assert unknown.json() == {"spec": ["root.model: unknown model or route alias 'gpt-9'"]}
    updated = client.patch("/api/workflows/hello/", {"spec": {"root": {"type": "call", "model": "atlas-pro"}}},
                           format="json")
    assert updated.status_code == 200 and updated.json()["version"] == 2
    workflow = Workflow.objects.get(slug="hello")
    assert [v.spec["root"]["model"] for v in workflow.versions.order_by("number")] == ["swift-mini", "atlas-pro"]
    same = client.patch("/api/workflows/hello/", {"spec": {"root": {"type": "call", "model": "atlas-pro"}}},
                        format="json")
    assert same.json()["version"] == 2  # an unchanged spec adds no version


def test_editing_a_workflow_in_the_admin_adds_a_version_and_shows_errors_with_paths(admin_user, demo_registry):
    import json

    client = Client()
    client.force_login(admin_user)
    save_workflow(slug="hello", spec={"root": {"type": "call", "model": "swift-mini"}})
    workflow = Workflow.objects.get(slug="hello")
    url = f"/admin/orchestration/workflow/{workflow.pk}/change/"
    form = {"description": "", "enabled": "on", "versions-TOTAL_FORMS": "1", "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0", "versions-MAX_NUM_FORMS": "1000",
            "versions-0-id": str(workflow.current_version.pk), "versions-0-workflow": str(workflow.pk)}
    bad = {"root": {"type": "cascade", "tiers": ["swift-mini"], "threshold": 2}}
    page = client.post(url, {**form, "spec": json.dumps(bad)})
    assert page.status_code == 200
    assert "root.threshold: must be a number between 0 and 1" in page.content.decode()
    good = {"root": {"type": "cascade", "tiers": ["swift-mini", "titan-ultra"]}}
    assert client.post(url, {**form, "spec": json.dumps(good)}).status_code == 302
    assert [v.number for v in workflow.versions.all()] == [2, 1]
    assert workflow.current_version.spec == good
    with pytest.raises(ValueError, match="immutable"):
        version = workflow.versions.get(number=1)
        version.spec = good
        version.save()

"""POST /api/runs/ with an Idempotency-Key: retries find the first run; a reused key with another body is a 409.
Also the runs list's `kind` filter. A live server on loopback (the embedded runner, SQLite)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from orchestration.demo import seed_demo_workflows
from orchestration.gateway.writer import writer
from orchestration.models import APIKey, IdempotencyKey, Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
def runner_key(demo_registry) -> str:
    seed_demo_workflows()
    return APIKey.issue("runner", scopes=["runs"])[1]


def submit(server, key, body, idempotency_key=None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return httpx.post(f"{server.url}/api/runs/", json=body, headers=headers, timeout=30)


def test_twenty_concurrent_retries_of_one_submission_make_one_run(podium_server, runner_key):
    body = {"workflow": "fact-check", "input": "Is water wet?"}
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: submit(podium_server, runner_key, body, "order-42"), range(20)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19
    assert Run.objects.filter(target="workflow/fact-check").count() == 1

    conflict = submit(podium_server, runner_key, {**body, "input": "Is fire hot?"}, "order-42")
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    assert Run.objects.count() == 1


def test_keys_belong_to_their_sender_and_expire_after_a_day(podium_server, runner_key):
    body = {"workflow": "fact-check", "input": "x"}
    other = APIKey.issue("other", scopes=["runs"])[1]
    first = submit(podium_server, runner_key, body, "k1").json()["id"]
    assert submit(podium_server, other, body, "k1").json()["id"] != first  # another client's k1
    IdempotencyKey.objects.filter(key="k1").update(created_at=timezone.now() - timedelta(hours=25))
    again = submit(podium_server, runner_key, body, "k1")
    assert again.status_code == 202 and again.json()["id"] != first and "Idempotent-Replayed" not in again.headers
    assert submit(podium_server, runner_key, body).json()["id"] != first  # no key: a new run each time


@pytest.mark.parametrize("bad", ["", "a b", "x" * 256, "é"])
def test_a_malformed_idempotency_key_is_refused(podium_server, runner_key, bad):
    headers = {"authorization": f"Bearer {runner_key}", "Idempotency-Key": bad.encode("utf-8")}
    response = httpx.post(f"{podium_server.url}/api/runs/", json={"workflow": "fact-check", "input": "x"},
                          headers=headers, timeout=30)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()
    assert not Run.objects.exists()


def test_the_runs_list_filters_by_kind(podium_server, runner_key, api_key, staff_user):
    submit(podium_server, runner_key, {"workflow": "fact-check", "input": "x"})
    chat = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                      json={"model": "swift-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert chat.status_code == 200
    writer.flush()
    reader = APIClient()
    reader.force_authenticate(staff_user)
    kinds = {kind: [r["kind"] for r in reader.get(f"/api/runs/?kind={kind}").json()["results"]]
             for kind in ("chat", "workflow")}
    assert kinds == {"chat": ["chat"], "workflow": ["workflow"]}
    assert reader.get("/api/runs/?kind=chat,workflow").json()["count"] == 2
    assert reader.get("/api/runs/?kind=bogus").status_code == 400



def workflow_call(server, key, content, idempotency_key, stream=False) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                      headers={"authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key},
                      json={"model": "workflow/fact-check", "stream": stream,
                            "messages": [{"role": "user", "content": content}]})


def test_v1_workflow_retries_under_one_key_answer_with_the_first_run(podium_server, demo_registry, api_key):
    seed_demo_workflows()
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: workflow_call(podium_server, api_key, "Is water wet?", "v1-once"),
                                range(5)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.headers["x-podium-run-id"] for a in answers}) == 1
    assert len({a.json()["choices"][0]["message"]["content"] for a in answers}) == 1
    assert Run.objects.filter(target="workflow/fact-check").count() == 1
    first, again = (workflow_call(podium_server, api_key, "Is ice cold?", "v1-stream", stream=True) for _ in "12")
    assert first.status_code == again.status_code == 200 and "data: [DONE]" in again.text
    assert first.headers["x-podium-run-id"] == again.headers["x-podium-run-id"]
    assert Run.objects.filter(target="workflow/fact-check").count() == 2
    other = workflow_call(podium_server, api_key, "Is fire hot?", "v1-once")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert workflow_call(podium_server, api_key, "x", "with space").status_code == 400
    assert Run.objects.filter(target="workflow/fact-check").count() == 2

"""A low-confidence run pauses at its gate, and each decision — approve, edit, reject, expiry — resumes it.

Real runner (the in-process one), real database rows; the decision goes through the REST API as a
reviewer would send it. Demo mocks answer "[alias] <prompt>" with their quality prior as confidence
(swift-mini 0.62, atlas-pro 0.80, titan-ultra 0.93).
"""
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from orchestration.models import AuditEvent, ReviewItem, Run, Step
from orchestration.reviews.actions import expire_due_reviews
from orchestration.reviews.selectors import review_summary
from orchestration.runs.actions import start_run
from orchestration.workflows import save_workflow
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def gated_workflow(slug="gated", *, threshold=0.9, on_reject="fail", default_action="reject", due_in_s=None):
    save_workflow(slug=slug, spec={"root": {
        "type": "gate", "id": "check", "threshold": threshold, "on_reject": on_reject,
        "default_action": default_action, "due_in_s": due_in_s,
        "node": {"type": "call", "id": "draft", "model": "swift-mini", "prompt": "{{input}}"}}})


def paused(slug="gated", text="capital of France?") -> ReviewItem:
    run = start_run(workflow_slug=slug, input=text, metadata={"category": "geography"})
    wait_for(lambda: Run.objects.get(pk=run.pk).status == "awaiting_review", timeout=20)
    return ReviewItem.objects.get(run=run, status="pending")


def settled(run_id) -> Run:
    wait_for(lambda: Run.objects.get(pk=run_id).is_final, timeout=20)
    return Run.objects.get(pk=run_id)


def decide(user, item, action, **body):
    client = APIClient()
    client.force_login(user)
    response = client.post(f"/api/reviews/{item.id}/{action}/", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def test_a_low_confidence_run_pauses_with_one_review_item(demo_registry, reviewer):
    gated_workflow()
    item = paused()
    assert item.step_key == "check" and item.node_id == "check" and item.reason == "low_confidence"
    assert item.category == "geography"
    assert [(c["model"], c["output"]) for c in item.candidates] == [("swift-mini", "[swift-mini] capital of France?")]
    assert item.candidates[0]["confidence"] == pytest.approx(0.62)
    assert review_summary(item)["preview"] == "capital of France?"


def test_approve_resumes_the_run_with_the_candidates_output(demo_registry, reviewer):
    gated_workflow()
    item = paused()
    decide(reviewer, item, "approve", comment="looks right")
    run = settled(item.run_id)
    assert run.status == "succeeded" and run.output == "[swift-mini] capital of France?"
    assert run.confidence == 1.0  # a person vouched for it
    assert AuditEvent.objects.filter(action="review.approve", actor="user:rita").count() == 1


def test_edit_releases_the_edited_text_and_records_a_human_step(demo_registry, reviewer):
    gated_workflow()
    item = paused()
    decide(reviewer, item, "edit", output="Paris.", comment="just the answer")
    run = settled(item.run_id)
    assert run.status == "succeeded" and run.output == "Paris."
    human = Step.objects.get(run=run, node_type="human")
    assert human.output == "Paris." and human.attributes["reviewer"] == "user:rita"


def test_reject_fails_the_run_when_the_gate_says_fail(demo_registry, reviewer):
    gated_workflow()
    item = paused()
    decide(reviewer, item, "reject", comment="wrong")
    run = settled(item.run_id)
    assert run.status == "failed" and "rejected by rita" in run.error


def test_reject_escalates_to_the_named_stronger_model_when_the_gate_says_so(demo_registry, reviewer):
    gated_workflow(on_reject={"escalate": "titan-ultra"})
    item = paused()
    decide(reviewer, item, "reject")
    run = settled(item.run_id)  # titan-ultra's 0.93 passes the 0.9 threshold
    assert run.status == "succeeded" and run.output == "[titan-ultra] capital of France?"


def test_an_escalation_still_below_threshold_is_gated_again(demo_registry, reviewer):
    gated_workflow(threshold=0.95, on_reject={"escalate": "titan-ultra"})
    first = paused()
    decide(reviewer, first, "reject")
    wait_for(lambda: ReviewItem.objects.filter(run_id=first.run_id, status="pending").exists(), timeout=20)
    second = ReviewItem.objects.get(run_id=first.run_id, status="pending")
    assert second.step_key == "check#2"
    assert [c["model"] for c in second.candidates] == ["swift-mini", "titan-ultra"]
    decide(reviewer, second, "approve")  # the most confident candidate: titan-ultra's
    run = settled(first.run_id)
    assert run.status == "succeeded" and run.output == "[titan-ultra] capital of France?"


def test_expiry_applies_the_gates_default_action_and_resumes(demo_registry):
    gated_workflow(default_action="approve", due_in_s=60)
    item = paused()
    assert expire_due_reviews(now=timezone.now() + timedelta(seconds=61)) == 1
    run = settled(item.run_id)
    assert run.status == "succeeded" and run.output == "[swift-mini] capital of France?"
    assert AuditEvent.objects.get(action="review.expired").actor == "system"


def test_an_api_key_with_the_decide_scope_resumes_a_run(demo_registry):
    from orchestration.models import APIKey

    gated_workflow()
    item = paused()
    _, raw = APIKey.issue("ci", scopes=["reviews:decide"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.post(f"/api/reviews/{item.id}/approve/").status_code == 200
    assert settled(item.run_id).status == "succeeded"

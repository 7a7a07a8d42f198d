"""The review-queue services: open, claim, approve / edit / reject, lapse, expiry, decisions for the engine."""
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone

from orchestration.access.apikeys import load_key
from orchestration.audit import verify_chain
from orchestration.errors import ReviewConflict, ReviewError, ReviewForbidden
from orchestration.models import APIKey, AuditEvent, ReviewItem, Step
from orchestration.reviews.actions import (Reviewer, approve_review, bulk_approve, claim_review, edit_review,
                                           expire_due_reviews, lapse_stale_claims, reject_review)
from orchestration.reviews.selectors import decider_label, decisions_for_run, review_backlog
from tests.reviewhelpers import CANDIDATES, EventTap, another_reviewer, open_item, paused_run


@pytest.fixture
def tap():
    tap = EventTap()
    yield tap
    tap.close()


def as_user(user):
    return Reviewer(user=user)


def test_the_migration_creates_the_reviewers_group_with_the_decide_permission(db):
    group = Group.objects.get(name="reviewers")
    assert list(group.permissions.values_list("codename", flat=True)) == ["decide_reviewitem"]


def test_opening_a_review_stores_the_gate_and_publishes_review_created(db, tap, django_capture_on_commit_callbacks):
    run = paused_run()
    with django_capture_on_commit_callbacks(execute=True):
        item = open_item(run, reason="disagreement", due_in_s=60)
    assert item.status == "pending" and item.step_key == "gate" and item.category == "chat"
    assert item.candidates[1] == CANDIDATES[1]
    assert timedelta(seconds=55) < item.due_at - timezone.now() <= timedelta(seconds=60)
    [event] = [e for e in tap.drain() if e["type"] == "review.created"]
    assert event["review_id"] == str(item.id) and event["run_id"] == str(run.id)
    assert event["status"] == "pending" and event["reason"] == "disagreement" and event["assignee"] is None
    assert event["best_model"] == "atlas-pro" and event["preview"] == "capital of France?"
    assert isinstance(event["ts"], int)


def test_opening_the_same_gate_twice_returns_the_open_item(db):
    run = paused_run()
    first = open_item(run)
    assert open_item(run).id == first.id
    assert ReviewItem.objects.count() == 1


def test_an_unknown_reason_is_refused(db):
    with pytest.raises(ValueError, match="unknown review reason"):
        open_item(reason="boredom")


def test_approve_releases_the_most_confident_candidate_and_records_who(db, reviewer, tap,
                                                                       django_capture_on_commit_callbacks):
    item = open_item()
    with django_capture_on_commit_callbacks(execute=True):
        decided = approve_review(item_id=item.id, reviewer=as_user(reviewer), comment="fine")
    assert decided.status == "approved" and decided.chosen_index == 1 and decided.decided_by == reviewer
    assert decisions_for_run(item.run_id) == {"gate": {
        "action": "approve", "output": CANDIDATES[1]["output"], "reviewer": "rita", "review_id": str(item.id),
        "model": "atlas-pro", "comment": "fine", "expired": False, "escalate": False}}
    audit = AuditEvent.objects.get(action="review.approve")
    assert audit.actor == "user:rita" and audit.subject == f"review:{item.id}"
    assert audit.data["model"] == "atlas-pro" and audit.data["comment"] == "fine"
    assert verify_chain() is None
    [event] = [e for e in tap.drain() if e["type"] == "review.decided"]
    assert event["status"] == "approved" and event["decided_by"] == "rita" and event["action"] == "approve"


def test_approve_can_choose_another_candidate(db, reviewer):
    item = open_item()
    approve_review(item_id=item.id, reviewer=as_user(reviewer), candidate=0)
    assert decisions_for_run(item.run_id)["gate"]["output"] == CANDIDATES[0]["output"]


def test_approving_a_candidate_that_does_not_exist_is_refused(db, reviewer):
    item = open_item()
    with pytest.raises(ReviewError, match="no candidate 5"):
        approve_review(item_id=item.id, reviewer=as_user(reviewer), candidate=5)
    assert ReviewItem.objects.get(pk=item.pk).status == "pending"


def test_edit_releases_the_reviewers_text_and_records_it_as_a_human_step(db, reviewer):
    item = open_item()
    edit_review(item_id=item.id, reviewer=as_user(reviewer), output="Paris.", candidate=0,
                        comment="shorter")
    decision = decisions_for_run(item.run_id)["gate"]
    assert decision["action"] == "edit" and decision["output"] == "Paris." and decision["model"] == "swift-mini"
    step = Step.objects.get(run_id=item.run_id, node_type="human")
    assert step.output == "Paris." and step.attributes["reviewer"] == "user:rita"
    assert step.attributes["action"] == "edit" and step.attributes["base_model"] == "swift-mini"
    assert AuditEvent.objects.get(action="review.edit").data["output"] == "Paris."


def test_an_edit_without_text_is_refused(db, reviewer):
    item = open_item()
    with pytest.raises(ReviewError, match="needs the text"):
        edit_review(item_id=item.id, reviewer=as_user(reviewer), output="   ")


def test_reject_releases_nothing(db, reviewer):
    item = open_item()
    reject_review(item_id=item.id, reviewer=as_user(reviewer), comment="both wrong")
    decision = decisions_for_run(item.run_id)["gate"]
    assert decision["action"] == "reject" and decision["output"] == "" and decision["comment"] == "both wrong"
    assert AuditEvent.objects.get(action="review.reject").data["comment"] == "both wrong"


def test_a_claimed_item_cannot_be_decided_by_another_reviewer(db, reviewer):
    item = open_item()
    claim_review(item_id=item.id, reviewer=as_user(reviewer))
    bob = another_reviewer("bob")
    with pytest.raises(ReviewConflict) as conflict:
        approve_review(item_id=item.id, reviewer=as_user(bob))
    assert conflict.value.code == "review_conflict" and conflict.value.details["holder"] == "rita"
    assert "Claimed by rita" in conflict.value.message
    with pytest.raises(ReviewConflict, match="Claimed by rita"):
        claim_review(item_id=item.id, reviewer=as_user(bob))
    approve_review(item_id=item.id, reviewer=as_user(reviewer))


def test_a_decided_item_cannot_be_decided_again(db, reviewer):
    item = open_item()
    reject_review(item_id=item.id, reviewer=as_user(reviewer))
    with pytest.raises(ReviewConflict, match="Already rejected by rita"):
        approve_review(item_id=item.id, reviewer=as_user(another_reviewer("bob")))


def test_a_lapsed_claim_goes_back_to_the_queue(db, reviewer, tap, django_capture_on_commit_callbacks):
    item = open_item()
    claim_review(item_id=item.id, reviewer=as_user(reviewer))
    with override_settings(PODIUM_REVIEW_CLAIM_TTL_S=60):
        assert lapse_stale_claims(now=timezone.now() + timedelta(seconds=30)) == 0
        with django_capture_on_commit_callbacks(execute=True):
            assert lapse_stale_claims(now=timezone.now() + timedelta(seconds=61)) == 1
    item.refresh_from_db()
    assert item.status == "pending" and item.assignee is None
    lapsed = [e for e in tap.drain() if e.get("change") == "claim_lapsed"]
    assert lapsed[0]["type"] == "review.updated" and lapsed[0]["previous_assignee"] == "rita"


def test_someone_else_may_take_over_a_claim_past_its_ttl(db, reviewer):
    item = open_item()
    claim_review(item_id=item.id, reviewer=as_user(reviewer))
    ReviewItem.objects.filter(pk=item.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    with override_settings(PODIUM_REVIEW_CLAIM_TTL_S=600):
        decided = approve_review(item_id=item.id, reviewer=as_user(another_reviewer("bob")))
    assert decided.decided_by.username == "bob"


def test_a_user_without_the_permission_may_not_claim_or_decide(db, staff_user):
    item = open_item()
    with pytest.raises(ReviewForbidden):
        claim_review(item_id=item.id, reviewer=as_user(staff_user))
    with pytest.raises(ReviewForbidden):
        approve_review(item_id=item.id, reviewer=as_user(staff_user))


def test_an_api_key_decides_only_with_the_reviews_decide_scope(db):
    item = open_item()
    _, plain = APIKey.issue("plain", scopes=["runs"])
    with pytest.raises(ReviewForbidden, match="reviews:decide"):
        approve_review(item_id=item.id, reviewer=Reviewer(key=load_key(plain)))
    _, decider = APIKey.issue("decider", scopes=["reviews:decide"])
    decided = approve_review(item_id=item.id, reviewer=Reviewer(key=load_key(decider)))
    assert decider_label(decided) == f"key:{decider[:10]}"
    assert AuditEvent.objects.get(action="review.approve").actor == f"key:{decider[:10]}"


@pytest.mark.parametrize("default_action, action, output, escalate", [
    ("approve", "approve", CANDIDATES[1]["output"], False),
    ("reject", "reject", "", False),
    ("escalate", "reject", "", True),
])
def test_expiry_applies_the_default_action(db, reviewer, default_action, action, output, escalate):
    item = open_item(due_in_s=60, default_action=default_action)
    claim_review(item_id=item.id, reviewer=as_user(reviewer))  # a claim does not stop the clock
    assert expire_due_reviews(now=timezone.now() + timedelta(seconds=30)) == 0
    assert expire_due_reviews(now=timezone.now() + timedelta(seconds=61)) == 1
    item.refresh_from_db()
    assert item.status == "expired" and item.assignee is None
    decision = decisions_for_run(item.run_id)["gate"]
    assert (decision["action"], decision["output"], decision["escalate"]) == (action, output, escalate)
    assert decision["expired"] is True and decision["reviewer"] == "system"
    audit = AuditEvent.objects.get(action="review.expired")
    assert audit.actor == "system" and audit.data["default_action"] == default_action


def test_expiry_leaves_decided_items_alone(db, reviewer):
    item = open_item(due_in_s=1)
    approve_review(item_id=item.id, reviewer=as_user(reviewer))
    assert expire_due_reviews(now=timezone.now() + timedelta(hours=1)) == 0
    assert ReviewItem.objects.get(pk=item.pk).status == "approved"


def test_the_latest_decision_for_a_gate_wins(db, reviewer):
    run = paused_run()
    first = open_item(run)
    reject_review(item_id=first.id, reviewer=as_user(reviewer))
    second = open_item(run, candidates=[{"model": "titan-ultra", "output": "Paris", "confidence": 0.7}])
    assert second.id != first.id
    approve_review(item_id=second.id, reviewer=as_user(reviewer))
    assert decisions_for_run(run.id)["gate"]["model"] == "titan-ultra"


def test_bulk_approve_reports_items_someone_else_holds(db, reviewer):
    free, held = open_item(), open_item(step_key="other")
    bob = another_reviewer("bob")
    claim_review(item_id=held.id, reviewer=as_user(bob))
    approved, refused = bulk_approve(item_ids=[free.id, held.id], reviewer=as_user(reviewer))
    assert [item.id for item in approved] == [free.id]
    assert refused == [{"review_id": str(held.id), "code": "review_conflict", "detail": "Claimed by bob.", "holder": "bob",
                        "review_status": "claimed"}]


def test_the_backlog_shows_open_items_and_the_oldest_age_in_one_query(db, reviewer, django_assert_num_queries):
    older = open_item()
    ReviewItem.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    claimed = open_item(step_key="b")
    ReviewItem.objects.filter(pk=claimed.pk).update(created_at=timezone.now() - timedelta(minutes=9))
    claim_review(item_id=claimed.id, reviewer=as_user(reviewer))
    approve_review(item_id=open_item(step_key="c").id, reviewer=as_user(reviewer))
    with django_assert_num_queries(1):
        backlog = review_backlog()
    assert (backlog.pending, backlog.claimed, backlog.open) == (1, 1, 2)
    assert backlog.oldest_open_at == ReviewItem.objects.get(pk=claimed.pk).created_at
    assert backlog.live()["oldest_pending_ts"] == int(ReviewItem.objects.get(pk=older.pk).created_at.timestamp() * 1000)

"""Two reviewers deciding one item at the same moment, each on its own database connection."""
import threading

import pytest
from django.db import connection

from orchestration.errors import ReviewConflict
from orchestration.models import AuditEvent, ReviewItem, Step
from orchestration.reviews.actions import Reviewer, approve_review, claim_review, reject_review
from tests.reviewhelpers import another_reviewer, open_item


def decide_at_once(item_id, deciders) -> list:
    """Run each decider in its own thread (so its own connection), released together by a barrier."""
    barrier = threading.Barrier(len(deciders))
    outcomes = [None] * len(deciders)

    def work(index, decide):
        try:
            barrier.wait(timeout=10)
            outcomes[index] = decide()
        except Exception as exc:  # the assertion below says which one lost and how
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, d)) for i, d in enumerate(deciders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


@pytest.mark.parametrize("second_action", ["approve", "reject"])
def test_two_concurrent_decisions_on_one_item_exactly_one_succeeds(transactional_db, reviewer, second_action):
    item = open_item()
    bob = another_reviewer("bob")
    second = {"approve": approve_review, "reject": reject_review}[second_action]
    outcomes = decide_at_once(item.id, [
        lambda: approve_review(item_id=item.id, reviewer=Reviewer(user=reviewer)),
        lambda: second(item_id=item.id, reviewer=Reviewer(user=bob)),
    ])
    winners = [o for o in outcomes if isinstance(o, ReviewItem)]
    losers = [o for o in outcomes if isinstance(o, ReviewConflict)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    winner = winners[0].decided_by.username
    assert losers[0].details["holder"] == winner
    stored = ReviewItem.objects.get(pk=item.pk)
    assert stored.decided_by.username == winner
    assert AuditEvent.objects.filter(action__in=["review.approve", "review.reject"]).count() == 1
    assert Step.objects.filter(run_id=item.run_id, node_type="human").count() == 1


def test_two_concurrent_claims_exactly_one_holds_the_item(transactional_db, reviewer):
    item = open_item()
    bob = another_reviewer("bob")
    outcomes = decide_at_once(item.id, [
        lambda: claim_review(item_id=item.id, reviewer=Reviewer(user=reviewer)),
        lambda: claim_review(item_id=item.id, reviewer=Reviewer(user=bob)),
    ])
    winners = [o for o in outcomes if isinstance(o, ReviewItem)]
    losers = [o for o in outcomes if isinstance(o, ReviewConflict)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert ReviewItem.objects.get(pk=item.pk).assignee.username == losers[0].details["holder"]

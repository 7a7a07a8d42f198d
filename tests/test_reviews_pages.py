"""The review pages as served: who may open them, and model output only ever as text."""
import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from orchestration.models import Team, TeamMembership
from orchestration.reviews.actions import Reviewer, approve_review, edit_review
from tests import reviewhelpers
from tests.reviewhelpers import open_item

HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ops(db):
    return Team.objects.create(slug="ops", name="Ops")


@pytest.fixture
def reviewer(reviewer, ops):
    """The reviewer persona, a reviewer of the team whose runs these pages show."""
    TeamMembership.objects.create(team=ops, user=reviewer, role=TeamMembership.Role.REVIEWER)
    return reviewer


@pytest.fixture(autouse=True)
def items_of_ops(monkeypatch, ops):
    """The items these tests open belong to runs of `ops` (pages show the reviews of one's teams only)."""
    paused_run = reviewhelpers.paused_run
    monkeypatch.setattr(reviewhelpers, "paused_run", lambda **fields: paused_run(team=ops, **fields))


def test_the_queue_page_is_for_members_and_only_reviewers_may_decide(db, reviewer, ops, outsider):
    assert logged_in(reviewer).get("/reviews/").status_code == 200
    viewer = get_user_model().objects.create_user("vera", password="viewer-password-1")  # not staff
    TeamMembership.objects.create(team=ops, user=viewer, role=TeamMembership.Role.VIEWER)
    page = logged_in(viewer).get("/reviews/")
    assert page.status_code == 200 and b"You can see the queue but not decide" in page.content
    assert logged_in(outsider).get("/reviews/").status_code == 403
    anonymous = Client().get("/reviews/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")


def test_the_item_page_shows_request_and_candidates_side_by_side(db, reviewer):
    item = open_item()
    page = logged_in(reviewer).get(f"/reviews/{item.id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('<article class="candidate') == 2
    assert "swift-mini" in html and "atlas-pro" in html and "confidence 0.62" in html
    assert "capital of France?" in html and 'id="edit-text"' in html and 'id="edit-diff"' in html


def test_model_output_and_requests_are_rendered_as_text(db, reviewer):
    item = open_item(request={"messages": [{"role": "user", "content": HOSTILE}]},
                     candidates=[{"model": "swift-mini", "output": HOSTILE, "confidence": 0.1, "cost_usd": 0}])
    approve_review(item_id=open_item(step_key="other", candidates=[
        {"model": "m", "output": HOSTILE, "confidence": 0.1}]).id, reviewer=Reviewer(user=reviewer))
    for path in (f"/reviews/{item.id}/", "/reviews/"):
        html = logged_in(reviewer).get(path).content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html
    html = logged_in(reviewer).get(f"/reviews/{item.id}/").content.decode()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    # The page data for the script is JSON inside a non-executable script tag, with < escaped.
    data = html.split('id="review-data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in data and json.loads(data)["outputs"] == [HOSTILE]


def test_a_decided_item_shows_who_released_what(db, reviewer):
    item = open_item()
    edit_review(item_id=item.id, reviewer=Reviewer(user=reviewer), output="Paris.", comment="short")
    html = logged_in(reviewer).get(f"/reviews/{item.id}/").content.decode()
    assert 'id="decision" ' in html and 'id="decision" hidden' not in html
    assert "Paris." in html and "rita" in html and 'id="actions" aria-labelledby="actions-heading" hidden' in html


def test_the_item_page_links_the_neighbouring_open_items(db, reviewer):
    first, second, third = open_item(step_key="a"), open_item(step_key="b"), open_item(step_key="c")
    html = logged_in(reviewer).get(f"/reviews/{second.id}/").content.decode()
    assert f'id="previous-item" href="/reviews/{first.id}/"' in html
    assert f'id="next-item" href="/reviews/{third.id}/"' in html


@pytest.mark.parametrize("path", ["/reviews/", "/reviews/00000000-0000-0000-0000-000000000000/"])
def test_pages_refuse_outsiders_before_looking_anything_up(db, outsider, path):
    assert logged_in(outsider).get(path).status_code == 403

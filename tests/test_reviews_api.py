"""/api/reviews/: list and filter, claim, approve, edit, reject, bulk approve; who may do what."""
import pytest
from rest_framework.test import APIClient

from orchestration.models import APIKey, ReviewItem
from orchestration.reviews.actions import Reviewer, claim_review, reject_review
from orchestration.reviews.selectors import decisions_for_run
from tests.reviewhelpers import CANDIDATES, another_reviewer, open_item


def client_for(user=None, key=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def item(db):
    return open_item()


def test_a_reviewer_claims_then_approves(reviewer, item):
    client = client_for(reviewer)
    claimed = client.post(f"/api/reviews/{item.id}/claim/")
    assert claimed.status_code == 200 and claimed.json()["status"] == "claimed"
    assert claimed.json()["assignee"] == "rita"
    approved = client.post(f"/api/reviews/{item.id}/approve/", {"comment": "ok"}, format="json")
    assert approved.status_code == 200
    body = approved.json()
    assert (body["status"], body["decided_by"], body["chosen_index"], body["comment"]) == ("approved", "rita", 1, "ok")


def test_edit_needs_the_output_and_releases_it(reviewer, item):
    client = client_for(reviewer)
    assert client.post(f"/api/reviews/{item.id}/edit/", {}, format="json").status_code == 400
    response = client.post(f"/api/reviews/{item.id}/edit/", {"output": "Paris.", "candidate": 0}, format="json")
    assert response.status_code == 200 and response.json()["edited_output"] == "Paris."
    assert decisions_for_run(item.run_id)["gate"]["output"] == "Paris."


def test_reject_records_the_comment(reviewer, item):
    response = client_for(reviewer).post(f"/api/reviews/{item.id}/reject/", {"comment": "wrong"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert decisions_for_run(item.run_id)["gate"]["comment"] == "wrong"


def test_the_second_decider_gets_409_naming_the_holder(reviewer, item):
    client_for(reviewer).post(f"/api/reviews/{item.id}/claim/")
    response = client_for(another_reviewer("bob")).post(f"/api/reviews/{item.id}/approve/")
    assert response.status_code == 409
    assert response.json() == {"detail": "Claimed by rita.", "holder": "rita", "review_status": "claimed"}


def test_a_staff_user_without_the_permission_may_view_but_not_decide(staff_user, item):
    client = client_for(staff_user)
    assert client.get("/api/reviews/").status_code == 200
    assert client.get(f"/api/reviews/{item.id}/").status_code == 200
    for action in ("claim", "approve", "reject"):
        assert client.post(f"/api/reviews/{item.id}/{action}/").status_code == 403
    assert client.post(f"/api/reviews/{item.id}/edit/", {"output": "x"}, format="json").status_code == 403
    assert ReviewItem.objects.get(pk=item.pk).status == "pending"


def test_a_reviewer_role_in_some_team_does_not_decide_the_operator_spaces_items(staff_user, item):
    """An item of a run with no team is the reviewers group's to decide, as before teams: a staff member who
    reviews for a team may look at it (staff see the operator space) but not decide it."""
    from orchestration.models import Team, TeamMembership

    TeamMembership.objects.create(team=Team.objects.create(slug="elsewhere", name="Elsewhere"), user=staff_user,
                                  role=TeamMembership.Role.REVIEWER)
    assert item.run.team_id is None
    client = client_for(staff_user)
    assert client.get(f"/api/reviews/{item.id}/").status_code == 200
    for action in ("claim", "approve", "reject"):
        assert client.post(f"/api/reviews/{item.id}/{action}/").status_code == 403
    assert ReviewItem.objects.get(pk=item.pk).status == "pending"


def test_an_outsider_may_not_even_look(outsider, item):
    client = client_for(outsider)
    assert client.get("/api/reviews/").status_code == 403
    assert client.post(f"/api/reviews/{item.id}/approve/").status_code == 403


def test_anonymous_callers_are_refused(item):
    assert APIClient().get("/api/reviews/").status_code in (401, 403)


def test_an_api_key_without_the_scope_gets_403(item, api_key):
    client = client_for(key=api_key)  # default scopes: chat, runs, runs:read, events
    assert client.get("/api/reviews/").status_code == 403
    assert client.post(f"/api/reviews/{item.id}/approve/").status_code == 403


def test_an_api_key_with_the_scope_lists_and_decides_without_claiming(item):
    _, raw = APIKey.issue("ci-reviewer", scopes=["reviews:decide"])
    client = client_for(key=raw)
    assert [row["id"] for row in client.get("/api/reviews/?open=true").json()["results"]] == [str(item.id)]
    assert client.post(f"/api/reviews/{item.id}/claim/").status_code == 403  # claims are held by people
    response = client.post(f"/api/reviews/{item.id}/approve/", {"candidate": 0}, format="json")
    assert response.status_code == 200 and response.json()["decided_by"] == f"key:{raw[:10]}"


def test_unknown_items_are_404(reviewer, db):
    assert client_for(reviewer).post("/api/reviews/00000000-0000-0000-0000-000000000000/approve/").status_code == 404


def test_the_list_filters_by_status_reason_category_and_assignee(reviewer, db):
    first = open_item(step_key="a", reason="policy")
    second = open_item(step_key="b", request={"category": "code"})
    third = open_item(step_key="c")
    claim_review(item_id=second.id, reviewer=Reviewer(user=reviewer))
    reject_review(item_id=third.id, reviewer=Reviewer(user=reviewer))
    client = client_for(reviewer)

    def ids(query):
        return {row["id"] for row in client.get(f"/api/reviews/?{query}").json()["results"]}

    assert ids("open=true") == {str(first.id), str(second.id)}
    assert ids("status=rejected,claimed") == {str(second.id), str(third.id)}
    assert ids("reason=policy") == {str(first.id)}
    assert ids("category=code") == {str(second.id)}
    assert ids("assignee=me&open=true") == {str(second.id)}
    assert ids(f"run={first.run_id}") == {str(first.id)}


def test_a_list_row_carries_the_request_and_candidates(reviewer, item):
    [row] = client_for(reviewer).get("/api/reviews/").json()["results"]
    assert row["candidates"] == CANDIDATES and row["request"]["category"] == "chat"
    assert row["run_status"] == "awaiting_review" and row["due_at"]


def test_the_list_costs_the_same_queries_for_one_item_or_twenty(reviewer, django_assert_num_queries, db):
    client = client_for(reviewer)

    def add_items(count):
        for _ in range(count):
            item = open_item(step_key=str(ReviewItem.objects.count()))
            claim_review(item_id=item.id, reviewer=Reviewer(user=reviewer))

    add_items(1)
    client.get("/api/reviews/")
    # session, user, the user's teams, count, page (run, its team, assignee and decider joined in)
    with django_assert_num_queries(5):
        assert client.get("/api/reviews/").json()["count"] == 1
    add_items(19)
    with django_assert_num_queries(5):
        assert client.get("/api/reviews/").json()["count"] == 20


def test_bulk_approve_approves_free_items_and_reports_the_rest(reviewer, db):
    free, held = open_item(step_key="a"), open_item(step_key="b")
    bob = another_reviewer("bob")
    claim_review(item_id=held.id, reviewer=Reviewer(user=bob))
    response = client_for(reviewer).post("/api/reviews/bulk-approve/", {"ids": [str(free.id), str(held.id)]},
                                         format="json")
    assert response.status_code == 200
    assert response.json()["approved"] == [str(free.id)]
    assert response.json()["refused"][0]["holder"] == "bob"


def test_session_posts_need_the_csrf_token(reviewer, item):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(reviewer)
    assert client.post(f"/api/reviews/{item.id}/approve/").status_code == 403
    assert ReviewItem.objects.get(pk=item.pk).status == "pending"

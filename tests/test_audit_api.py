"""GET /api/audit/ over a live server: superusers read the whole trail (and filter by team and action), a team's
admins read their teams' entries only (configuration of the team, its members, keys and workflows, and review
decisions on its runs), everyone else — viewers, reviewers, staff, any API key — is refused. Entries carry their
team in the hashed data, so the chain `verify_audit` checks still holds, and moving an entry to another team is
tampering it finds."""
import json

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from orchestration.audit import verify_chain
from orchestration.config_audit import acting_as
from orchestration.models import APIKey, AuditEvent, LLMModel, Provider, Team, TeamMembership
from orchestration.reviews.actions import Reviewer, approve_review
from orchestration.workflows import save_workflow
from tests.livehelpers import session_cookie
from tests.reviewhelpers import open_item, paused_run


class Trail:
    """Two teams, each with an admin, a viewer and a reviewer; a key, a workflow and a decided review each; an
    operator's provider with no team."""

    def __init__(self, server):
        self.server = server
        users = get_user_model().objects
        self.root = users.create_superuser("root", "root@example.com", "root-password-1")
        self.staff = users.create_user("staff", password="staff-password-1", is_staff=True)
        self.people, self.keys, self.items = {}, {}, {}
        with acting_as("system"):
            provider = Provider.objects.create(name="acme", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                               base_url="http://127.0.0.1:9/v1", api_key_env="ACME_API_KEY")
            LLMModel.objects.create(provider=provider, alias="echo", upstream_name="echo")
            for letter in ("a", "b"):
                team = Team.objects.create(slug=f"team-{letter}", name=f"Team {letter.upper()}")
                for role in ("admin", "viewer", "reviewer"):
                    user = users.create_user(f"{role}-{letter}", password=f"{role}-{letter}-password-1")
                    TeamMembership.objects.create(team=team, user=user, role=role)
                    self.people[f"{role}_{letter}"] = user
                self.keys[letter] = APIKey.issue(f"key-{letter}", scopes=["runs", "reviews:decide"], team=team)
                save_workflow(slug=f"wf-{letter}", spec={"root": {"type": "call", "model": "echo"}},
                              team_id=team.pk)
                item = open_item(run=paused_run(team=team))
                approve_review(item_id=item.pk, reviewer=Reviewer(user=self.people[f"reviewer_{letter}"]),
                               comment=f"fine for {letter}")
                self.items[letter] = item
        self.operator_key = APIKey.issue("operator", scopes=["runs", "runs:read", "reviews:decide"])[1]

    def get(self, who, path="/api/audit/", *, key: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if who is not None:
            user = who if not isinstance(who, str) else self.people[who]
            headers["cookie"] = session_cookie(user)
        return httpx.get(f"{self.server.url}{path}", headers=headers, timeout=15)

    def read(self, who, path="/api/audit/?limit=200") -> list[dict]:
        response = self.get(who, path)
        assert response.status_code == 200, response.text[:300]
        return response.json()["results"]


@pytest.fixture
def trail(podium_server):
    return Trail(podium_server)


def test_a_teams_admin_reads_the_entries_of_their_team_and_nothing_else(trail):
    team_a = Team.objects.get(slug="team-a")
    # Changes made through the API by team A's admin land in the trail, attributed and marked team A's.
    headers = {"cookie": session_cookie(trail.people["admin_a"])}
    with httpx.Client(base_url=trail.server.url, headers=headers, timeout=15) as browser:
        csrf = "c" * 32
        patched = browser.patch("/api/teams/team-a/", json={"budget_usd_per_day": "3"},
                                headers={"cookie": f"{headers['cookie']}; csrftoken={csrf}", "x-csrftoken": csrf,
                                         "origin": trail.server.url})
    assert patched.status_code == 200, patched.text

    rows = trail.read("admin_a")
    assert rows and {row["team"] for row in rows} == {"team-a"}
    assert all(row["data"]["team"] == team_a.pk for row in rows)
    subjects = {(row["action"], row["subject"]) for row in rows}
    assert ("config.team.created", "team:team-a") in subjects
    assert ("config.team_membership.created", "team_membership:team-a/viewer-a") in subjects
    assert ("config.api_key.created", f"api_key:{trail.keys['a'][0].prefix}") in subjects
    assert ("review.approve", f"review:{trail.items['a'].pk}") in subjects
    assert ("review.opened", f"review:{trail.items['a'].pk}") in subjects
    assert {("config.workflow.created", "workflow:wf-a"), ("workflow.version_created", "workflow:wf-a")} <= subjects
    [budget] = [row for row in rows if row["action"] == "config.team.changed"]
    assert budget["actor"] == "user:admin-a" and budget["data"]["diff"]["budget_usd_per_day"][1] == "3.0000"
    # Newest first.
    assert [row["id"] for row in rows] == sorted((row["id"] for row in rows), reverse=True)
    # Nothing of team B, nothing of the operator space (the provider).
    text = json.dumps(rows)
    for marker in ("team-b", "viewer-b", "fine for b", str(trail.items["b"].pk), trail.keys["b"][0].prefix,
                   "provider:acme"):
        assert marker not in text
    # ?team= cannot widen it: another team's slug is an empty list, as one that does not exist.
    assert trail.read("admin_a", "/api/audit/?team=team-b") == []
    assert trail.read("admin_a", "/api/audit/?team=no-such-team") == []
    assert trail.read("admin_b", "/api/audit/?team=team-a") == []
    assert verify_chain() is None  # the team in the data is hashed like the rest


def test_a_superuser_reads_everything_and_filters_by_team_and_action(trail):
    everything = trail.read(trail.root)
    assert len(everything) == AuditEvent.objects.count()
    assert {row["team"] for row in everything} == {"team-a", "team-b", None}
    only_b = trail.read(trail.root, "/api/audit/?team=team-b&limit=200")
    assert only_b and {row["team"] for row in only_b} == {"team-b"}
    operator = trail.read(trail.root, "/api/audit/?team=none&limit=200")
    assert {row["subject"] for row in operator} >= {"provider:acme", f"api_key:{APIKey.objects.get(name='operator').prefix}"}
    assert all(row["team"] is None and "team" not in row["data"] for row in operator)
    reviews = trail.read(trail.root, "/api/audit/?action=review.&limit=200")
    assert {row["action"] for row in reviews} == {"review.opened", "review.approve"}
    assert {row["team"] for row in reviews} == {"team-a", "team-b"}
    # Paged like every list: a limit, and the link to the rest.
    page = trail.get(trail.root, "/api/audit/?limit=2").json()
    assert len(page["results"]) == 2 and page["count"] == len(everything) and "offset=2" in page["next"]
    assert page["results"][0]["id"] == everything[0]["id"]


def test_no_secret_is_returned(trail):
    key_row, raw = trail.keys["a"]
    rows = trail.read(trail.root, "/api/audit/?action=config.api_key.&limit=200")
    text = json.dumps(rows)
    assert rows and raw not in text and key_row.key_hash not in text and trail.operator_key not in text
    [created] = [row for row in rows if row["subject"] == f"api_key:{key_row.prefix}"
                 and row["action"] == "config.api_key.created"]
    assert created["data"]["diff"]["key_hash"] == [None, "[hidden]"]


@pytest.mark.parametrize("who", ["viewer_a", "reviewer_a", "staff", "key_a", "operator_key", "anonymous"])
def test_anyone_else_is_refused(trail, who):
    if who == "staff":
        response = trail.get(trail.staff)
    elif who == "key_a":
        response = trail.get(None, key=trail.keys["a"][1])
    elif who == "operator_key":  # a team-less key with every read scope: the trail is for people
        response = trail.get(None, key=trail.operator_key)
    elif who == "anonymous":
        response = trail.get(None)
    else:
        response = trail.get(who)
    assert response.status_code in ((401, 403) if who == "anonymous" else (403,)), response.text[:200]
    assert "review." not in response.text and "config." not in response.text


def test_moving_an_entry_to_another_team_is_tampering_the_chain_finds(trail):
    entry = AuditEvent.objects.filter(action="review.approve", data__team=Team.objects.get(slug="team-a").pk).get()
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL's trigger refuses the update outright (tests/test_config_audit.py)")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE orchestration_auditevent SET data = %s WHERE id = %s",
                       [json.dumps({**entry.data, "team": Team.objects.get(slug="team-b").pk}), entry.pk])
    assert verify_chain().pk == entry.pk

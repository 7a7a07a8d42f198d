"""The team isolation matrix for /api and /v1, over a live server on loopback.

Two teams, each with a viewer, a reviewer and a key. Every /api URL pattern (api/urls.py, enumerated: a new
endpoint without a case here fails `test_every_api_endpoint_has_an_isolation_case`) is tried by team B's
callers against team A's objects: 404 or refused, and none of team A's identifiers in any answer. Each case
also checks that team A's own callers do see their objects (so a case cannot pass by answering nothing).
/v1: each key's /v1/models, calls outside the team's list (404 as for a missing model), and the response
cache across teams (the fake upstream counts the calls).
"""
from __future__ import annotations

import secrets
import uuid

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from orchestration.gateway.writer import writer
from orchestration.models import APIKey, LLMModel, Provider, ReviewItem, RouteAlias, Run, Team, TeamMembership
from orchestration.models.runs import RunStatus
from orchestration.registry import bump_version
from orchestration.runner.inprocess import runner
from orchestration.workflows import save_workflow
from tests.reviewhelpers import open_item, paused_run

SCOPES = ["chat", "runs", "reviews:decide"]
OUTSIDERS = ("viewer_b", "reviewer_b", "key_b")  # team B's callers, aimed at team A's objects


class Caller:
    """One identity on the live server: an API key (Bearer) or a person (session cookie, CSRF token, Origin)."""

    def __init__(self, server, *, key: str | None = None, user=None):
        self.server = server
        self.headers: dict[str, str] = {}
        if key is not None:
            self.headers["authorization"] = f"Bearer {key}"
        if user is not None:
            client = Client()
            client.force_login(user)
            csrf = secrets.token_hex(16)  # 32 characters: a valid unmasked CSRF secret
            session = client.cookies[settings.SESSION_COOKIE_NAME].value
            self.headers.update({"cookie": f"{settings.SESSION_COOKIE_NAME}={session}; "
                                           f"{settings.CSRF_COOKIE_NAME}={csrf}",
                                 "x-csrftoken": csrf, "origin": server.url})

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}{path}", headers=self.headers, timeout=15, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body=None):
        return self.request("POST", path, json=body if body is not None else {})

    def patch(self, path, body):
        return self.request("PATCH", path, json=body)


class World:
    """Team A and team B with their people, keys, models, a route, workflows, runs and review items."""

    def __init__(self, server, upstream):
        self.server, self.upstream = server, upstream
        self.upstream_names = {}
        providers = {}
        for name in ("prov-a", "prov-b", "prov-shared"):
            providers[name] = Provider.objects.create(name=name, kind=Provider.Kind.OPENAI_COMPATIBLE,
                                                      base_url=upstream.base_url, timeout_s=2)
        self.models = {}
        for alias, provider in (("model-a", "prov-a"), ("model-b", "prov-b"), ("model-shared", "prov-shared")):
            # A fresh upstream name each test: Django's cache (local memory) outlives a test's database.
            upstream_name = f"{alias}-{uuid.uuid4().hex[:8]}"
            self.upstream_names[alias] = upstream_name
            self.models[alias] = LLMModel.objects.create(
                provider=providers[alias.replace("model", "prov")], alias=alias, upstream_name=upstream_name,
                price_in_per_m="2.0", price_out_per_m="8.0", quality_prior=0.7, cache_ttl_s=60)
        self.providers = providers
        route_b = RouteAlias.objects.create(name="route-b", candidates=["model-b"])
        self.team_a = Team.objects.create(slug="team-a", name="Team A")
        self.team_b = Team.objects.create(slug="team-b", name="Team B")
        self.team_a.allowed_models.set([self.models["model-a"], self.models["model-shared"]])
        self.team_b.allowed_models.set([self.models["model-b"], self.models["model-shared"]])
        self.team_b.allowed_route_aliases.set([route_b])
        users = get_user_model().objects
        self.users = {}
        for team, letter in ((self.team_a, "a"), (self.team_b, "b")):
            for role in ("viewer", "reviewer"):
                user = users.create_user(f"{role}-{letter}", password=f"{role}-{letter}-password-1")
                TeamMembership.objects.create(team=team, user=user, role=role)
                self.users[f"{role}_{letter}"] = user
        self.keys = {}
        self.key_rows = {}
        for team, letter in ((self.team_a, "a"), (self.team_b, "b")):
            row, raw = APIKey.issue(f"key-{letter}", scopes=SCOPES, team=team)
            self.keys[f"key_{letter}"], self.key_rows[f"key_{letter}"] = raw, row
        self.operator_key = APIKey.issue("operator", scopes=SCOPES)[1]
        bump_version()
        for slug, model, team in (("wf-a", "model-a", self.team_a), ("wf-b", "model-b", self.team_b),
                                  ("wf-shared", "model-shared", None)):
            save_workflow(slug=slug, spec={"root": {"type": "call", "model": model}},
                          team_id=team.pk if team else None)
        self.run_a = paused_run(team=self.team_a, api_key_id=self.key_rows["key_a"].pk,
                                metadata={"marker": "SECRET-A"})
        self.item_a = open_item(run=self.run_a)
        self.run_b = paused_run(team=self.team_b, api_key_id=self.key_rows["key_b"].pk)
        self.item_b = open_item(run=self.run_b)

    def upstream_requests_for(self, alias: str) -> list[dict]:
        """The calls the fake upstream received for this model (its upstream name is unique to the test)."""
        return [r for r in self.upstream.requests if r.get("body", {}).get("model") == self.upstream_names[alias]]

    def caller(self, who: str) -> Caller:
        if who.startswith("key_"):
            return Caller(self.server, key=self.keys[who])
        if who == "operator":
            return Caller(self.server, key=self.operator_key)
        return Caller(self.server, user=self.users[who])

    @property
    def markers(self) -> list[str]:
        """What must never appear in an answer to team B: team A's identifiers and data."""
        return ["team-a", "Team A", "wf-a", "model-a", "prov-a", "SECRET-A", "viewer-a", "reviewer-a",
                str(self.run_a.pk), str(self.item_a.pk), self.upstream_names["model-a"]]

    def assert_no_team_a(self, response: httpx.Response, who: str) -> None:
        for marker in self.markers:
            assert marker not in response.text, f"{who} got {marker!r} of team A: {response.text[:300]}"


@pytest.fixture
def world(podium_server, fake_upstream):
    yield World(podium_server, fake_upstream)
    assert runner.wait_idle(20), "a run was still executing at the end of the test"
    writer.flush()


# --- one case per /api URL pattern ------------------------------------------------------------------------------

def hidden(world, who, response, *, statuses=(404,)):
    assert response.status_code in statuses, f"{who}: {response.status_code} {response.text[:200]}"
    world.assert_no_team_a(response, who)


def listed(world, who, response):
    assert response.status_code == 200, f"{who}: {response.status_code} {response.text[:200]}"
    world.assert_no_team_a(response, who)
    return response.json()


def case_root(world):
    for who in OUTSIDERS:
        listed(world, who, world.caller(who).get("/api/"))


def case_provider_list(world):
    for who in OUTSIDERS:
        names = {row["name"] for row in listed(world, who, world.caller(who).get("/api/providers/"))["results"]}
        assert names == {"prov-b", "prov-shared"}
    names = {row["name"] for row in world.caller("viewer_a").get("/api/providers/").json()["results"]}
    assert names == {"prov-a", "prov-shared"}


def case_provider_detail(world):
    path = f"/api/providers/{world.providers['prov-a'].pk}/"
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).get(path))
    assert world.caller("key_a").get(path).json()["name"] == "prov-a"


def case_model_list(world):
    for who in OUTSIDERS:
        aliases = {row["alias"] for row in listed(world, who, world.caller(who).get("/api/models/"))["results"]}
        assert aliases == {"model-b", "model-shared"}
    aliases = {row["alias"] for row in world.caller("viewer_a").get("/api/models/").json()["results"]}
    assert aliases == {"model-a", "model-shared"}


def case_model_detail(world):
    path = f"/api/models/{world.models['model-a'].pk}/"
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).get(path))
    assert world.caller("viewer_a").get(path).json()["alias"] == "model-a"


def case_model_calibration(world):
    missing = world.caller("viewer_b").get("/api/models/no-such-model/calibration/")
    for who in OUTSIDERS:
        response = world.caller(who).get("/api/models/model-a/calibration/")
        assert response.status_code == 404
        # The same answer as for a model that does not exist: no hint.
        assert response.json()["detail"].replace("model-a", "X") == missing.json()["detail"].replace(
            "no-such-model", "X")
    assert world.caller("key_a").get("/api/models/model-a/calibration/").json()["model"] == "model-a"


def case_run_list(world):
    for who in OUTSIDERS:
        listed(world, who, world.caller(who).get("/api/runs/"))
        assert listed(world, who, world.caller(who).get("/api/runs/?team=team-a"))["results"] == []
    for who in ("viewer_b", "key_b"):
        ids = {row["id"] for row in world.caller(who).get("/api/runs/").json()["results"]}
        assert str(world.run_b.pk) in ids
    assert str(world.run_a.pk) in {row["id"] for row in world.caller("viewer_a").get("/api/runs/").json()["results"]}
    # Starting a run of another team's workflow: the answer a workflow that does not exist gets.
    missing = world.caller("key_b").post("/api/runs/", {"workflow": "no-such-flow", "input": "x"})
    for who in ("reviewer_b", "key_b"):
        response = world.caller(who).post("/api/runs/", {"workflow": "wf-a", "input": "x"})
        assert response.status_code == missing.status_code == 400
        assert response.text.replace("wf-a", "X") == missing.text.replace("no-such-flow", "X")
    # A person cannot start a run in a team they are not a member of, nor as a viewer.
    def start_in(team):
        return world.caller("reviewer_b").post("/api/runs/", {"workflow": "wf-shared", "input": "x", "team": team})
    response, missing = start_in("team-a"), start_in("no-such-team")
    assert response.status_code == missing.status_code == 400 and "team" in response.json()
    assert response.text.replace("team-a", "X") == missing.text.replace("no-such-team", "X")  # it echoes, no more
    assert world.caller("viewer_b").post("/api/runs/", {"workflow": "wf-shared", "input": "x"}).status_code == 403
    assert not Run.objects.filter(team=world.team_a).exclude(pk=world.run_a.pk).exists()
    # A reviewer's run (their only team) and a key's run belong to their team.
    for who in ("reviewer_b", "key_b"):
        started = world.caller(who).post("/api/runs/", {"workflow": "wf-shared", "input": f"from {who}"})
        assert started.status_code == 202, started.text
        assert started.json()["team"] == "team-b"


def case_run_detail(world):
    path = f"/api/runs/{world.run_a.pk}/"
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).get(path))
    for who in ("viewer_a", "key_a"):
        assert world.caller(who).get(path).json()["metadata"]["marker"] == "SECRET-A"


def case_run_cancel(world):
    path = f"/api/runs/{world.run_a.pk}/cancel/"
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).post(path))
    assert world.caller("viewer_a").post(path).status_code == 403  # viewers read
    assert Run.objects.get(pk=world.run_a.pk).status == RunStatus.AWAITING_REVIEW
    assert world.caller("reviewer_a").post(path).json()["status"] == "cancelled"


def case_workflow_list(world):
    for who in OUTSIDERS:
        slugs = {row["slug"] for row in listed(world, who, world.caller(who).get("/api/workflows/"))["results"]}
        assert slugs == {"wf-b", "wf-shared"}
    slugs = {row["slug"] for row in world.caller("key_a").get("/api/workflows/").json()["results"]}
    assert slugs == {"wf-a", "wf-shared"}


def case_workflow_detail(world):
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).get("/api/workflows/wf-a/"))
    for who in ("viewer_b", "reviewer_b"):
        hidden(world, who, world.caller(who).patch("/api/workflows/wf-a/", {"description": "mine now"}))
    assert world.caller("key_b").patch("/api/workflows/wf-a/", {"description": "x"}).status_code in (403, 404)
    assert world.caller("viewer_a").get("/api/workflows/wf-a/").json()["team"] == "team-a"
    assert world.caller("reviewer_a").patch("/api/workflows/wf-a/", {"description": "x"}).status_code == 403
    assert world.caller("viewer_a").get("/api/workflows/wf-a/").json()["description"] == ""


def case_team_list(world):
    for who in OUTSIDERS:
        slugs = {row["slug"] for row in listed(world, who, world.caller(who).get("/api/teams/"))["results"]}
        assert slugs == {"team-b"}
    assert {row["slug"] for row in world.caller("viewer_a").get("/api/teams/").json()["results"]} == {"team-a"}


def case_team_detail(world):
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).get("/api/teams/team-a/"))
        hidden(world, who, world.caller(who).patch("/api/teams/team-a/", {"budget_usd_per_day": "1"}),
               statuses=(403, 404) if who.startswith("key") else (404,))
    mine = world.caller("viewer_a").get("/api/teams/team-a/").json()
    assert {(m["username"], m["role"]) for m in mine["members"]} == {("viewer-a", "viewer"),
                                                                     ("reviewer-a", "reviewer")}
    assert set(mine["allowed_models"]) == {"model-a", "model-shared"} and mine["your_role"] == "viewer"
    assert world.caller("viewer_a").patch("/api/teams/team-a/", {"budget_usd_per_day": "1"}).status_code == 403
    assert Team.objects.get(pk=world.team_a.pk).budget_usd_per_day is None


def case_review_list(world):
    for who in OUTSIDERS:
        ids = {row["id"] for row in listed(world, who, world.caller(who).get("/api/reviews/"))["results"]}
        assert ids == {str(world.item_b.pk)}
    assert {row["id"] for row in world.caller("viewer_a").get("/api/reviews/").json()["results"]} == {
        str(world.item_a.pk)}


def case_review_bulk_approve(world):
    missing = world.caller("reviewer_b").post("/api/reviews/bulk-approve/", {"ids": [str(uuid.uuid4())]}).json()
    for who in ("reviewer_b", "key_b"):
        response = world.caller(who).post("/api/reviews/bulk-approve/", {"ids": [str(world.item_a.pk)]})
        assert response.status_code == 200
        body = response.json()
        assert body["approved"] == [] and [r["status"] for r in body["refused"]] == [404]
        assert body["refused"][0]["detail"] == missing["refused"][0]["detail"]
    hidden(world, "viewer_b", world.caller("viewer_b").post("/api/reviews/bulk-approve/",
                                                            {"ids": [str(world.item_a.pk)]}), statuses=(403,))
    assert ReviewItem.objects.get(pk=world.item_a.pk).status == ReviewItem.Status.PENDING


def case_review_detail(world):
    path = f"/api/reviews/{world.item_a.pk}/"
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).get(path))
    assert world.caller("viewer_a").get(path).json()["team"] == "team-a"


def review_action_case(action: str, body: dict | None = None):
    def case(world):
        path = f"/api/reviews/{world.item_a.pk}/{action}/"
        for who in OUTSIDERS:
            # 404 (not found) for reviewers and keys; 403 where the caller may decide nothing at all (a viewer of
            # no team that reviews, a key claiming) — the same answer for any item, so still no hint.
            hidden(world, who, world.caller(who).post(path, body), statuses=(403, 404))
        assert world.caller("reviewer_b").post(path, body).status_code == 404
        assert world.caller("viewer_a").post(path, body).status_code == 403  # viewers read, never decide
        assert ReviewItem.objects.get(pk=world.item_a.pk).status == ReviewItem.Status.PENDING
        if action == "release":
            assert world.caller("reviewer_a").post(f"/api/reviews/{world.item_a.pk}/claim/").status_code == 200
        response = world.caller("reviewer_a").post(path, body)
        assert response.status_code == 200, response.text
    return case


def case_audit_list(world):
    """The audit trail: a team's admins read their team's entries; team B's admin none of team A's, and team B's
    viewers, reviewers and keys are refused outright (the same 403 for everything, so no hint)."""
    admins = {}
    for team, letter in ((world.team_a, "a"), (world.team_b, "b")):
        admins[letter] = get_user_model().objects.create_user(f"admin-{letter}", password=f"admin-{letter}-pw-1")
        TeamMembership.objects.create(team=team, user=admins[letter], role="admin")
    for who in OUTSIDERS:
        hidden(world, who, world.caller(who).get("/api/audit/"), statuses=(403,))
    admin_b = Caller(world.server, user=admins["b"])
    for path in ("/api/audit/?limit=200", "/api/audit/?team=team-a", "/api/audit/?action=review."):
        rows = listed(world, "admin_b", admin_b.get(path))["results"]
        assert {row["team"] for row in rows} <= {"team-b"}
    assert str(world.item_b.pk) in admin_b.get("/api/audit/?action=review.").text
    mine = Caller(world.server, user=admins["a"]).get("/api/audit/?limit=200").json()["results"]
    assert {row["team"] for row in mine} == {"team-a"}
    assert f"review:{world.item_a.pk}" in {row["subject"] for row in mine}


CASES = {
    "audit-list": case_audit_list,
    "api-root": case_root,
    "provider-list": case_provider_list,
    "provider-detail": case_provider_detail,
    "llmmodel-list": case_model_list,
    "llmmodel-detail": case_model_detail,
    "model-calibration": case_model_calibration,
    "run-list": case_run_list,
    "run-detail": case_run_detail,
    "run-cancel": case_run_cancel,
    "workflow-list": case_workflow_list,
    "workflow-detail": case_workflow_detail,
    "team-list": case_team_list,
    "team-detail": case_team_detail,
    "review-list": case_review_list,
    "review-bulk-approve": case_review_bulk_approve,
    "review-detail": case_review_detail,
    "review-claim": review_action_case("claim"),
    "review-release": review_action_case("release"),
    "review-approve": review_action_case("approve", {"comment": "ok"}),
    "review-edit": review_action_case("edit", {"output": "edited"}),
    "review-reject": review_action_case("reject", {"comment": "no"}),
}


def api_url_names() -> set[str]:
    """Every named URL pattern under /api/ (api/urls.py, router routes included)."""
    names: set[str] = set()

    def walk(patterns, prefix: str):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and (prefix + str(pattern.pattern)).startswith("api/"):
                if pattern.name and not (prefix + str(pattern.pattern)).startswith(("api/schema", "api/docs")):
                    names.add(pattern.name)
    walk(get_resolver().url_patterns, "")
    return names


def test_every_api_endpoint_has_an_isolation_case():
    assert api_url_names() == set(CASES), "add a case to CASES for each new /api endpoint"


@pytest.mark.parametrize("name", sorted(CASES))
def test_team_b_never_reaches_team_a_through_the_api(world, name):
    CASES[name](world)


def test_a_superuser_sees_every_team_and_filters_by_team(world):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "root-password-1")
    caller = Caller(world.server, user=admin)
    ids = {row["id"] for row in caller.get("/api/runs/").json()["results"]}
    assert {str(world.run_a.pk), str(world.run_b.pk)} <= ids
    assert {row["id"] for row in caller.get("/api/runs/?team=team-b").json()["results"]} == {str(world.run_b.pk)}
    assert {row["slug"] for row in caller.get("/api/teams/").json()["results"]} == {"team-a", "team-b"}
    assert {row["id"] for row in caller.get("/api/reviews/?team=team-a").json()["results"]} == {str(world.item_a.pk)}


def test_a_team_admin_changes_the_teams_budgets_and_default_data_class(world):
    admin_a = get_user_model().objects.create_user("admin-a", password="admin-a-password-1")
    TeamMembership.objects.create(team=world.team_a, user=admin_a, role="admin")
    response = Caller(world.server, user=admin_a).patch("/api/teams/team-a/", {
        "budget_usd_per_day": "2.5", "default_data_class": "internal"})
    assert response.status_code == 200, response.text
    team = Team.objects.get(pk=world.team_a.pk)
    assert (float(team.budget_usd_per_day), team.default_data_class) == (2.5, "internal")
    # A budget is the operator's limit on the team: its admins may lower it, not raise or remove it.
    for raised in ({"budget_usd_per_day": "3"}, {"budget_usd_per_day": None}):
        refused = Caller(world.server, user=admin_a).patch("/api/teams/team-a/", raised)
        assert refused.status_code == 403, refused.text
    assert Caller(world.server, user=admin_a).patch("/api/teams/team-a/", {"budget_usd_per_day": "1"}).status_code == 200
    assert float(Team.objects.get(pk=world.team_a.pk).budget_usd_per_day) == 1.0
    superuser = get_user_model().objects.create_superuser("root-a", password="root-a-password-1")
    assert Caller(world.server, user=superuser).patch("/api/teams/team-a/", {"budget_usd_per_day": "9"}).status_code == 200
    # ... and the team's workflows, not another team's.
    assert Caller(world.server, user=admin_a).patch("/api/workflows/wf-a/", {"description": "ours"}).status_code == 200
    assert Caller(world.server, user=admin_a).patch("/api/workflows/wf-b/", {"description": "x"}).status_code == 404


# --- /v1 --------------------------------------------------------------------------------------------------------

def v1(world, key: str, path: str, body: dict | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if body is None:
        return httpx.get(f"{world.server.url}{path}", headers=headers, timeout=15)
    return httpx.post(f"{world.server.url}{path}", headers=headers, json=body, timeout=15)


def test_v1_models_lists_only_what_the_keys_team_may_call(world):
    def ids(key):
        response = v1(world, key, "/v1/models")
        assert response.status_code == 200
        return {row["id"] for row in response.json()["data"]}
    assert ids(world.keys["key_a"]) == {"model-a", "model-shared"}
    assert ids(world.keys["key_b"]) == {"model-b", "model-shared", "route-b"}
    assert ids(world.operator_key) == {"model-a", "model-b", "model-shared", "route-b"}  # no team: everything


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "{name}", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": "{name}", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("/v1/embeddings", {"model": "{name}", "input": "hi"}),
], ids=["chat", "stream", "embeddings"])
def test_calling_outside_the_teams_list_is_the_404_of_a_missing_model(world, path, body):
    def call(name):
        return v1(world, world.keys["key_a"], path, {**body, "model": name})
    missing = call("no-such-model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    for name in ("model-b", "route-b"):
        response = call(name)
        assert response.status_code == 404
        assert response.text.replace(name, "X") == missing.text.replace("no-such-model", "X")
    assert call("model-a").status_code == 200  # the team's own model answers
    assert not [r for r in world.upstream_requests_for("model-b")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_another_teams_workflow_is_the_404_of_a_missing_one_on_v1(world, stream):
    def call(name):
        return v1(world, world.keys["key_a"], "/v1/chat/completions",
                  {"model": name, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    missing = call("workflow/no-such-flow")
    response = call("workflow/wf-b")
    assert response.status_code == missing.status_code == 404
    assert response.text.replace("wf-b", "X") == missing.text.replace("no-such-flow", "X")
    assert call("workflow/wf-shared").status_code == 200
    assert not Run.objects.filter(target="workflow/wf-b").exists()


def test_the_cache_never_serves_one_teams_answer_to_another(world, fake_upstream):
    body = {"model": "model-shared", "messages": [{"role": "user", "content": f"same {uuid.uuid4().hex}"}],
            "temperature": 0}
    answers = {}
    for who in ("key_a", "key_a", "key_b", "key_b"):
        response = v1(world, world.keys[who], "/v1/chat/completions", body)
        assert response.status_code == 200
        answers.setdefault(who, []).append(response.headers["x-podium-run-id"])
    # Each team's repeat is a hit; the other team's first call is not: the upstream is hit once per team.
    assert len(world.upstream_requests_for("model-shared")) == 2
    assert v1(world, world.operator_key, "/v1/chat/completions", body).status_code == 200
    assert len(world.upstream_requests_for("model-shared")) == 3  # team-less keys: the operator space
    writer.flush()
    for who in ("key_a", "key_b"):
        first, repeat = (Run.objects.get(pk=run_id) for run_id in answers[who])
        assert first.steps.get().attributes.get("cached") is None
        assert repeat.steps.get().attributes.get("cached") is True


def test_workflow_steps_cache_per_team_too(world):
    before = len(world.upstream_requests_for("model-shared"))
    body = {"model": "workflow/wf-shared", "messages": [{"role": "user", "content": f"wf {uuid.uuid4().hex}"}]}
    for who in ("key_a", "key_a", "key_b"):
        assert v1(world, world.keys[who], "/v1/chat/completions", body).status_code == 200
    assert len(world.upstream_requests_for("model-shared")) - before == 2


# --- the admin --------------------------------------------------------------------------------------------------

def test_a_team_and_its_key_made_in_the_admin_limit_what_the_key_sees_on_v1(admin_client, world):
    model = world.models["model-shared"]
    response = admin_client.post("/admin/orchestration/team/add/", {
        "slug": "team-c", "name": "Team C", "default_data_class": "internal", "allowed_models": [model.pk],
        "budget_usd_per_day": "5", "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
        "memberships-0-user": world.users["viewer_b"].pk, "memberships-0-role": "reviewer",
        "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0"})
    assert response.status_code == 302, response.content.decode()[:2000]
    team = Team.objects.get(slug="team-c")
    assert team.memberships.get().role == "reviewer" and list(team.allowed_models.all()) == [model]
    response = admin_client.post("/admin/orchestration/apikey/add/", {
        "name": "c-key", "team": team.pk, "scopes": '["chat"]', "data_class": "sensitive",
        "budget_usd_per_day": "1", "budget_usd_per_month": "10"}, follow=True)
    assert response.status_code == 200
    raw = next(part for part in response.content.decode().split("<code>")[1:]).split("</code>")[0]
    key = APIKey.objects.get(name="c-key")
    assert (key.team_id, key.data_class, float(key.budget_usd_per_month)) == (team.pk, "sensitive", 10.0)
    models = v1(world, raw, "/v1/models").json()["data"]
    assert [row["id"] for row in models] == ["model-shared"]
    page = admin_client.get(f"/admin/orchestration/team/{team.pk}/change/").content.decode()
    assert "c-key" in page and "viewer-b" in page  # the team's keys and members inline


def test_the_operator_space_is_for_staff_and_operator_keys_only(world):
    """Rows with no team (an operator key's run and its review) are what staff and team-less keys saw before
    teams; a team's people and keys never see them."""
    operator_run = paused_run(metadata={"marker": "OPERATOR"})
    operator_item = open_item(run=operator_run)
    staff = get_user_model().objects.create_user("staff", password="staff-password-1", is_staff=True)
    for who in OUTSIDERS:
        caller = world.caller(who)
        assert caller.get(f"/api/reviews/{operator_item.pk}/").status_code == 404
        assert "OPERATOR" not in caller.get("/api/runs/").text
    assert world.caller("reviewer_b").post(f"/api/reviews/{operator_item.pk}/approve/", {}).status_code == 404
    assert world.caller("key_b").post(f"/api/reviews/{operator_item.pk}/reject/", {}).status_code == 404
    staff_caller = Caller(world.server, user=staff)
    assert staff_caller.get(f"/api/runs/{operator_run.pk}/").json()["metadata"]["marker"] == "OPERATOR"
    assert staff_caller.get(f"/api/runs/{world.run_a.pk}/").status_code == 404  # staff is not a team member
    assert world.caller("operator").get(f"/api/reviews/{operator_item.pk}/").status_code == 200


def test_a_new_workflow_belongs_to_its_authors_team(world):
    admin_a = get_user_model().objects.create_user("admin-a", password="admin-a-password-1")
    TeamMembership.objects.create(team=world.team_a, user=admin_a, role="admin")
    spec = {"root": {"type": "call", "model": "model-a"}}
    created = Caller(world.server, user=admin_a).post("/api/workflows/", {"slug": "wf-a2", "spec": spec})
    assert created.status_code == 201 and created.json()["team"] == "team-a"
    # Not in a team one is not an admin of, nor shared unless staff.
    for body in ({"slug": "wf-x", "spec": spec, "team": "team-b"}, {"slug": "wf-y", "spec": spec, "team": None}):
        assert Caller(world.server, user=admin_a).post("/api/workflows/", body).status_code in (400, 403)
    assert world.caller("reviewer_a").post("/api/workflows/", {"slug": "wf-z", "spec": spec}).status_code == 403
    assert "wf-a2" not in world.caller("key_b").get("/api/workflows/").text


def test_a_shared_workflow_never_calls_a_model_outside_the_runs_team(world):
    """A run sees only what its team may call: a shared workflow's step naming another team's model fails as an
    unknown model would, and that model's upstream is never asked."""
    save_workflow(slug="wf-shared-b", spec={"root": {"type": "call", "model": "model-b"}}, team_id=None)
    body = {"model": "workflow/wf-shared-b", "messages": [{"role": "user", "content": f"wf {uuid.uuid4().hex}"}]}
    refused = v1(world, world.keys["key_a"], "/v1/chat/completions", body)
    assert refused.status_code >= 400
    assert not world.upstream_requests_for("model-b")
    run = Run.objects.get(target="workflow/wf-shared-b", api_key_id=world.key_rows["key_a"].pk)
    assert run.status == "failed" and "model-b" in run.error
    # Team B may call model-b: the same shared workflow runs for its key.
    assert v1(world, world.keys["key_b"], "/v1/chat/completions", body).status_code == 200
    assert len(world.upstream_requests_for("model-b")) == 1

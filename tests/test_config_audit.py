"""Configuration changes (admin, API, code) are audit entries with who, what and a diff, never a secret; the chain
`verify_audit` checks holds across them, and tampering with one is found."""
import json
import re

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from orchestration.config_audit import acting_as, mask
from orchestration.models import APIKey, AuditEvent, LLMModel, Provider, RouteAlias, Team, TeamMembership
from orchestration.workflows import save_workflow
from tests.livehelpers import session_cookie


def entries(action: str, subject: str | None = None):
    found = AuditEvent.objects.filter(action=action).order_by("id")
    return list(found.filter(subject=subject) if subject is not None else found)


def provider_form(provider: Provider, **overrides) -> dict:
    data = {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url,
            "api_key_env": provider.api_key_env, "timeout_s": str(provider.timeout_s),
            "max_concurrency": str(provider.max_concurrency), "enabled": "on", "mock_options": "{}",
            "models-TOTAL_FORMS": "0", "models-INITIAL_FORMS": "0"}
    data.update(overrides)
    return data


@pytest.fixture
def provider(db):
    return Provider.objects.create(name="acme", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                   base_url="http://127.0.0.1:9/v1", api_key_env="ACME_API_KEY")


def change_in_live_admin(server, user, path: str, form: dict) -> httpx.Response:
    """A signed-in admin's POST to an admin change form on the live server, CSRF token and all."""
    with httpx.Client(base_url=server.url, headers={"cookie": session_cookie(user)}, timeout=10) as browser:
        page = browser.get(path)
        assert page.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        cookie = f"{browser.headers['cookie']}; csrftoken={page.cookies.get('csrftoken') or token}"
        return browser.post(path, data={**form, "csrfmiddlewaretoken": token},
                            headers={"cookie": cookie, "referer": f"{server.url}{path}"})


def test_a_base_url_changed_in_the_admin_is_in_the_trail_with_old_and_new_and_the_chain_holds(
        podium_server, admin_user, provider, capsys):
    path = f"/admin/orchestration/provider/{provider.pk}/change/"
    response = change_in_live_admin(podium_server, admin_user, path,
                                    provider_form(provider, base_url="http://10.0.0.7:8080/v1"))

    assert response.status_code == 302, response.text[:500]
    provider.refresh_from_db()
    assert provider.base_url == "http://10.0.0.7:8080/v1"
    [entry] = entries("config.provider.changed", "provider:acme")
    assert entry.actor == "user:admin"
    assert entry.data["diff"] == {"base_url": ["http://127.0.0.1:9/v1", "http://10.0.0.7:8080/v1"]}
    [created] = entries("config.provider.created", "provider:acme")
    assert created.actor == "system" and created.data["diff"]["api_key_env"] == [None, "ACME_API_KEY"]
    call_command("verify_audit")
    assert "audit chain intact" in capsys.readouterr().out

    tamper = ("UPDATE orchestration_auditevent SET data = %s WHERE id = %s",
              [json.dumps({"diff": {"base_url": ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"]}}), entry.pk])
    if connection.vendor == "postgresql":  # its trigger refuses the update outright (migration 0005)
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(*tamper)
        return
    with connection.cursor() as cursor:  # around the ORM, as a database user could
        cursor.execute(*tamper)
    with pytest.raises(CommandError, match=f"broken at event {entry.pk} .*config.provider.changed provider:acme"):
        call_command("verify_audit")


def test_the_test_clients_admin_post_is_attributed_too_and_unchanged_saves_record_nothing(client, admin_user,
                                                                                          provider):
    client.force_login(admin_user)
    path = f"/admin/orchestration/provider/{provider.pk}/change/"
    assert client.post(path, provider_form(provider, timeout_s="12.5", is_local="on")).status_code == 302
    assert client.post(path, provider_form(provider, timeout_s="12.5", is_local="on")).status_code == 302
    [entry] = entries("config.provider.changed")
    assert entry.actor == "user:admin"
    assert entry.data["diff"] == {"timeout_s": [60.0, 12.5], "is_local": [False, True]}


def test_an_api_keys_creation_records_no_hash_and_no_raw_key(db):
    with acting_as("user:ops"):
        key, raw = APIKey.issue("billing", budget_usd_per_day="2.50")
        key.revoke()
    [created] = entries("config.api_key.created", f"api_key:{key.prefix}")
    assert created.actor == "user:ops"
    assert created.data["diff"]["key_hash"] == [None, "[hidden]"]
    assert created.data["diff"]["budget_usd_per_day"] == [None, "2.50"]
    [revoked] = entries("config.api_key.changed", f"api_key:{key.prefix}")
    assert list(revoked.data["diff"]) == ["revoked_at"]
    everything = json.dumps(list(AuditEvent.objects.values("actor", "subject", "data")))
    assert key.key_hash not in everything and raw not in everything and raw[10:] not in everything


def test_a_teams_budgets_members_and_allowed_models_are_recorded(db, admin_user, provider):
    model = LLMModel.objects.create(provider=provider, alias="acme-one", upstream_name="acme-1")
    route = RouteAlias.objects.create(name="acme-best", candidates=["acme-one"])
    with acting_as("user:admin"):
        team = Team.objects.create(slug="legal", name="Legal")
        team.budget_usd_per_month = "100"
        team.tokens_per_minute = 5000
        team.save()
        team.allowed_models.add(model)
        route.teams.add(team)  # from the other side
        team.allowed_models.remove(model)
        membership = TeamMembership.objects.create(team=team, user=admin_user, role="reviewer")
        membership.role = "admin"
        membership.save()
        membership.delete()

    budget, added, route_added, removed = entries("config.team.changed", "team:legal")
    assert budget.data["diff"] == {"budget_usd_per_month": [None, "100"], "tokens_per_minute": [None, 5000]}
    assert added.data["diff"] == {"allowed_models": [[], ["acme-one"]]}
    assert route_added.data["diff"] == {"allowed_route_aliases": [[], ["acme-best"]]}
    assert removed.data["diff"] == {"allowed_models": [["acme-one"], []]}
    subject = "team_membership:legal/admin"
    assert entries("config.team_membership.created", subject)[0].data["diff"] == {
        "team": [None, "legal"], "user": [None, "admin"], "role": [None, "reviewer"]}
    assert entries("config.team_membership.changed", subject)[0].data["diff"] == {"role": ["reviewer", "admin"]}
    assert entries("config.team_membership.deleted", subject)[0].data["diff"]["role"] == ["admin", None]
    assert {entry.actor for entry in AuditEvent.objects.filter(action__startswith="config.team")} == {"user:admin"}
    call_command("verify_audit")


def test_models_routes_and_workflows_changed_from_code_are_the_systems(db, provider):
    model = LLMModel.objects.create(provider=provider, alias="acme-one", upstream_name="acme-1")
    model.allowed_data_classes = ["public", "sensitive"]
    model.price_in_per_m = "1.25"
    model.save()
    RouteAlias.objects.create(name="acme-best", candidates=["acme-one"]).delete()
    save_workflow(slug="summarise", spec={"root": {"type": "call", "model": "acme-one"}})
    save_workflow(slug="summarise", description="Sums up")

    [changed] = entries("config.model.changed", "model:acme-one")
    assert changed.actor == "system"
    assert changed.data["diff"] == {"price_in_per_m": ["0.000000", "1.25"],
                                    "allowed_data_classes": [[], ["public", "sensitive"]]}
    assert entries("config.model.created", "model:acme-one")[0].data["diff"]["provider"] == [None, "acme"]
    assert entries("config.route_alias.deleted", "route_alias:acme-best")[0].data["diff"]["candidates"] == [
        ["acme-one"], None]
    assert entries("config.workflow.changed", "workflow:summarise")[0].data["diff"] == {"description": ["", "Sums up"]}
    # The version keeps its own entry, once.
    assert len(entries("workflow.version_created", "workflow:summarise")) == 1
    assert not entries("config.workflow_version.created")
    call_command("verify_audit")


def test_the_workflows_api_records_its_caller(client, admin_user, provider):
    LLMModel.objects.create(provider=provider, alias="acme-one", upstream_name="acme-1")
    client.force_login(admin_user)
    response = client.post("/api/workflows/", {"slug": "digest", "spec": {"root": {"type": "call", "model": "acme-one"}}},
                           content_type="application/json")
    assert response.status_code == 201, response.content
    response = client.patch("/api/workflows/digest/", {"enabled": False}, content_type="application/json")
    assert response.status_code == 200, response.content
    [created] = entries("config.workflow.created", "workflow:digest")
    [disabled] = entries("config.workflow.changed", "workflow:digest")
    assert created.actor == disabled.actor == "user:admin"
    assert disabled.data["diff"] == {"enabled": [True, False]}
    assert entries("workflow.version_created", "workflow:digest")[0].actor == "user:admin"


@pytest.mark.parametrize("name, value, expected", [
    ("api_key_env", "OPENAI_API_KEY", "OPENAI_API_KEY"),  # the variable's name, not its value
    ("options", {"api_key": "abc", "client_secret": "x", "temperature": 0.2},
     {"api_key": "[hidden]", "client_secret": "[hidden]", "temperature": 0.2}),
    ("base_url", "https://bob:hunter2@llm.example/v1", "https://bob:[hidden]@llm.example/v1"),
    ("base_url", "https://llm.example/v1beta?key=AIzaSyA1234", "https://llm.example/v1beta?key=[hidden]"),
    ("base_url", "https://x.azure.example/openai?api-version=2024-06-01&api-key=abc",
     "https://x.azure.example/openai?api-version=2024-06-01&api-key=[hidden]"),
    ("base_url", "https://llm.example/v1?region=eu&monkey=1", "https://llm.example/v1?region=eu&monkey=1"),
    ("note", "sk-live-abcdefghijklmnop", "[hidden]"),
    ("tokens_per_minute", 5000, 5000),
    ("upstream_name", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022"),
])
def test_secrets_are_masked_by_name_and_by_look(name, value, expected):
    assert mask(name, value) == expected


def test_the_actor_is_the_requests_key_else_its_user_else_anonymous(admin_user):
    from types import SimpleNamespace

    from django.contrib.auth.models import AnonymousUser

    from orchestration.config_audit import request_actor

    assert request_actor(SimpleNamespace(auth=SimpleNamespace(prefix="pdm_AbCdE"), user=AnonymousUser())) == \
        "key:pdm_AbCdE"
    assert request_actor(SimpleNamespace(auth=None, user=admin_user)) == "user:admin"
    assert request_actor(SimpleNamespace(user=AnonymousUser())) == "anonymous"


def test_a_key_issued_in_the_admin_is_recorded_without_its_hash_or_raw_value(client, admin_user):
    client.force_login(admin_user)
    response = client.post("/admin/orchestration/apikey/add/", {"name": "ci", "scopes": '["chat"]'}, follow=True)
    assert response.status_code == 200
    raw = re.search(r"<code>(pdm_[^<]+)</code>", response.content.decode()).group(1)
    key = APIKey.objects.get(name="ci")
    [created] = entries("config.api_key.created", f"api_key:{key.prefix}")
    assert created.actor == "user:admin" and created.data["diff"]["name"] == [None, "ci"]
    everything = json.dumps(list(AuditEvent.objects.values("actor", "subject", "data")))
    assert key.key_hash not in everything and raw not in everything and raw[10:] not in everything

"""Security: no secret anywhere it could leak, production settings pass `check --deploy`, CSRF on every
form, login rate limiting, API key scopes on /api."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from orchestration.models import APIKey, LLMModel, Provider
from orchestration.models.keys import SCOPES
from orchestration.recording import writer
from orchestration.registry import bump_version
from tests.dashboardhelpers import frames_until, subscribe
from tests.livehelpers import connect_dashboard, session_cookie

ROOT = Path(__file__).resolve().parents[1]


# --- no secret leaks -------------------------------------------------------------------------------------------

def test_no_secret_appears_in_api_responses_admin_pages_logs_or_websocket_frames(
        podium_server, fake_upstream, admin_user, staff_user, caplog, monkeypatch):
    provider_secret = "sk-live-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("PODIUM_SCAN_UPSTREAM_KEY", provider_secret)
    provider = Provider.objects.create(name="guarded", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                       base_url=fake_upstream.base_url, api_key_env="PODIUM_SCAN_UPSTREAM_KEY",
                                       timeout_s=2)
    LLMModel.objects.create(provider=provider, alias="guarded-gpt", upstream_name="fake-gpt-1",
                            price_in_per_m="1", price_out_per_m="2")
    LLMModel.objects.create(provider=provider, alias="guarded-broken", upstream_name="fail-500",
                            price_in_per_m="1", price_out_per_m="2")
    bump_version()
    key, raw_key = APIKey.issue("scanned", scopes=list(SCOPES))
    caplog.set_level(logging.DEBUG)
    headers = {"authorization": f"Bearer {raw_key}"}
    texts: list[str] = []
    cookie = session_cookie(staff_user)

    async def live_session():
        async with connect_dashboard(podium_server, cookie) as socket:
            texts.append(json.dumps(await subscribe(socket, "overview")))
            texts.append(json.dumps(await subscribe(socket, "runs")))
            async with httpx.AsyncClient(headers=headers, timeout=10) as client:
                for model in ("guarded-gpt", "guarded-broken"):
                    response = await client.post(f"{podium_server.url}/v1/chat/completions", json={
                        "model": model, "messages": [{"role": "user", "content": f"scan {model}"}]})
                    texts.append(response.text + json.dumps(dict(response.headers)))
                    run_id = response.headers["x-podium-run-id"]
                    frames = await frames_until(socket, lambda f: f"run.{run_id}" in (f.get("changes") or {})
                                                and (f["changes"][f"run.{run_id}"] or {}).get("finished_ts"))
                    texts.extend(json.dumps(frame) for frame in frames)

    asyncio.run(live_session())
    writer.flush()
    assert fake_upstream.requests[0]["headers"]["Authorization"] == f"Bearer {provider_secret}"  # it is in use

    with httpx.Client(base_url=podium_server.url, headers=headers, timeout=10) as client:
        run_ids = [run["id"] for run in client.get("/api/runs/").json()["results"]]
        assert len(run_ids) == 2
        for path in ["/v1/models", "/api/providers/", f"/api/providers/{provider.pk}/", "/api/models/",
                     "/api/runs/", *(f"/api/runs/{run_id}/" for run_id in run_ids), "/api/workflows/",
                     "/api/reviews/", "/api/schema/", "/metrics", "/readyz"]:
            response = client.get(path)
            assert response.status_code == 200, path
            texts.append(response.text)

    admin = Client()
    admin.force_login(admin_user)
    for path in ["/admin/orchestration/provider/", f"/admin/orchestration/provider/{provider.pk}/change/",
                 "/admin/orchestration/llmmodel/", "/admin/orchestration/apikey/",
                 f"/admin/orchestration/apikey/{key.pk}/change/", "/admin/orchestration/run/",
                 *(f"/admin/orchestration/run/{run_id}/change/" for run_id in run_ids), "/", "/runs/", "/models/"]:
        response = admin.get(path)
        assert response.status_code == 200, path
        texts.append(response.content.decode())

    texts.append(caplog.text)
    texts.extend(str(record.exc_info) for record in caplog.records if record.exc_info)
    assert any("guarded-broken" in text for text in texts)  # the scan did see the calls
    for text in texts:
        assert provider_secret not in text
        assert raw_key not in text
        assert key.key_hash not in text  # even the digest stays in the database


# --- production settings --------------------------------------------------------------------------------------

def test_production_settings_pass_check_deploy_with_the_documented_variables(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "DJANGO_", "SECURE_", "DEBUG"))}
    env.update({"PODIUM_PRODUCTION": "true", "SECRET_KEY": secrets.token_urlsafe(50),
                "ALLOWED_HOSTS": "podium.example.com", "CSRF_TRUSTED_ORIGINS": "https://podium.example.com",
                "PODIUM_VAR_DIR": str(tmp_path)})
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "SECRET_KEY"))}
    env.update({"PODIUM_PRODUCTION": "true", "PODIUM_VAR_DIR": str(tmp_path)})
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "SECRET_KEY must be set" in done.stderr


# --- CSRF ---------------------------------------------------------------------------------------------------------

def template_files() -> list[Path]:
    dirs = [ROOT / "templates", *ROOT.glob("*/templates")]
    return [path for directory in dirs for path in directory.rglob("*.html")]


def test_every_post_form_in_the_templates_carries_a_csrf_token():
    for path in template_files():
        for form in re.findall(r"<form\b[^>]*>.*?</form>", path.read_text(), flags=re.S | re.I):
            if re.search(r"method\s*=\s*[\"']?post", form, flags=re.I):
                assert "{% csrf_token %}" in form, f"{path}: a POST form without {{% csrf_token %}}"
    assert template_files()  # the scan looked somewhere


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def test_no_django_view_opts_out_of_csrf_except_drf_views_that_enforce_it_for_sessions():
    from rest_framework.authentication import SessionAuthentication

    exempt = []
    for route, view in walk(get_resolver().url_patterns):
        if not getattr(view, "csrf_exempt", False):
            continue
        view_class = getattr(view, "cls", None)  # DRF: APIView.as_view() is csrf_exempt by design...
        if view_class is None:
            exempt.append(route)
            continue
        for cls in view_class.authentication_classes:  # ...and its session authentication enforces CSRF
            if issubclass(cls, SessionAuthentication):
                assert cls.enforce_csrf is SessionAuthentication.enforce_csrf, f"{route}: {cls} skips CSRF"
    assert exempt == []
    assert "rest_framework.authentication.SessionAuthentication" in settings.REST_FRAMEWORK[
        "DEFAULT_AUTHENTICATION_CLASSES"]


def test_forms_and_session_writes_without_a_csrf_token_are_refused(admin_user, staff_user):
    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/admin/login/", {"username": "admin", "password": "admin-password-1"})
    assert response.status_code == 403
    strict.force_login(staff_user)
    response = strict.post("/api/runs/", {"workflow": "x", "input": "y"}, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_api_key_requests_need_no_csrf_token(db):
    _, raw = APIKey.issue("no-csrf", scopes=["runs"])
    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/api/runs/", {"workflow": "missing", "input": "y"}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 400  # past CSRF: the workflow does not exist


# --- login rate limiting ------------------------------------------------------------------------------------------

def admin_login(client: Client, username: str, password: str, address: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password},
                       REMOTE_ADDR=address)


def test_the_admin_login_locks_a_username_out_after_repeated_failures(django_user_model):
    django_user_model.objects.create_superuser("locked", "l@example.com", "right-password-1")
    client = Client()
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES):
        assert admin_login(client, "locked", "wrong", "192.0.2.10").status_code == 200
    refused = admin_login(client, "locked", "right-password-1", "192.0.2.11")  # even from elsewhere
    assert refused.status_code == 200 and "_auth_user_id" not in client.session


def test_a_login_below_the_limit_works_and_clears_the_count(django_user_model):
    django_user_model.objects.create_superuser("careful", "c@example.com", "right-password-1")
    client = Client()
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES - 1):
        admin_login(client, "careful", "wrong", "192.0.2.20")
    assert admin_login(client, "careful", "right-password-1", "192.0.2.20").status_code == 302
    client.logout()
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES - 1):  # the success reset the username's count
        admin_login(client, "careful", "wrong", "192.0.2.21")
    assert admin_login(client, "careful", "right-password-1", "192.0.2.21").status_code == 302


def test_one_address_guessing_many_usernames_is_locked_out(django_user_model):
    django_user_model.objects.create_superuser("victim", "v@example.com", "right-password-1")
    client = Client()
    for attempt in range(settings.PODIUM_LOGIN_MAX_FAILURES * 5):
        admin_login(client, f"guess-{attempt}", "wrong", "198.51.100.7")
    assert admin_login(client, "victim", "right-password-1", "198.51.100.7").status_code == 200
    assert admin_login(client, "victim", "right-password-1", "198.51.100.8").status_code == 302


# --- API key scopes --------------------------------------------------------------------------------------------------

SCOPED_ENDPOINTS = [
    # (method, path, scopes that grant it)
    ("get", "/api/runs/", {"runs", "runs:read"}),
    ("post", "/api/runs/", {"runs"}),
    ("get", "/api/workflows/", {"runs", "runs:read"}),
    ("get", "/api/reviews/", {"reviews:decide"}),
]


@pytest.mark.parametrize("method,path,granting", SCOPED_ENDPOINTS)
@pytest.mark.parametrize("scope", SCOPES)
def test_each_api_endpoint_answers_only_keys_with_a_granting_scope(db, client, method, path, granting, scope):
    _, raw = APIKey.issue(f"only-{scope}", scopes=[scope])
    response = getattr(client, method)(path, {"workflow": "missing", "input": "x"} if method == "post" else None,
                                       content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    if scope in granting:
        assert response.status_code != 403
    else:
        assert response.status_code == 403


def test_a_key_without_the_chat_scope_cannot_call_v1(podium_server, demo_registry):
    _, raw = APIKey.issue("no-chat", scopes=["runs"])
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {raw}"},
                          json={"model": "swift-mini", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_scope"

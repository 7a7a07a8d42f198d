"""Security: no secret anywhere it could leak, production settings pass `check --deploy`, CSRF on every
form, security headers on every page, the /metrics token, API key scopes on /api. Login throttling:
tests/test_login_throttle.py."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver

from orchestration.gateway.writer import writer
from orchestration.models import APIKey, LLMModel, Provider
from orchestration.models.keys import SCOPES
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
    cookie = session_cookie(admin_user)  # the control room shows a superuser every team

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
                "PODIUM_METRICS_TOKEN": secrets.token_urlsafe(24), "PODIUM_VAR_DIR": str(tmp_path)})
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


# --- security headers ----------------------------------------------------------------------------------------

def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def test_every_html_page_carries_the_security_headers_from_the_server(podium_server, staff_user, admin_user):
    review_page = "/reviews/"
    pages = {
        "/": admin_user, "/runs/": admin_user, f"/runs/{uuid.uuid4()}/": admin_user, "/models/": admin_user,
        review_page: admin_user, "/admin/": admin_user, "/admin/orchestration/apikey/": admin_user,
        "/admin/login/": None, "/login/": None, "/api/docs/": None,
    }
    for path, user in pages.items():
        headers = {"Cookie": session_cookie(user)} if user else {}
        response = httpx.get(podium_server.url + path, headers=headers, timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html"), path
        csp = csp_directives(response.headers["content-security-policy"])
        assert csp["script-src"] == ["'self'"], path  # no inline script, nothing from elsewhere
        assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"], path
        assert csp["base-uri"] == ["'self'"] and csp["connect-src"] == ["'self'"], path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert "<script>" not in response.text and 'http-equiv="Content-Security-Policy"' not in response.text, path


def test_the_api_docs_load_swagger_ui_from_this_server_only(podium_server):
    page = httpx.get(f"{podium_server.url}/api/docs/", timeout=10).text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui-bundle.js" in source for source in sources)
    for source in sources:
        assert source.startswith("/"), source  # no CDN: a page that works offline and tells no third party
        assert httpx.get(podium_server.url + source, timeout=10).status_code == 200, source


# --- /metrics token -----------------------------------------------------------------------------------------

def podium_with(**overrides):
    return override_settings(PODIUM={**settings.PODIUM, **overrides})


def test_in_production_metrics_need_the_token_even_from_an_allowed_network(podium_server):
    url = f"{podium_server.url}/metrics"
    with override_settings(PRODUCTION=True), podium_with(METRICS_TOKEN="scrape-token-1"):
        refused = httpx.get(url, timeout=10)
        assert refused.status_code == 403 and "PODIUM_METRICS_TOKEN" in refused.text and "podium_" not in refused.text
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 403
        scraped = httpx.get(url, headers={"Authorization": "Bearer scrape-token-1"}, timeout=10)
        assert scraped.status_code == 200 and "podium_" in scraped.text
    assert httpx.get(url, timeout=10).status_code == 200  # outside production loopback is an allowed network


def test_in_production_without_a_token_metrics_tell_the_operator_to_set_one_and_a_check_warns(podium_server):
    from django.core.checks import run_checks

    with override_settings(PRODUCTION=True), podium_with(METRICS_TOKEN=""):
        refused = httpx.get(f"{podium_server.url}/metrics", timeout=10)  # from loopback, an allowed network
        assert refused.status_code == 403 and "set it" in refused.text and "PODIUM_METRICS_TOKEN" in refused.text
        assert "podium.W001" in [message.id for message in run_checks()]
    assert "podium.W001" not in [message.id for message in run_checks()]


def test_the_metrics_network_check_sees_the_client_behind_a_trusted_proxy_not_the_proxy(client, db):
    # Django's test client, not the live server: uvicorn itself rewrites the peer from X-Forwarded-For when it
    # is loopback (its forwarded_allow_ips), and this is about what Podium does with the header.
    proxied = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    with podium_with(TRUSTED_PROXIES=[ipaddress.ip_network("127.0.0.0/8")]):
        assert client.get("/metrics", **proxied).status_code == 403  # the world, through the proxy
        assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200
    # The peer is no trusted proxy: the header is anyone's to write, and the peer (loopback) is what counts.
    assert client.get("/metrics", **proxied).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 403


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

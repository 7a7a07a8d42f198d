"""Handshakes and /v1 requests are checked like Django checks its pages: Host in ALLOWED_HOSTS, Origin exact."""
import json
import socket

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.livehelpers import session_cookie


def open_socket(server, *, origin: str | None, cookie: str | None = None, key: str | None = None,
                host: str | None = None, headers: dict | None = None):
    """A dashboard socket; `host` sends another Host header over the same loopback connection."""
    headers = dict(headers or {})
    if cookie:
        headers["Cookie"] = cookie
    if key:
        headers["Authorization"] = f"Bearer {key}"
    uri = f"ws://{host or '127.0.0.1'}:{server.port}/ws/dashboard/"
    return connect(uri, additional_headers=headers, origin=origin, open_timeout=5,
                   sock=socket.create_connection(("127.0.0.1", server.port)))


def overview_snapshot(ws) -> dict:
    ws.send(json.dumps({"type": "subscribe", "topic": "overview"}))
    while True:
        frame = json.loads(ws.recv(timeout=5))
        if frame["type"] == "snapshot":
            return frame


def refusal_status(server, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_socket(server, **kwargs)
    return refused.value.response.status_code


def test_a_staff_socket_from_its_own_origin_is_accepted(podium_server, admin_user):
    with open_socket(podium_server, origin=f"http://127.0.0.1:{podium_server.port}",
                     cookie=session_cookie(admin_user)) as ws:
        assert overview_snapshot(ws)["topic"] == "overview"


@pytest.mark.parametrize("origin", [
    "http://127.0.0.1:{other_port}",  # same host, another port: another site
    "https://127.0.0.1:{port}",  # same host and port, another scheme
    "http://127.0.0.1",  # the default port is a port too
    "http://localhost:{port}",
    "null",  # sandboxed frames and file:// pages
], ids=["other-port", "other-scheme", "default-port", "other-host", "null"])
def test_a_staff_socket_from_another_origin_is_refused(podium_server, admin_user, origin):
    origin = origin.format(port=podium_server.port, other_port=podium_server.port + 1)
    assert refusal_status(podium_server, origin=origin, cookie=session_cookie(admin_user)) == 403


@pytest.mark.parametrize("trusted, origin", [
    ("https://podium.example", "https://podium.example"),
    ("https://podium.example:8443", "https://podium.example:8443"),
    ("https://*.example.org", "https://ops.example.org"),
])
def test_a_staff_socket_from_a_trusted_origin_is_accepted(podium_server, admin_user, settings, trusted, origin):
    settings.CSRF_TRUSTED_ORIGINS = [trusted]
    with open_socket(podium_server, origin=origin, cookie=session_cookie(admin_user)) as ws:
        assert overview_snapshot(ws)["topic"] == "overview"


def test_a_trusted_origin_is_trusted_only_on_its_own_port(podium_server, admin_user, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://podium.example"]
    assert refusal_status(podium_server, origin="https://podium.example:8443", cookie=session_cookie(admin_user)) == 403


def test_a_handshake_without_origin_is_not_taken_for_a_browser_session(podium_server, admin_user):
    # Browsers always send Origin; without one the cookie is ignored and only an API key counts.
    assert refusal_status(podium_server, origin=None, cookie=session_cookie(admin_user)) == 403


def test_a_program_without_origin_watches_with_an_events_key(podium_server, watcher_key):
    with open_socket(podium_server, origin=None, key=watcher_key) as ws:
        assert overview_snapshot(ws)["topic"] == "overview"


def test_a_program_without_origin_still_needs_the_events_scope(podium_server, api_key):
    assert refusal_status(podium_server, origin=None, key=api_key) == 403


def test_a_handshake_for_a_host_outside_allowed_hosts_is_refused_even_from_its_own_origin(podium_server, watcher_key):
    # DNS rebinding: the attacker's name points at us, so the page's origin matches the Host it sends.
    assert refusal_status(podium_server, host="rebound.example", origin=f"http://rebound.example:{podium_server.port}",
                          key=watcher_key) == 403


@pytest.mark.parametrize("behind_tls_proxy", [True, False])
def test_the_proxy_scheme_header_counts_only_when_configured(podium_server, admin_user, settings, behind_tls_proxy):
    # Not X-Forwarded-Proto: uvicorn itself applies that one from loopback peers (its forwarded_allow_ips).
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_TLS_TERMINATED", "yes") if behind_tls_proxy else None
    kwargs = {"origin": f"https://127.0.0.1:{podium_server.port}", "cookie": session_cookie(admin_user),
              "headers": {"X-TLS-Terminated": "yes"}}
    if behind_tls_proxy:
        with open_socket(podium_server, **kwargs) as ws:
            assert overview_snapshot(ws)["topic"] == "overview"
    else:
        assert refusal_status(podium_server, **kwargs) == 403


def test_behind_a_tls_proxy_a_plain_http_origin_is_refused(podium_server, admin_user, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_TLS_TERMINATED", "yes")
    assert refusal_status(podium_server, origin=f"http://127.0.0.1:{podium_server.port}",
                          cookie=session_cookie(admin_user), headers={"X-TLS-Terminated": "yes"}) == 403


def test_v1_answers_a_host_outside_allowed_hosts_with_a_400_in_openai_format(podium_server, api_key, demo_registry):
    response = httpx.post(f"{podium_server.url}/v1/chat/completions",
                          headers={"authorization": f"Bearer {api_key}", "host": "rebound.example"},
                          json={"model": "swift-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "The Host header names a host this server does not serve (ALLOWED_HOSTS).",
        "type": "invalid_request_error", "param": "host", "code": "invalid_host"}
    assert "x-podium-run-id" not in response.headers


def test_v1_serves_every_allowed_host(podium_server, api_key, demo_registry):
    for host in (f"127.0.0.1:{podium_server.port}", f"localhost:{podium_server.port}", "localhost"):
        response = httpx.get(f"{podium_server.url}/v1/models",
                             headers={"authorization": f"Bearer {api_key}", "host": host})
        assert response.status_code == 200, host


def test_v1_follows_a_change_of_allowed_hosts(podium_server, api_key, demo_registry, settings):
    headers = {"authorization": f"Bearer {api_key}"}
    assert httpx.get(f"{podium_server.url}/v1/models", headers=headers).status_code == 200
    settings.ALLOWED_HOSTS = ["podium.example"]
    assert httpx.get(f"{podium_server.url}/v1/models", headers=headers).status_code == 400
    assert httpx.get(f"{podium_server.url}/v1/models", headers={**headers, "host": "podium.example"}).status_code == 200

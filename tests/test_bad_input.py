"""Garbage in, a clear 4xx out: oversized bodies, deep JSON, invalid UTF-8 and unknown fields on /api and /v1."""
import httpx
import pytest
from django.conf import settings

from orchestration.models import APIKey

DEEP_JSON = b"[" * 5000 + b"]" * 5000
INVALID_UTF8 = b'{"model": "swift-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}'


@pytest.fixture
def runs_key(db) -> str:
    _, raw = APIKey.issue("bad-input", scopes=["chat", "runs", "runs:read", "reviews:decide"])
    return raw


def v1(server, key, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", content=body, timeout=30,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json"})


def api(client, key, path, body: bytes):
    return client.generic("POST", path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.parametrize("body,status,words", [
    (b"x" * (4 * 1024 * 1024 + 1), 413, "larger than"),
    (DEEP_JSON, 400, "nested too deeply"),
    (INVALID_UTF8, 400, "not valid UTF-8"),
    (b"{\"model\": ", 400, "not valid JSON"),
    (b"[]", 400, "must be a JSON object"),
    (b'{"model": "swift-mini", "messages": "hello"}', 400, "'messages'"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', 400, "'model'"),
])
def test_v1_answers_bad_bodies_with_a_clear_openai_error(podium_server, demo_registry, api_key, body, status, words):
    response = v1(podium_server, api_key, body)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize("body,status,words", [
    (b'{"workflow": "w", "input": "' + b"x" * (4 * 1024 * 1024) + b'"}', 413, "larger than"),
    (DEEP_JSON, 400, "nested deeper than"),
    (b'{"workflow": "w", "input": {"a": ' * 70 + b"1" + b"}" * 140, 400, "nested deeper than"),
    (b'{"workflow": "w", "input": "\xff"}', 400, "not valid UTF-8"),
    (b'{"workflow": ', 400, "not valid JSON"),
])
def test_api_answers_bad_bodies_with_a_clear_4xx(client, runs_key, body, status, words):
    response = api(client, runs_key, "/api/runs/", body)
    assert response.status_code == status
    assert words in response.json()["detail"]


@pytest.mark.parametrize("path,body", [
    ("/api/runs/", b'{"workflow": "w", "input": "x", "budjet_usd": 5}'),
    ("/api/reviews/00000000-0000-0000-0000-000000000000/approve/", b'{"coment": "typo"}'),
])
def test_api_names_unknown_fields_instead_of_ignoring_them(client, runs_key, path, body):
    response = api(client, runs_key, path, body)
    assert response.status_code == 400
    unknown = next(name for name in ("budjet_usd", "coment") if name.encode() in body)
    assert response.json()[unknown] == ["Unknown field."]


def test_staff_writing_a_workflow_with_a_misspelt_field_is_told(admin_client):
    response = admin_client.post("/api/workflows/", {"slug": "w", "spce": {}}, content_type="application/json")
    assert response.status_code == 400 and response.json()["spce"] == ["Unknown field."]


def test_the_body_limit_is_the_documented_setting():
    assert settings.PODIUM["MAX_BODY_BYTES"] == 4 * 1024 * 1024

"""Probes and management commands."""
from io import StringIO

from django.core.management import call_command

from orchestration.models import APIKey, LLMModel, Provider
from orchestration.models.keys import hash_key


def test_healthz_answers_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_the_database(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


def test_create_api_key_prints_the_key_once_and_stores_its_digest(db):
    out = StringIO()
    call_command("create_api_key", "ci-bot", "--scope", "chat", stdout=out)
    raw = out.getvalue().strip()
    key = APIKey.objects.get(name="ci-bot")
    assert raw.startswith("pdm_") and key.key_hash == hash_key(raw) and key.scopes == ["chat"]


def test_seed_demo_is_idempotent_and_prints_credentials(db, tmp_path, settings):
    settings.VAR_DIR = tmp_path
    for _ in range(2):
        out = StringIO()
        call_command("podium_seed_demo", stdout=out)
    assert Provider.objects.filter(kind="mock").count() == 3
    assert LLMModel.objects.count() == 4
    assert APIKey.objects.filter(name="demo", revoked_at__isnull=True).count() == 1
    printed = out.getvalue()
    assert "password:" in printed and "pdm_" in printed
    assert (tmp_path / "demo-credentials.txt").read_text().strip() == printed.strip()

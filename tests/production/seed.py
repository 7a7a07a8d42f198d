"""Seeds a production-test database; run as a subprocess with DATABASE_URL set. Prints JSON on its last line.

Mock models without failures: `ci-fast` (5 ms) and `ci-slow` (SLOW_MS), workflows `quick` (one call),
`chain` (CHAIN_STEPS calls in sequence) and `gated` (always asks a person), a staff user with a session,
a reviewer, an API key with every scope and one limited to 20 requests a minute.
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Permission  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402

from orchestration.models import APIKey, LLMModel, Provider  # noqa: E402
from orchestration.registry import bump_version  # noqa: E402
from orchestration.workflows import save_workflow  # noqa: E402

SLOW_MS = int(os.environ.get("CI_SLOW_MS", "700"))
CHAIN_STEPS = int(os.environ.get("CI_CHAIN_STEPS", "6"))


def model(alias: str, latency_ms: int) -> None:
    provider, _ = Provider.objects.update_or_create(
        name=f"{alias}-provider", defaults={"kind": Provider.Kind.MOCK, "is_local": True, "max_concurrency": 512,
                                            "mock_options": {"seed": 7, "latency_ms": latency_ms, "failure_rate": 0,
                                                             "confidence": 0.9}})
    LLMModel.objects.update_or_create(alias=alias, defaults={
        "provider": provider, "upstream_name": alias, "tier": "fast", "price_in_per_m": "1.0",
        "price_out_per_m": "2.0", "quality_prior": 0.9, "allowed_data_classes": ["public", "internal"]})


def session_for(user) -> str:
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return session.session_key


model("ci-fast", 5)
model("ci-slow", SLOW_MS)
save_workflow(slug="quick", spec={"root": {"type": "call", "id": "answer", "model": "ci-fast", "prompt": "{{input}}"}})
save_workflow(slug="chain", spec={"root": {"type": "sequence", "id": "chain", "steps": [
    {"type": "call", "id": f"s{i}", "model": "ci-slow", "prompt": "{{previous}} step " + str(i)}
    for i in range(CHAIN_STEPS)]}})
save_workflow(slug="gated", spec={"root": {"type": "gate", "id": "review", "threshold": 1.0, "default_action": "approve",
                                          "node": {"type": "call", "id": "answer", "model": "ci-fast",
                                                   "prompt": "{{input}}"}}})
bump_version()
User = get_user_model()
staff, _ = User.objects.get_or_create(username="ci-operator", defaults={"is_staff": True, "is_superuser": True})
reviewer, _ = User.objects.get_or_create(username="ci-reviewer", defaults={"is_staff": True})
reviewer.user_permissions.add(Permission.objects.get(codename="decide_reviewitem"))
key, raw = APIKey.issue("ci", scopes=["chat", "runs", "runs:read", "reviews:decide", "events"])
limited, limited_raw = APIKey.issue("ci-limited", scopes=["chat"], requests_per_minute=20)
print(json.dumps({"api_key": raw, "api_key_id": key.id, "limited_key": limited_raw, "staff_session": session_for(staff),
                  "reviewer_session": session_for(reviewer), "reviewer_id": reviewer.id}))

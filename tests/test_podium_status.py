"""`manage.py podium_status`: the registry, provider reachability and an exit code cron can read."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from orchestration.models import LLMModel, Provider
from terminal.status import probe_request
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def status(*args) -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("podium_status", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def add_provider(name: str, kind: str, base_url: str, alias: str, **fields) -> Provider:
    provider = Provider.objects.create(name=name, kind=kind, base_url=base_url, **fields)
    LLMModel.objects.create(provider=provider, alias=alias, upstream_name=alias)
    return provider


def test_mock_providers_are_always_reachable(demo_registry):
    out, error = status()
    assert error is None
    for name in ("mock-fast", "mock-medium", "mock-large"):
        line = next(line for line in out.splitlines() if name in line)
        assert "yes" in line and "built in" in line
    assert "swift-mini" in out and "titan-ultra" in out
    assert "database ok" in out and out.strip().endswith("status: ok")


def test_a_provider_that_answers_http_is_reachable_whatever_its_kind(demo_registry, fake_upstream):
    add_provider("openai-like", "openai_compatible", fake_upstream.base_url, "fake-gpt")
    add_provider("anthropic-like", "anthropic", fake_upstream.root_url, "fake-claude")
    add_provider("ollama-like", "ollama", fake_upstream.root_url, "fake-llama")
    out, error = status("--json")
    assert error is None
    report = json.loads(out)
    checks = {p["name"]: p for p in report["providers"]}
    assert checks["openai-like"]["reachable"] and checks["openai-like"]["detail"] == "HTTP 200"
    assert checks["anthropic-like"]["reachable"] and checks["anthropic-like"]["detail"] == "HTTP 200"
    assert checks["ollama-like"]["reachable"]  # the fake has no /api/tags: a 404 still proves it answers
    assert report["ok"] is True


def test_an_unreachable_provider_fails_the_command_and_a_disabled_one_is_skipped(demo_registry):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    add_provider("gone", "openai_compatible", dead, "gone-model")
    add_provider("parked", "ollama", dead, "parked-model", enabled=False)
    out, error = status()
    assert error is not None and error.returncode == 1
    assert "gone (cannot connect" in str(error) and "parked" not in str(error)
    gone = next(line for line in out.splitlines() if line.startswith("│ gone"))
    parked = next(line for line in out.splitlines() if line.startswith("│ parked"))
    assert "NO" in gone and "skipped" in parked
    assert out.strip().endswith("status: UNHEALTHY")


def test_a_server_that_never_answers_is_unreachable_after_the_timeout(demo_registry):
    with socket.socket() as silent:  # accepts connections (backlog) but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        add_provider("mute", "openai_compatible", f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "mute-model")
        out, error = status("--timeout", "0.3", "--json")
    assert error is not None and error.returncode == 1
    mute = next(p for p in json.loads(out)["providers"] if p["name"] == "mute")
    assert mute["reachable"] is False and mute["detail"] == "no answer within 0.3s"


def test_probes_use_each_kinds_cheapest_endpoint_and_never_show_the_key():
    assert probe_request("openai_compatible", "https://api.example/v1/", "sk-1") == (
        "https://api.example/v1/models", {"authorization": "Bearer sk-1"})
    url, headers = probe_request("anthropic", "https://api.anthropic.example/v1", "sk-ant")
    assert url == "https://api.anthropic.example/v1/models" and headers["x-api-key"] == "sk-ant"
    assert probe_request("ollama", "http://gpu:11434/api", "") == ("http://gpu:11434/api/tags", {})


def test_the_key_itself_never_appears_in_the_report(demo_registry, fake_upstream, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-super-secret-value")
    add_provider("keyed", "openai_compatible", fake_upstream.base_url, "keyed-model", api_key_env="FAKE_UPSTREAM_KEY")
    out, _ = status("--json")
    text, _ = status()
    assert "sk-super-secret-value" not in out + text
    assert next(p for p in json.loads(out)["providers"] if p["name"] == "keyed")["reachable"]


@pytest.mark.django_db(transaction=True)
def test_as_a_process_it_exits_0_when_healthy_and_1_when_a_provider_is_down(demo_registry):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{settings.DATABASES['default']['NAME']}"}

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "manage.py"), "podium_status", "--timeout", "1"],
                              capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)

    healthy = run()
    assert healthy.returncode == 0, healthy.stderr
    add_provider("gone", "openai_compatible", f"http://127.0.0.1:{free_port()}/v1", "gone-model")
    down = run()
    assert down.returncode == 1
    assert "unhealthy: gone (cannot connect" in down.stderr

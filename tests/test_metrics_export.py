"""/metrics: Prometheus text for a token or an allowed network; counters fed by live events."""
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from orchestration import live
from orchestration.engine.events import model_health
from orchestration.gateway.writer import writer
from orchestration.models import ReviewItem, Run
from tests.conftest import wait_for


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def podium_with(**overrides):
    return override_settings(PODIUM={**settings.PODIUM, **overrides})


def test_a_v1_call_is_counted_per_model_and_provider(podium_server, demo_registry, api_key, client):
    before = client.get("/metrics").content.decode()
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "atlas-pro", "messages": [{"role": "user", "content": "count me"}]})
    assert response.status_code == 200
    usage = response.json()["usage"]
    labels = {"model": "atlas-pro", "provider": "mock-medium"}

    def counted():
        """The scrape once the call's events were observed: on the server loop's turn after the answer."""
        scrape = client.get("/metrics")
        finished = metric(scrape.content.decode(), "podium_runs_finished_total", kind="chat", status="succeeded")
        return scrape if finished > metric(before, "podium_runs_finished_total", kind="chat", status="succeeded") \
            else None

    after = wait_for(counted)
    assert after.status_code == 200 and after["Content-Type"].startswith("text/plain")
    text = after.content.decode()

    def delta(name, **extra):
        return metric(text, name, **labels, **extra) - metric(before, name, **labels, **extra)

    assert delta("podium_model_requests_total", status="succeeded") == 1
    assert delta("podium_model_tokens_total", direction="input") == usage["prompt_tokens"]
    assert delta("podium_model_tokens_total", direction="output") == usage["completion_tokens"]
    assert delta("podium_model_cost_usd_total") > 0
    assert delta("podium_model_latency_seconds_count") == 1
    assert 'podium_model_latency_seconds_bucket{le="0.005",model="atlas-pro"' in text
    assert metric(text, "podium_runs_finished_total", kind="chat", status="succeeded") >= 1


def test_circuit_states_review_backlog_and_runs_in_progress_are_exported(client, db):
    live.publish(model_health(model="flaky-model", state="open", in_flight=0))
    run = Run.objects.create(target="workflow/x", kind=Run.Kind.WORKFLOW, status="awaiting_review",
                             created_at="2026-01-01T00:00:00Z")
    ReviewItem.objects.create(run=run, status=ReviewItem.Status.PENDING)
    text = client.get("/metrics").content.decode()
    assert metric(text, "podium_circuit_state", model="flaky-model") == 2
    assert metric(text, "podium_review_backlog", status="pending") == 1
    assert metric(text, "podium_runs_in_progress", status="awaiting_review") == 1
    assert "podium_writer_pending_runs" in text
    live.publish(model_health(model="flaky-model", state="closed", in_flight=0))
    assert metric(client.get("/metrics").content.decode(), "podium_circuit_state", model="flaky-model") == 0


def test_the_oldest_running_run_s_age_is_exported(client, db):
    text = client.get("/metrics").content.decode()
    assert metric(text, "podium_oldest_running_run_age_seconds") == 0
    started = timezone.now() - timedelta(minutes=3)
    Run.objects.create(target="workflow/x", kind=Run.Kind.WORKFLOW, status="running", created_at=started,
                       started_at=started)
    age = metric(client.get("/metrics").content.decode(), "podium_oldest_running_run_age_seconds")
    assert 180 <= age < 240


@pytest.mark.parametrize("address", ["203.0.113.9", "10.1.2.3", "::ffff:8.8.8.8"])
def test_metrics_are_refused_outside_the_allowed_networks_without_the_token(client, db, address):
    response = client.get("/metrics", REMOTE_ADDR=address)
    assert response.status_code == 403 and b"podium_" not in response.content


def test_the_metrics_token_opens_metrics_from_anywhere_and_a_wrong_one_does_not(client, db):
    with podium_with(METRICS_TOKEN="scrape-me-please", METRICS_ALLOWED_NETWORKS=[]):
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me-please",
                          REMOTE_ADDR="203.0.113.9").status_code == 200
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess", REMOTE_ADDR="203.0.113.9").status_code == 403
        assert client.get("/metrics").status_code == 403  # loopback too, once the networks are "none"


def test_an_allowed_network_setting_admits_a_scraper_subnet(client, db):
    import ipaddress

    with podium_with(METRICS_ALLOWED_NETWORKS=[ipaddress.ip_network("10.0.0.0/8")]):
        assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="11.0.0.1").status_code == 403


def test_a_malformed_allowed_networks_value_stops_start_up_naming_the_variable(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from config.env import env_networks

    monkeypatch.setenv("PODIUM_METRICS_ALLOWED_NETWORKS", "10.0.0.0/8,not-a-network")
    with pytest.raises(ImproperlyConfigured, match="PODIUM_METRICS_ALLOWED_NETWORKS"):
        env_networks("PODIUM_METRICS_ALLOWED_NETWORKS", "127.0.0.0/8")
    writer.flush()

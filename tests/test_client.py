"""The Python client (podium.client): retries against a scripted server, the rest against a live Podium."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from aiohttp import web

from orchestration.gateway.writer import writer
from orchestration.models import APIKey, ReviewItem
from podium.client import AsyncPodiumClient, PodiumClient, PodiumError, RetryPolicy, Run, WaitTimeout, parse_retry_after


class ScriptedServer:
    """An aiohttp server on loopback answering each request with the next scripted (status, headers, body)."""

    def __init__(self, script: list[tuple[int, dict, dict]]):
        self.script = list(script)
        self.requests: list[dict] = []
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "headers": dict(request.headers), "body": body})
        status, headers, payload = self.script.pop(0) if self.script else (500, {}, {"detail": "script exhausted"})
        if status == 0:  # the request arrived, then the connection broke before any answer
            request.transport.close()
            return web.Response(status=500)
        return web.json_response(payload, status=status, headers=headers)

    def __enter__(self) -> "ScriptedServer":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)

        async def start():
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._thread = threading.Thread(target=lambda: (self._loop.run_until_complete(start()),
                                                        self._loop.run_forever()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


RUN_BODY = {"id": "5b7c8a8e-1111-4222-8333-944455556666", "status": "succeeded", "target": "workflow/demo",
            "output": "done", "cost_usd": "0.00001200", "tokens_in": 3, "tokens_out": 4,
            "steps": [{"id": "s1", "key": "draft", "node_id": "draft", "node_type": "call", "model_alias": "swift-mini",
                       "status": "succeeded", "tokens_in": 3, "tokens_out": 4, "cost_usd": "0.00001200",
                       "latency_ms": 5.0}]}


class Sleeps(list):
    """Records the waits the client asks for instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_a_429_is_retried_after_the_seconds_its_retry_after_names():
    script = [(429, {"Retry-After": "2"}, {"detail": "slow down"}), (200, {}, RUN_BODY)]
    sleeps = Sleeps()
    with ScriptedServer(script) as server, PodiumClient(server.url, "pdm_test", sleep=sleeps) as client:
        run = client.get_run(RUN_BODY["id"])
    assert run.status == "succeeded" and run.output == "done"
    assert sleeps == [2.0]
    assert [r["path"] for r in server.requests] == [f"/api/runs/{RUN_BODY['id']}/"] * 2
    assert server.requests[0]["headers"]["Authorization"] == "Bearer pdm_test"


def test_a_submission_whose_connection_broke_is_retried_with_the_same_idempotency_key():
    sleeps = Sleeps()
    with ScriptedServer([(0, {}, {}), (202, {}, {**RUN_BODY, "status": "queued"})]) as server, \
            PodiumClient(server.url, "k", sleep=sleeps) as client:
        run = client.submit_run("demo", "hello")
    assert run.id == RUN_BODY["id"] and len(server.requests) == 2 and len(sleeps) == 1
    keys = {r["headers"]["Idempotency-Key"] for r in server.requests}
    assert len(keys) == 1 and len(keys.pop()) == 32  # one fresh key, sent again on the retry
    # A request without a key that may have reached the server is never retried blind.
    with ScriptedServer([(0, {}, {}), (200, {}, RUN_BODY)]) as server, PodiumClient(server.url, "k") as client:
        with pytest.raises(PodiumError, match="failed"):
            client.request("POST", "/api/runs/x/cancel/")
    assert len(server.requests) == 1


def test_a_retry_after_given_as_an_http_date_is_honoured():
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    waited = parse_retry_after(format_datetime(later, usegmt=True), now=later.timestamp() - 30)
    assert 29 <= waited <= 31


def test_5xx_answers_back_off_exponentially_until_one_succeeds():
    script = [(503, {}, {}), (502, {}, {}), (500, {}, {}), (200, {}, RUN_BODY)]
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=4, base_s=0.5, jitter=False)
    with ScriptedServer(script) as server, PodiumClient(server.url, "k", retry=policy, sleep=sleeps) as client:
        assert client.get_run(RUN_BODY["id"]).succeeded
    assert sleeps == [0.5, 1.0, 2.0]


def test_jittered_backoff_stays_within_half_and_all_of_each_step():
    policy = RetryPolicy(base_s=1.0, max_backoff_s=4.0)
    import random
    rng = random.Random(3)
    for attempt, ceiling in enumerate([1.0, 2.0, 4.0, 4.0]):
        delay = policy.delay(attempt, None, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_the_client_gives_up_after_its_retries_with_the_last_error():
    script = [(429, {"Retry-After": "1"}, {"error": {"message": "rate limited", "code": "rate_limit"}})] * 3
    sleeps = Sleeps()
    with ScriptedServer(script) as server, PodiumClient(server.url, "k", retry=RetryPolicy(max_retries=2),
                                                        sleep=sleeps) as client:
        with pytest.raises(PodiumError) as raised:
            client.get_run("x")
    assert raised.value.status == 429 and raised.value.code == "rate_limit" and raised.value.retry_after == 1
    assert "rate limited" in str(raised.value)
    assert sleeps == [1.0, 1.0] and len(server.requests) == 3


def test_a_retry_after_longer_than_the_client_accepts_is_returned_at_once():
    script = [(429, {"Retry-After": "3600"}, {"detail": "come back in an hour"})]
    sleeps = Sleeps()
    with ScriptedServer(script) as server, PodiumClient(server.url, "k", sleep=sleeps) as client:
        with pytest.raises(PodiumError) as raised:
            client.get_run("x")
    assert raised.value.retry_after == 3600 and sleeps == []


def test_client_errors_are_not_retried():
    script = [(404, {}, {"detail": "Not found."})]
    sleeps = Sleeps()
    with ScriptedServer(script) as server, PodiumClient(server.url, "k", sleep=sleeps) as client:
        with pytest.raises(PodiumError, match="404: Not found."):
            client.get_run("x")
    assert sleeps == [] and len(server.requests) == 1


def test_the_async_client_retries_the_same_way_and_sleeps_for_real():
    script = [(429, {"Retry-After": "1"}, {}), (202, {}, {**RUN_BODY, "status": "queued"})]

    async def scenario(url):
        async with AsyncPodiumClient(url, "k") as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            run = await client.submit_run("demo", "hello", metadata={"ticket": 7}, budget_usd=0.5)
            return run, loop.time() - started

    with ScriptedServer(script) as server:
        run, elapsed = asyncio.run(scenario(server.url))
        bodies = [r["body"] for r in server.requests]
    assert run.status == "queued" and elapsed >= 0.9  # it really waited the second it was told to
    assert bodies[0] == bodies[1]
    assert httpx.Response(200, content=bodies[1]).json() == {
        "workflow": "demo", "input": "hello", "metadata": {"ticket": 7}, "budget_usd": 0.5}


def test_waiting_for_a_run_stops_at_review_and_times_out_with_the_last_state():
    running = {**RUN_BODY, "status": "running", "steps": []}
    script = [(200, {}, running), (200, {}, running), (200, {}, {**RUN_BODY, "status": "awaiting_review"})]
    with ScriptedServer(script) as server, PodiumClient(server.url, "k", sleep=Sleeps()) as client:
        run = client.wait_for_run(RUN_BODY["id"], timeout=60)
    assert run.awaiting_review and run.is_settled and not run.is_final

    script = [(200, {}, running)] * 50
    with ScriptedServer(script) as server, PodiumClient(server.url, "k") as client:
        with pytest.raises(WaitTimeout) as raised:
            client.wait_for_run(RUN_BODY["id"], timeout=0.3, poll_s=0.05)
    assert raised.value.run.status == "running"


def test_results_are_typed():
    run = Run.from_api(RUN_BODY)
    assert run.cost_usd == pytest.approx(0.000012) and isinstance(run.cost_usd, float)
    step = run.steps[0]
    assert (step.model, step.tokens_out, step.latency_ms) == ("swift-mini", 4, 5.0)


def test_the_client_imports_without_django_settings():
    code = ("import sys, podium.client; "
            "assert 'django.conf' not in sys.modules or not __import__('django.conf').conf.settings.configured; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- against a live Podium ------------------------------------------------------------------------

def test_the_client_reads_a_run_recorded_by_a_v1_call(podium_server, api_key, demo_registry):
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "swift-mini", "messages": [{"role": "user", "content": "typed?"}]})
    run_id = response.headers["x-podium-run-id"]
    writer.flush()
    with PodiumClient(podium_server.url, api_key) as client:
        run = client.wait_for_run(run_id, timeout=10)
    assert run.id == run_id and run.succeeded and run.target == "swift-mini"
    assert run.output == "[swift-mini] typed?"
    assert [s.model for s in run.steps] == ["swift-mini"] and run.steps[0].cost_usd > 0


def test_a_wrong_key_is_refused_without_retries(podium_server, demo_registry):
    sleeps = Sleeps()
    with PodiumClient(podium_server.url, "pdm_wrong", sleep=sleeps) as client:
        with pytest.raises(PodiumError) as raised:
            client.list_reviews()
    assert raised.value.status == 401 and sleeps == []


def test_a_key_with_the_reviews_scope_decides_a_review(podium_server, demo_registry):
    from tests.reviewhelpers import open_item

    item = open_item()
    _, key = APIKey.issue("reviewer-bot", scopes=["runs:read", "reviews:decide"])
    with PodiumClient(podium_server.url, key) as client:
        listed = client.list_reviews(run_id=str(item.run_id))
        assert [r.id for r in listed] == [str(item.id)]
        assert client.pending_review(str(item.run_id)).id == str(item.id)
        decided = client.decide_review(str(item.id), "approve", candidate=1, comment="looks right")
        assert decided.status == "approved" and decided.chosen_index == 1
        with pytest.raises(PodiumError) as raised:
            client.decide_review(str(item.id), "reject", comment="too late")
    assert raised.value.status == 409
    assert ReviewItem.objects.get(pk=item.pk).status == "approved"


def test_a_key_without_the_reviews_scope_cannot_decide(podium_server, api_key, demo_registry):
    from tests.reviewhelpers import open_item

    item = open_item()
    with PodiumClient(podium_server.url, api_key) as client:
        with pytest.raises(PodiumError) as raised:
            client.decide_review(str(item.id), "approve")
    assert raised.value.status == 403
    assert ReviewItem.objects.get(pk=item.pk).status == "pending"


def test_an_edit_needs_its_text_before_anything_is_sent():
    with PodiumClient("http://127.0.0.1:9", "k") as client:
        with pytest.raises(ValueError):
            client.decide_review("x", "edit")


SLOW_PAIR = {"root": {"type": "sequence", "id": "pair", "steps": [
    {"type": "call", "id": "first", "model": "swift-mini", "prompt": "{{input}}"},
    {"type": "call", "id": "second", "model": "atlas-pro", "prompt": "{{previous}}"},
]}}


def test_a_submitted_run_streams_its_steps_then_its_end_over_the_websocket(podium_server, demo_registry):
    from orchestration.models import Provider
    from orchestration.registry import bump_version
    from orchestration.workflows import save_workflow

    Provider.objects.filter(kind="mock").update(mock_options={"seed": 1, "latency_ms": 300, "failure_rate": 0})
    bump_version()
    save_workflow(slug="slow-pair", spec=SLOW_PAIR)
    _, key = APIKey.issue("streamer", scopes=["runs", "events"])
    with PodiumClient(podium_server.url, key) as client:
        run = client.submit_run("slow-pair", "stream me", metadata={"via": "client"})
        assert run.status in ("queued", "running")
        frames = list(client.run_events(run.id, timeout=30))
        final = client.get_run(run.id)
    assert frames[0]["type"] == "snapshot" and frames[0]["topic"] == f"run:{run.id}"
    steps = {}
    for frame in frames:
        values = frame["data"]["values"] if frame["type"] == "snapshot" else frame.get("changes", {})
        for key_name, row in values.items():
            if key_name.startswith("step.") and row:
                steps.setdefault(row["key"], set()).add(row["status"])
    assert steps["second"] >= {"succeeded"} and "running" in steps["second"]  # seen starting, then finished
    last = frames[-1]["data"]["values"] if frames[-1]["type"] == "snapshot" else frames[-1]["changes"]
    assert last["run"]["status"] == "succeeded"
    assert final.succeeded and final.output == "[atlas-pro] [swift-mini] stream me"
    assert final.metadata == {"via": "client"}


def test_the_websocket_refuses_a_key_without_the_events_scope(podium_server, demo_registry):
    _, key = APIKey.issue("runner-only", scopes=["runs"])
    with PodiumClient(podium_server.url, key) as client:
        with pytest.raises(PodiumError) as raised:
            next(client.events(("overview",)))
    assert raised.value.status == 403


def test_the_async_client_streams_the_overview(podium_server, watcher_key, demo_registry):
    async def scenario():
        async with AsyncPodiumClient(podium_server.url, watcher_key) as client:
            frames = client.events(("overview",))
            snapshot = await asyncio.wait_for(frames.__anext__(), 10)
            await frames.aclose()
            return snapshot

    snapshot = asyncio.run(scenario())
    assert snapshot["type"] == "snapshot" and "swift-mini" in snapshot["data"]["metrics"]["models"]

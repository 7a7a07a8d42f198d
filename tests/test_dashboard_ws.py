"""The live dashboard websocket: staff only, origin-checked, snapshot on subscribe, and a /v1 call arrives live."""
import asyncio

import httpx
import pytest
import websockets

from orchestration.gateway.writer import writer
from tests.dashboardhelpers import TopicMirror, chat, frames_until, subscribe
from tests.livehelpers import connect_dashboard, next_event, session_cookie


def test_a_v1_call_arrives_live_on_the_overview(podium_server, admin_user, api_key, demo_registry):
    cookie = session_cookie(admin_user)

    async def scenario():
        async with connect_dashboard(podium_server, cookie) as socket:
            snapshot = await subscribe(socket, "overview")
            assert snapshot["data"]["streams"]["calls"] == []
            response = await chat(podium_server, api_key, "atlas-pro", "live?")
            assert response.status_code == 200
            frame = await next_event(socket, lambda f: f["type"] in ("delta", "metrics.tick") and f["appends"])
            return response, snapshot, frame

    response, snapshot, frame = asyncio.run(scenario())
    assert frame["topic"] == "overview" and frame["seq"] > snapshot["seq"]
    [call] = frame["appends"]["calls"]
    assert call["run_id"] == response.headers["x-podium-run-id"]
    assert call["model"] == "atlas-pro" and call["status"] == "succeeded"
    assert call["output"] == "[atlas-pro] live?"
    assert call["tokens_out"] > 0 and call["cost_usd"] > 0 and isinstance(call["ts"], int)
    assert frame["changes"]["totals.atlas-pro"]["calls"] == 1


def test_the_snapshot_holds_earlier_calls(podium_server, admin_user, api_key, demo_registry):
    httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
               json={"model": "swift-mini", "messages": [{"role": "user", "content": "earlier"}]})
    writer.flush()
    cookie = session_cookie(admin_user)

    async def scenario():
        async with connect_dashboard(podium_server, cookie) as socket:
            return await subscribe(socket, "overview")

    snapshot = asyncio.run(scenario())
    mirror = TopicMirror(snapshot)
    assert [row["output"] for row in mirror.streams["calls"]] == ["[swift-mini] earlier"]
    assert mirror.values["totals.swift-mini"]["calls"] == 1


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_a_socket_without_a_staff_session_is_refused(podium_server, outsider, who):
    cookie = session_cookie(outsider) if who == "outsider" else None

    async def scenario():
        async with connect_dashboard(podium_server, cookie) as socket:
            await socket.recv()

    with pytest.raises(websockets.exceptions.WebSocketException):
        asyncio.run(scenario())


def test_a_socket_from_a_foreign_origin_is_refused(podium_server, admin_user):
    cookie = session_cookie(admin_user)

    async def scenario():
        async with connect_dashboard(podium_server, cookie, origin="http://evil.example") as socket:
            await socket.recv()

    with pytest.raises(websockets.exceptions.InvalidStatus):
        asyncio.run(scenario())


def test_two_watchers_of_a_burst_get_the_same_paced_frames_and_the_exact_totals(podium_server, admin_user, api_key,
                                                                               demo_registry):
    cookie = session_cookie(admin_user)
    counts = {"swift-mini": 40, "atlas-pro": 20}

    async def watch(socket, mirror):
        def caught_up(frame):
            assert mirror.apply(frame), "a sequence gap on a healthy connection"
            return all(mirror.values.get(f"totals.{m}", {}).get("calls") == n for m, n in counts.items())
        return await frames_until(socket, caught_up, timeout=15)

    async def scenario():
        async with connect_dashboard(podium_server, cookie) as first, connect_dashboard(podium_server, cookie) as second:
            mirrors = [TopicMirror(await subscribe(first, "overview")), TopicMirror(await subscribe(second, "overview"))]
            started = asyncio.get_running_loop().time()
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=30)) as http:
                responses = await asyncio.gather(*(chat(podium_server, api_key, model, f"{model} {n}", http)
                                                   for model, count in counts.items() for n in range(count)))
            assert {r.status_code for r in responses} == {200}
            frames = await asyncio.gather(watch(first, mirrors[0]), watch(second, mirrors[1]))
            return mirrors, frames, asyncio.get_running_loop().time() - started

    mirrors, frames, elapsed = asyncio.run(scenario())
    deltas = [[f["seq"] for f in watched if f["type"] in ("delta", "metrics.tick")] for watched in frames]
    assert all(mirror.gaps == 0 for mirror in mirrors)
    # One topic, one pace: both watchers get the same frames, at most ~10 a second, far fewer than the events.
    assert deltas[0][:len(deltas[1])] == deltas[1][:len(deltas[0])]
    assert all(len(seqs) <= 12 * elapsed + 2 and len(seqs) < sum(counts.values()) for seqs in deltas)
    for mirror in mirrors:
        assert {m: mirror.values[f"totals.{m}"]["calls"] for m in counts} == counts

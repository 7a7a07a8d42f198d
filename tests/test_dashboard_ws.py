"""The live dashboard websocket: staff only, origin-checked, and a /v1 call arrives as step.finished."""
import asyncio

import httpx
import pytest
import websockets

from tests.livehelpers import connect_dashboard, next_event, session_cookie


def test_a_v1_call_arrives_live_as_step_finished(podium_server, staff_user, api_key, demo_registry):
    cookie = session_cookie(staff_user)

    async def scenario():
        async with connect_dashboard(podium_server, cookie) as socket:
            snapshot = await next_event(socket, lambda f: f["type"] == "snapshot")
            assert snapshot["data"]["recent"] == []
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                    json={"model": "atlas-pro", "messages": [{"role": "user", "content": "live?"}]})
            assert response.status_code == 200
            event = await next_event(socket, lambda f: f["type"] == "step.finished")
            return response, event

    response, event = asyncio.run(scenario())
    assert event["run_id"] == response.headers["x-podium-run-id"]
    assert event["model"] == "atlas-pro" and event["status"] == "succeeded"
    assert event["output"] == "[atlas-pro] live?"
    assert event["tokens_out"] > 0 and event["cost_usd"] > 0 and isinstance(event["ts"], int)


def test_the_snapshot_holds_earlier_calls(podium_server, staff_user, api_key, demo_registry):
    httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
               json={"model": "swift-mini", "messages": [{"role": "user", "content": "earlier"}]})
    from orchestration.recording import writer
    writer.flush()

    cookie = session_cookie(staff_user)

    async def scenario():
        async with connect_dashboard(podium_server, cookie) as socket:
            return await next_event(socket, lambda f: f["type"] == "snapshot")

    snapshot = asyncio.run(scenario())
    assert [row["output"] for row in snapshot["data"]["recent"]] == ["[swift-mini] earlier"]
    assert snapshot["data"]["models"]["swift-mini"]["calls"] == 1


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_a_socket_without_a_staff_session_is_refused(podium_server, outsider, who):
    cookie = session_cookie(outsider) if who == "outsider" else None

    async def scenario():
        async with connect_dashboard(podium_server, cookie) as socket:
            await socket.recv()

    with pytest.raises(websockets.exceptions.WebSocketException):
        asyncio.run(scenario())


def test_a_socket_from_a_foreign_origin_is_refused(podium_server, staff_user):
    cookie = session_cookie(staff_user)

    async def scenario():
        async with connect_dashboard(podium_server, cookie, origin="http://evil.example") as socket:
            await socket.recv()

    with pytest.raises(websockets.exceptions.InvalidStatus):
        asyncio.run(scenario())

"""Open dashboard sockets die with their credentials: a revoked key, a lost scope, a user who lost staff."""
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from orchestration.models import APIKey
from orchestration.models.keys import hash_key
from tests.livehelpers import session_cookie


def open_socket(server, *, key: str | None = None, cookie: str | None = None):
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if cookie:
        headers["Cookie"] = cookie
    return connect(f"{server.ws_url}/ws/dashboard/", additional_headers=headers,
                   origin=f"http://127.0.0.1:{server.port}", open_timeout=5)


def subscribe(socket, topic: str = "overview") -> dict:
    socket.send(json.dumps({"type": "subscribe", "topic": topic}))
    while True:
        frame = json.loads(socket.recv(timeout=5))
        if frame["type"] == "snapshot" and frame["topic"] == topic:
            return frame


def frames_until_closed(socket) -> tuple[int, list[dict]]:
    """The frames that still arrive, until the server closes the socket, and its close code.

    The bound is generous (the check runs every REGISTRY_CHECK_INTERVAL, 1 s here): it only keeps a
    socket that stays open from hanging the test.
    """
    frames = []
    deadline = time.monotonic() + 10
    try:
        while True:
            frames.append(json.loads(socket.recv(timeout=max(0.0, deadline - time.monotonic()))))
    except ConnectionClosed as closed:
        return closed.rcvd.code, frames
    except TimeoutError:
        pytest.fail("the socket is still open")


def close_code_after(socket, action) -> int:
    action()
    return frames_until_closed(socket)[0]


def key_row(raw: str) -> APIKey:
    return APIKey.objects.get(key_hash=hash_key(raw))


def remove_scope(raw: str) -> None:
    row = key_row(raw)
    row.scopes = [scope for scope in row.scopes if scope != "events"]
    row.save()


@pytest.mark.parametrize("change, code", [
    (lambda raw: key_row(raw).revoke(), 4401),
    (lambda raw: key_row(raw).delete(), 4401),
    # A bulk update sends no signal: the periodic check reads the database itself.
    (lambda raw: APIKey.objects.filter(key_hash=hash_key(raw)).update(scopes=["chat"]), 4403),
    (remove_scope, 4403),
], ids=["revoked", "deleted", "scope-removed-in-bulk", "scope-removed"])
def test_a_key_socket_closes_when_the_key_loses_the_right_to_watch(podium_server, watcher_key, change, code):
    with open_socket(podium_server, key=watcher_key) as socket:
        subscribe(socket)
        assert close_code_after(socket, lambda: change(watcher_key)) == code


def test_other_keys_keep_watching_when_one_is_revoked(podium_server, watcher_key):
    _, other_key = APIKey.issue("other watcher", scopes=["events"])
    with open_socket(podium_server, key=watcher_key) as revoked, open_socket(podium_server, key=other_key) as kept:
        subscribe(revoked)
        subscribe(kept)
        assert close_code_after(revoked, lambda: key_row(watcher_key).revoke()) == 4401
        assert subscribe(kept, "runs")["topic"] == "runs"


def test_a_subscribe_after_revocation_is_refused_before_the_periodic_check(podium_server, watcher_key, settings):
    settings.PODIUM = {**settings.PODIUM, "REGISTRY_CHECK_INTERVAL": 600}  # the periodic check will not come
    with open_socket(podium_server, key=watcher_key) as socket:
        subscribe(socket)
        key_row(watcher_key).revoke()
        socket.send(json.dumps({"type": "subscribe", "topic": "runs"}))
        code, frames = frames_until_closed(socket)
    assert code == 4401
    assert not any(frame["type"] == "snapshot" and frame["topic"] == "runs" for frame in frames)


@pytest.mark.parametrize("change, code", [
    (lambda user: setattr(user, "is_superuser", False) or user.save(), 4403),  # and in no team
    (lambda user: setattr(user, "is_active", False) or user.save(), 4401),
    (lambda user: user.delete(), 4401),
], ids=["superuser-removed", "deactivated", "deleted"])
def test_a_user_socket_closes_when_the_user_loses_access(podium_server, admin_user, change, code):
    with open_socket(podium_server, cookie=session_cookie(admin_user)) as socket:
        subscribe(socket)
        assert close_code_after(socket, lambda: change(admin_user)) == code


def test_a_revoked_key_cannot_open_a_new_socket(podium_server, watcher_key):
    key_row(watcher_key).revoke()
    with pytest.raises(InvalidStatus) as refused:
        open_socket(podium_server, key=watcher_key)
    assert refused.value.response.status_code == 403

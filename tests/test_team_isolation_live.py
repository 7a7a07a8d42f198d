"""Team isolation of the control room: every dashboard page, every websocket topic and podium_top.

Two teams, red and blue, each with a viewer, a reviewer (neither staff) and keys. Across the boundary the
answer is 404 (pages), a refused handshake or a `not_found` error frame (websocket), and never another
team's data: the other team's run ids, targets and prompt text appear in no page and no frame. Every URL
pattern of dashboard/urls.py has a case here, so a new page without one fails
`test_every_dashboard_page_has_an_isolation_case`.
"""
from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from dataclasses import dataclass, field

import pytest
import websockets
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern
from django.utils import timezone

from dashboard import urls as dashboard_urls
from observability.metrics_window import local_window
from orchestration.gateway.writer import writer
from orchestration.models import APIKey, LLMModel, Run, Step, Team, TeamMembership, Workflow
from orchestration.models.runs import RunStatus
from tests.dashboardhelpers import chat
from tests.livehelpers import session_cookie
from tests.reviewhelpers import open_item

TOPICS = ("overview", "runs", "reviews")


@dataclass
class Side:
    """One team and everything of it the tests look for."""
    team: Team
    viewer: object
    reviewer: object
    events_key: str  # chat + events: watches its own team
    chat_key: str  # chat only: may not watch
    secret: str  # prompt text only this team sends
    target: str  # a workflow target only this team's runs have
    run_ids: list[str] = field(default_factory=list)
    review_ids: list[str] = field(default_factory=list)

    @property
    def markers(self) -> list[str]:
        """What must never show up for the other team."""
        return [self.secret, self.target, *self.run_ids, *self.review_ids]


def make_side(slug: str, models: list[str]) -> Side:
    team = Team.objects.create(slug=slug, name=slug.title())
    if models:
        team.allowed_models.set(LLMModel.objects.filter(alias__in=models))
    users = get_user_model().objects
    viewer = users.create_user(f"{slug}-viewer", password=f"{slug}-viewer-password-1")
    reviewer = users.create_user(f"{slug}-reviewer", password=f"{slug}-reviewer-password-1")
    TeamMembership.objects.create(team=team, user=viewer, role=TeamMembership.Role.VIEWER)
    TeamMembership.objects.create(team=team, user=reviewer, role=TeamMembership.Role.REVIEWER)
    _, events_key = APIKey.issue(f"{slug}-watch", scopes=["chat", "events"], team=team)
    _, chat_key = APIKey.issue(f"{slug}-chat", team=team)
    return Side(team=team, viewer=viewer, reviewer=reviewer, events_key=events_key, chat_key=chat_key,
                secret=f"{slug}-secret-{uuid.uuid4().hex[:8]}", target=f"workflow/{slug}-only-flow")


def record_runs(side: Side) -> None:
    """A workflow run with a step carrying the team's secret prompt, and an open review item, in the database."""
    Workflow.objects.create(slug=f"{side.team.slug}-only-flow", team=side.team)
    run = Run.objects.create(kind=Run.Kind.WORKFLOW, target=side.target, status=RunStatus.AWAITING_REVIEW,
                             team=side.team, input={"messages": [{"role": "user", "content": side.secret}]},
                             created_at=timezone.now())
    Step.objects.create(run=run, key="draft", node_id="draft", node_type="call", model_alias="atlas-pro",
                        status="succeeded", prompt=[{"role": "user", "content": side.secret}],
                        output=f"answer to {side.secret}", tokens_in=3, tokens_out=4, cost_usd="0.001",
                        started_at=run.created_at, finished_at=run.created_at)
    item = open_item(run=run, request={"messages": [{"role": "user", "content": side.secret}]})
    side.run_ids.append(str(run.id))
    side.review_ids.append(str(item.id))


@pytest.fixture
def sides(db, demo_registry):
    red, blue = make_side("red", ["atlas-pro"]), make_side("blue", [])
    record_runs(red)
    record_runs(blue)
    return red, blue


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_none_of(text: str, side: Side, where: str) -> None:
    leaked = [marker for marker in side.markers if marker in text]
    assert not leaked, f"{where} shows {side.team.slug}'s {leaked}"


# --- pages ----------------------------------------------------------------------------------------------------

# Each URL pattern name -> (path for the red side's own object, path for the blue side's), or None for a
# page with no team data (login, logout).
def page_cases(red: Side, blue: Side) -> dict[str, tuple[str, str] | None]:
    return {
        "overview": ("/", "/?team=blue"),
        "runs": ("/runs/", "/runs/?team=blue"),
        "run-detail": (f"/runs/{red.run_ids[0]}/", f"/runs/{blue.run_ids[0]}/"),
        "models": ("/models/", "/models/?team=blue"),
        "review-queue": ("/reviews/", "/reviews/?team=blue"),
        "review-detail": (f"/reviews/{red.review_ids[0]}/", f"/reviews/{blue.review_ids[0]}/"),
        "login": None,
        "logout": None,
    }


def test_every_dashboard_page_has_an_isolation_case(sides):
    names = {pattern.name for pattern in dashboard_urls.urlpatterns if isinstance(pattern, URLPattern)}
    assert names == set(page_cases(*sides)), "a dashboard page without a case in page_cases"


@pytest.mark.parametrize("who", ["viewer", "reviewer"])
def test_a_member_sees_their_team_and_gets_404_across_the_boundary(sides, who):
    red, blue = sides
    client = signed_in(getattr(red, who))
    for name, case in page_cases(red, blue).items():
        if case is None:
            continue
        own, other = case
        page = client.get(own)
        assert page.status_code == 200, (name, own)
        assert_none_of(page.content.decode(), blue, f"{own} for red's {who}")
        assert client.get(other).status_code == 404, (name, other)
    runs_page = client.get("/runs/").content.decode()
    assert red.run_ids[0] in runs_page and red.target in runs_page
    assert red.secret in client.get(f"/reviews/{red.review_ids[0]}/").content.decode()


def test_a_run_of_no_recorded_team_is_404_for_a_member_like_another_teams(sides):
    red, _ = sides
    assert signed_in(red.viewer).get(f"/runs/{uuid.uuid4()}/").status_code == 404


def test_pages_without_team_data_show_none(sides):
    red, blue = sides
    login = Client().get("/login/")
    assert login.status_code == 200
    for side in sides:
        assert_none_of(login.content.decode(), side, "the login page")
    logout = signed_in(red.viewer).post("/logout/")
    assert logout.status_code == 302 and logout["Location"].startswith("/login/")


def test_a_member_who_is_not_staff_signs_in_to_the_control_room_but_not_the_admin(sides):
    red, blue = sides
    client = Client()
    response = client.post("/login/", {"username": "red-viewer", "password": "red-viewer-password-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    admin = client.get("/admin/")
    assert admin.status_code == 302 and "/admin/login/" in admin["Location"]


def test_a_superuser_sees_every_team_and_filters_one(sides, admin_user):
    red, blue = sides
    client = signed_in(admin_user)
    everything = client.get("/runs/").content.decode()
    assert all(side.run_ids[0] in everything for side in sides)
    only_blue = client.get("/runs/?team=blue").content.decode()
    assert blue.run_ids[0] in only_blue
    assert_none_of(only_blue, red, "/runs/?team=blue")
    queue = client.get("/reviews/?team=red").content.decode()
    assert_none_of(queue, blue, "/reviews/?team=red")
    for side in sides:
        assert client.get(f"/runs/{side.run_ids[0]}/").status_code == 200
        assert client.get(f"/reviews/{side.review_ids[0]}/").status_code == 200
    assert client.get("/runs/?team=no-such-team").status_code == 404


def test_models_a_team_may_not_call_are_not_listed(sides):
    red, blue = sides
    red_models = signed_in(red.viewer).get("/models/").content.decode()
    assert "atlas-pro" in red_models and "swift-mini" not in red_models
    assert "swift-mini" in signed_in(blue.viewer).get("/models/").content.decode()  # blue chose none: every model


def test_only_reviewers_of_the_runs_team_get_decision_buttons_and_a_viewers_decision_is_refused(sides):
    red, blue = sides
    reviewer_page = signed_in(red.reviewer).get(f"/reviews/{red.review_ids[0]}/").content.decode()
    viewer_page = signed_in(red.viewer).get(f"/reviews/{red.review_ids[0]}/").content.decode()
    assert 'data-may-decide="true"' in reviewer_page and '<div class="toolbar" >' in reviewer_page
    assert 'data-may-decide="false"' in viewer_page and '<div class="toolbar" hidden>' in viewer_page
    refused = signed_in(red.viewer).post(f"/api/reviews/{red.review_ids[0]}/approve/", {},
                                         content_type="application/json")
    assert refused.status_code in (403, 404)
    assert signed_in(red.viewer).get("/reviews/").context["may_decide"] is False
    assert signed_in(red.reviewer).get("/reviews/").context["may_decide"] is True


def test_a_reviewer_of_one_team_and_viewer_of_another_may_decide_only_the_first_ones_items(sides):
    red, blue = sides
    TeamMembership.objects.create(team=blue.team, user=red.reviewer, role=TeamMembership.Role.VIEWER)
    client = signed_in(red.reviewer)
    queue = client.get("/reviews/")
    assert queue.context["decide_teams"] == [red.team.id]  # the queue's script offers decisions on red's only
    assert client.get(f"/reviews/{red.review_ids[0]}/").context["may_decide"] is True
    blue_item = client.get(f"/reviews/{blue.review_ids[0]}/")
    assert blue_item.status_code == 200 and blue_item.context["may_decide"] is False


# --- websocket topics ---------------------------------------------------------------------------------------------

def open_socket(server, *, key: str | None = None, cookie: str | None = None, team: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {"Cookie": cookie}
    query = f"?team={team}" if team else ""
    origin = None if key else f"http://127.0.0.1:{server.port}"
    return websockets.connect(f"{server.ws_url}/ws/dashboard/{query}", additional_headers=headers, origin=origin,
                              open_timeout=5)


async def watch_until(socket, topics, predicate, timeout: float = 15.0) -> list[str]:
    """Subscribe to `topics` and collect every frame (as received text) until predicate(all text so far)."""
    for topic in topics:
        await socket.send(json.dumps({"type": "subscribe", "topic": topic}))
    frames: list[str] = []

    async def scan():
        while not predicate("\n".join(frames)):
            frames.append(await socket.recv())
    await asyncio.wait_for(scan(), timeout)
    return frames


@pytest.fixture
def live_sides(podium_server, demo_registry):
    """The two sides, created while the live server runs (the server reads the same database)."""
    local_window.reset()
    red, blue = make_side("red", ["atlas-pro"]), make_side("blue", [])
    record_runs(red)
    record_runs(blue)
    _, operator_key = APIKey.issue("operator-watch", scopes=["events"])  # no team: every team
    _, all_key = APIKey.issue("red-ops", scopes=["events:all"], team=red.team)
    yield podium_server, red, blue, operator_key, all_key
    local_window.reset()


def call_as(server, side: Side, model: str) -> str:
    """A /v1 call with the side's secret in the prompt; returns its run id."""
    async def go():
        return await chat(server, side.chat_key, model, f"{side.secret} live")
    response = asyncio.run(go())
    assert response.status_code == 200, response.text
    side.run_ids.append(response.headers["x-podium-run-id"])
    return response.headers["x-podium-run-id"]


def seen(side: Side, run_id_index: int = -1):
    """A predicate: the side's latest live run arrived with its output on every watched topic it shows in."""
    def predicate(text: str) -> bool:
        return side.run_ids[run_id_index] in text and f"{side.secret} live" in text and '"topic":"runs"' in text
    return predicate


def test_every_topic_shows_a_team_key_and_a_member_only_their_team(live_sides):
    server, red, blue, _, _ = live_sides
    watchers = {"red key": {"key": red.events_key}, "red viewer": {"cookie": session_cookie(red.viewer)},
                "red reviewer": {"cookie": session_cookie(red.reviewer)}}

    async def scenario(credentials):
        async with open_socket(server, **credentials) as socket:
            await socket.send(json.dumps({"type": "subscribe", "topic": "overview"}))
            await socket.recv()  # the overview's snapshot: the hub is up
            # Blue calls first, then red: once red's call shows, blue's earlier events went through the hub.
            await asyncio.to_thread(call_as, server, blue, "swift-mini")
            await asyncio.to_thread(call_as, server, red, "atlas-pro")
            frames = await watch_until(socket, TOPICS + (f"run:{red.run_ids[-1]}",), seen(red))
            # The run topic of a blue run is answered like a run that does not exist.
            for run_id in (blue.run_ids[0], blue.run_ids[-1], str(uuid.uuid4())):
                await socket.send(json.dumps({"type": "subscribe", "topic": f"run:{run_id}"}))
                frame = json.loads(await asyncio.wait_for(socket.recv(), 5))
                while frame.get("type") != "error":  # deltas of the topics already watched may come first
                    frames.append(json.dumps(frame))
                    frame = json.loads(await asyncio.wait_for(socket.recv(), 5))
                assert frame["code"] == "not_found" and frame["topic"] == f"run:{run_id}"
            return frames

    for who, credentials in watchers.items():
        frames = asyncio.run(scenario(credentials))
        text = "\n".join(frames)
        assert_none_of(text, blue, f"the frames {who} got")
        assert red.run_ids[0] in text and red.target in text  # the recorded run of their own team
        snapshots = {json.loads(f)["topic"]: json.loads(f) for f in frames if json.loads(f)["type"] == "snapshot"}
        assert set(snapshots) >= set(TOPICS)
        # Aggregates from red's own traffic only: blue called swift-mini, which red may not call.
        overview = snapshots["overview"]["data"]
        assert set(overview["metrics"]["models"]) <= {"atlas-pro"}
        assert not any(key.startswith("totals.swift-mini") for key in overview["values"])
        assert {key for key in overview["values"] if key.startswith("key.")} == {
            f"key.{prefix}" for prefix in APIKey.objects.filter(team=red.team).values_list("prefix", flat=True)}


def test_a_member_watches_metrics_from_their_teams_events_only(live_sides):
    server, red, blue, _, _ = live_sides
    cookie = session_cookie(red.viewer)

    async def scenario():
        async with open_socket(server, cookie=cookie) as socket:
            await watch_until(socket, ("overview",), lambda text: '"type":"snapshot"' in text)
            for _ in range(3):
                await asyncio.to_thread(call_as, server, blue, "atlas-pro")
            await asyncio.to_thread(call_as, server, red, "atlas-pro")
            ticks = []

            async def until_counted():
                while True:
                    frame = json.loads(await socket.recv())
                    ticks.append(frame)
                    totals = frame.get("changes", {}).get("totals.atlas-pro")
                    if totals and frame["type"] in ("delta", "metrics.tick"):
                        return totals
            totals = await asyncio.wait_for(until_counted(), 10)

            async def until_ticked():
                # The once-a-second tick may be computed just before red's call reaches the team's window:
                # wait for the tick that has it (blue's calls must never appear in any).
                seen = []
                while True:
                    tick = await next_tick(socket)
                    seen.append(tick["metrics"]["models"].get("atlas-pro", {}).get("calls", 0))
                    if seen[-1]:
                        return seen
            return totals, await asyncio.wait_for(until_ticked(), 5)

    totals, calls_per_tick = asyncio.run(scenario())
    # Red made one atlas-pro call (and has one recorded step); blue's three are not counted.
    assert totals["calls"] == 2
    assert calls_per_tick[-1] == 1 and max(calls_per_tick) == 1


async def next_tick(socket) -> dict:
    while True:
        frame = json.loads(await socket.recv())
        if frame["type"] == "metrics.tick":
            return frame


def test_all_team_watchers_see_both_teams_and_a_superuser_may_pick_one(live_sides, admin_user):
    server, red, blue, operator_key, all_key = live_sides

    async def scenario(credentials, predicate):
        async with open_socket(server, **credentials) as socket:
            await socket.send(json.dumps({"type": "subscribe", "topic": "overview"}))
            await socket.recv()
            await asyncio.to_thread(call_as, server, blue, "swift-mini")
            await asyncio.to_thread(call_as, server, red, "atlas-pro")
            return "\n".join(await watch_until(socket, TOPICS, predicate))

    both = lambda text: seen(red)(text) and blue.run_ids[-1] in text  # noqa: E731
    for credentials in ({"key": operator_key}, {"key": all_key}, {"cookie": session_cookie(admin_user)}):
        text = asyncio.run(scenario(credentials, both))
        assert red.secret in text and blue.secret in text
    only_blue = asyncio.run(scenario({"cookie": session_cookie(admin_user), "team": "blue"},
                                     lambda text: blue.run_ids[-1] in text and '"topic":"runs"' in text))
    assert_none_of(only_blue, red, "a superuser's frames filtered to blue")
    only_red = asyncio.run(scenario({"key": operator_key, "team": "red"}, seen(red)))
    assert_none_of(only_red, blue, "an operator key's frames filtered to red")


@pytest.mark.parametrize("who", ["key of the other team", "member of the other team", "key without events",
                                 "unknown team", "user in no team"])
def test_handshakes_across_the_boundary_are_refused(live_sides, outsider, who):
    server, red, blue, _, _ = live_sides
    credentials = {
        "key of the other team": {"key": red.events_key, "team": "blue"},
        "member of the other team": {"cookie": session_cookie(red.viewer), "team": "blue"},
        "key without events": {"key": red.chat_key},
        "unknown team": {"key": red.events_key, "team": "no-such-team"},
        "user in no team": {"cookie": session_cookie(outsider)},
    }[who]

    async def scenario():
        async with open_socket(server, **credentials) as socket:
            await socket.recv()

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(scenario())
    assert refused.value.response.status_code == 403


def test_a_member_removed_from_the_team_is_closed_and_reconnects_to_nothing(live_sides, settings):
    server, red, _, _, _ = live_sides
    settings.PODIUM = {**settings.PODIUM, "REGISTRY_CHECK_INTERVAL": 600}  # the check at subscribe catches it
    cookie = session_cookie(red.viewer)

    async def scenario():
        async with open_socket(server, cookie=cookie) as socket:
            await watch_until(socket, ("overview",), lambda text: '"type":"snapshot"' in text)
            await asyncio.to_thread(TeamMembership.objects.filter(user=red.viewer).delete)
            await socket.send(json.dumps({"type": "subscribe", "topic": "runs"}))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    assert json.loads(await socket.recv())["topic"] != "runs"
            return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 4403


def test_a_key_moved_to_another_team_is_closed_to_reconnect_with_its_new_team(live_sides, settings):
    server, red, blue, _, _ = live_sides
    settings.PODIUM = {**settings.PODIUM, "REGISTRY_CHECK_INTERVAL": 600}  # the check at subscribe catches it

    async def scenario():
        async with open_socket(server, key=red.events_key) as socket:
            await watch_until(socket, ("overview",), lambda text: '"type":"snapshot"' in text)
            await asyncio.to_thread(lambda: APIKey.objects.filter(name="red-watch").update(team=blue.team))
            await socket.send(json.dumps({"type": "subscribe", "topic": "runs"}))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    assert json.loads(await socket.recv())["topic"] != "runs"
            return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 4409


# --- podium_top -------------------------------------------------------------------------------------------------

def test_podium_top_with_a_team_key_shows_only_its_team(live_sides):
    server, red, blue, operator_key, _ = live_sides
    call_as(server, blue, "swift-mini")
    call_as(server, red, "atlas-pro")
    writer.flush()
    time.sleep(1.1)  # the window counts whole seconds: let the calls' second end

    def top(*arguments) -> str:
        out = io.StringIO()
        call_command("podium_top", "--url", server.url, *arguments, "--once", stdout=out)
        return out.getvalue()

    red_view = top("--key", red.events_key)
    assert red.run_ids[-1][:8] in red_view and "model atlas-pro" in red_view
    assert "model swift-mini" not in red_view  # red may not call it, and blue's call is not red's
    assert not any(run_id[:8] in red_view for run_id in blue.run_ids)
    blue_only = top("--key", operator_key, "--team", "blue")
    assert blue.run_ids[-1][:8] in blue_only
    assert not any(run_id[:8] in blue_only for run_id in red.run_ids)
    with pytest.raises(Exception, match="403|refused|may not"):
        top("--key", red.events_key, "--team", "blue")

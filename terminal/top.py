"""`podium_top`: a live terminal view of the orchestra, fed by the dashboard's live events.

Two sources of the same events:
- `ChannelLayerSource` joins the channel-layer group `podium.events` of this installation
  (channels-redis in production, so every process's events arrive) and starts from the database;
- `WebSocketSource` reads a Podium elsewhere through `/ws/dashboard/` (topics overview, runs,
  reviews: a snapshot each, then deltas and the server's metrics ticks) with an API key of scope
  `events` — also how to watch an embedded-mode server, whose in-memory channel layer never
  leaves its process.

Teams: what it shows is what its identity may watch (dashboard/viewers.py). Over the websocket the server
scopes the frames to the key's team (`events`), or every team (`events:all`, or `events` on a key with no
team); `--team <slug>` narrows an operator's view to one team. On the channel layer it runs with the
database's credentials (an operator on the box sees every team) unless `--user` or `--key` names whose
view to show; it then drops the events and rows of other teams itself.

Two screens: `LiveScreen` redraws in place (rich Live on the alternate screen) at most `fps`
times a second and at least once a second (rates slide with time); `PlainScreen` prints a
block every `interval` seconds when stdout is a pipe or a log.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator
from datetime import timedelta

from rich.console import Console
from rich.live import Live
from websockets.exceptions import WebSocketException

from orchestration.access.watching import callable_targets, of_teams
from orchestration.live import EVENTS_GROUP, events_in
from orchestration.models import LLMModel, ReviewItem, Run, Step
from orchestration.reviews.selectors import OPEN_STATUSES
from podium.client import AsyncPodiumClient, PodiumError
from terminal.top_state import TopState
from terminal.top_view import plain_lines, render

RECONNECT_MAX_S = 10.0
JOIN_WAIT_S = 5.0


# --- sources ------------------------------------------------------------------------------------------

class ChannelLayerSource:
    """This installation's channel layer, starting from its database; `teams` (ids) keeps only their runs'
    events and rows (None = every team)."""

    def __init__(self, teams: frozenset[int] | None = None) -> None:
        from django.conf import settings

        backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
        self.name = "local (" + backend.rsplit(".", 1)[-1] + ")"
        self.teams = teams
        self.joined = asyncio.Event()  # set once the group is joined: events from then on arrive
        self._run_teams: dict[str, int | None] = {}  # run id -> team, for events that do not say

    async def load(self, state: TopState) -> None:
        from asgiref.sync import sync_to_async

        await sync_to_async(load_from_database)(state, self.teams)

    async def events(self) -> AsyncIterator[dict]:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        channel = await layer.new_channel("podium-top.")
        await layer.group_add(EVENTS_GROUP, channel)
        self.joined.set()
        try:
            while True:
                message = await layer.receive(channel)
                for event in events_in(message):
                    if await self.shows(event):
                        yield event
        finally:
            with contextlib.suppress(Exception):
                await layer.group_discard(EVENTS_GROUP, channel)

    async def shows(self, event: dict) -> bool:
        """Whether the event is about a run of the watched teams (model.health is about a model: always)."""
        if self.teams is None or event.get("type") == "model.health":
            return True
        run_id = str(event.get("run_id") or "")
        if "team" in event:
            self._run_teams[run_id] = event["team"]
        elif run_id not in self._run_teams:  # a review event: its run's team, read once
            from asgiref.sync import sync_to_async

            self._run_teams[run_id] = await sync_to_async(
                lambda: Run.objects.filter(pk=run_id).values_list("team_id", flat=True).first())()
        return self._run_teams.get(run_id) in self.teams


def load_from_database(state: TopState, teams: frozenset[int] | None = None) -> None:
    """The registry, the window's recent calls, the latest runs and the open reviews: five queries (three more
    for the models `teams` may call). Only `teams`' rows when given."""
    from django.utils import timezone

    models = LLMModel.objects.all()
    targets = callable_targets(teams)
    if targets is not None:
        models = models.filter(alias__in=targets)
    state.load_models([
        {"alias": row["alias"], "provider": row["provider__name"], "tier": row["tier"],
         "enabled": row["enabled"] and row["provider__enabled"]}
        for row in models.values("alias", "provider__name", "tier", "enabled", "provider__enabled")])
    since = timezone.now() - timedelta(seconds=state.window_s + 1)
    state.load_calls([
        {"model": row["model_alias"], "ts": row["finished_at"].timestamp() * 1000, "status": row["status"],
         "tokens_in": row["tokens_in"], "tokens_out": row["tokens_out"], "cost_usd": float(row["cost_usd"]),
         "latency_ms": row["latency_ms"], "confidence": row["confidence"],
         "confidence_method": row["confidence_method"]}
        for row in of_teams(Step.objects.filter(node_type="call", finished_at__gte=since), "run__team_id", teams)
        .exclude(model_alias="")
        .values("model_alias", "finished_at", "status", "tokens_in", "tokens_out", "cost_usd", "latency_ms",
                "confidence", "confidence_method")[:20_000]])
    state.load_runs([
        {"run_id": str(row["id"]), "target": row["target"], "kind": row["kind"], "status": row["status"],
         "cost_usd": row["cost_usd"], "latency_ms": row["latency_ms"]}
        for row in of_teams(Run.objects, "team_id", teams).order_by("-created_at")
        .values("id", "target", "kind", "status", "cost_usd", "latency_ms")[:state.max_runs]])
    open_items = of_teams(ReviewItem.objects.filter(status__in=OPEN_STATUSES), "run__team_id", teams)
    state.load_reviews([
        {"review_id": str(row["id"]), "run_id": str(row["run_id"]), "status": row["status"],
         "reason": row["reason"], "created_at": row["created_at"]}
        for row in open_items.order_by("created_at").values("id", "run_id", "status", "reason", "created_at")[:50]],
        total=open_items.count())


class SequenceGap(Exception):
    """A frame of a topic was lost on the way: start again from fresh snapshots."""


class WebSocketSource:
    """A Podium elsewhere, through the dashboard websocket (snapshots, then coalesced deltas and ticks).

    Frames are handed on as `{"type": "podium_top.frame", "frame": …}`. A gap in a topic's sequence
    numbers (the server skips one when it lost events) reconnects, which brings fresh snapshots.
    """

    TOPICS = ("overview", "runs", "reviews")

    def __init__(self, client: AsyncPodiumClient, team: str | None = None) -> None:
        self.client = client
        self.team = team  # a slug: watch this team only (the key must be allowed to)
        self.name = client.base_url + (f" (team {team})" if team else "")
        self.joined = asyncio.Event()

    async def load(self, state: TopState) -> None:
        """Nothing to read first: each topic starts with a snapshot."""

    async def events(self) -> AsyncIterator[dict]:
        delay = 0.5
        while True:
            try:
                async with contextlib.aclosing(self._session()) as frames:
                    async for event in frames:
                        delay = 0.5
                        yield event
                yield {"type": "podium_top.disconnected", "error": "closed by the server"}
            except SequenceGap:
                continue
            except PodiumError as exc:
                if exc.status in (401, 403):  # refused at the handshake: retrying will not help
                    raise
                yield {"type": "podium_top.disconnected", "error": exc.message}
            except (OSError, WebSocketException) as exc:
                yield {"type": "podium_top.disconnected", "error": type(exc).__name__}
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _session(self) -> AsyncIterator[dict]:
        """One connection's frames in sequence; raises SequenceGap when one went missing."""
        seqs: dict[str, int] = {}
        snapshots: set[str] = set()
        async with contextlib.aclosing(self.client.events(self.TOPICS, team=self.team)) as frames:
            async for frame in frames:
                topic, seq, snapshot = frame.get("topic"), frame.get("seq"), frame.get("type") == "snapshot"
                if topic and isinstance(seq, int):
                    if not snapshot and topic in seqs and seq > seqs[topic] + 1:
                        raise SequenceGap(topic)
                    if not snapshot and seq <= seqs.get(topic, -1):
                        continue  # older than what the snapshot already held
                    seqs[topic] = seq
                if snapshot:
                    snapshots.add(topic)
                    if snapshots.issuperset(self.TOPICS):
                        self.joined.set()
                yield {"type": "podium_top.frame", "frame": frame}


# --- screens ----------------------------------------------------------------------------------------

class LiveScreen:
    def __init__(self, console: Console, source_name: str, *, fps: float = 4.0, alternate_screen: bool = True):
        self.console = console
        self.source_name = source_name
        self.min_interval = 1 / max(0.2, min(fps, 10.0))
        self.idle_s = 1.0
        self.notice = ""
        self.live = Live(console=console, auto_refresh=False, screen=alternate_screen, transient=False,
                         redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> "LiveScreen":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def show(self, state: TopState) -> None:
        source = self.source_name + (f"  [{self.notice}]" if self.notice else "")
        self.live.update(render(state, source=source), refresh=True)


class PlainScreen:
    def __init__(self, stream, *, interval: float = 5.0):
        self.stream = stream
        self.min_interval = self.idle_s = max(0.1, interval)
        self.notice = ""

    def __enter__(self) -> "PlainScreen":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def show(self, state: TopState) -> None:
        lines = plain_lines(state)
        if self.notice:
            lines.insert(1, f"  note {self.notice}")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


# --- the loop -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def quit_keys(stop: asyncio.Event, stdin=None):
    """While active, `q` on a terminal's stdin sets `stop` (cbreak mode keeps Ctrl-C a signal)."""
    stdin = stdin if stdin is not None else sys.stdin
    try:
        fd = stdin.fileno()
        interactive = os.isatty(fd)
    except (AttributeError, ValueError, OSError):
        interactive = False
    if not interactive:
        yield
        return
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(fd)

    def on_key() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data or b"q" in data.lower():
            stop.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_top(source, screen, *, state: TopState | None = None, stop: asyncio.Event | None = None,
                  stdin=None, max_frames: int | None = None) -> TopState:
    """Draw until `q`, Ctrl-C, SIGTERM, `stop` being set, or `max_frames` frames were shown."""
    state = state or TopState()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    changed = asyncio.Event()

    async def consume() -> None:
        async for event in source.events():
            kind = event.get("type", "")
            if kind == "podium_top.disconnected":
                screen.notice = "disconnected, reconnecting: " + event.get("error", "")
                changed.set()
                continue
            screen.notice = ""
            applied = state.apply_frame(event["frame"]) if kind == "podium_top.frame" else state.apply(event)
            if applied:
                changed.set()

    await source.load(state)
    consumer = asyncio.create_task(consume())
    frames = 0
    try:
        # A websocket source starts from snapshots: draw once they are in (or after a moment regardless).
        await _wait_any(stop, source.joined, consumer, timeout=JOIN_WAIT_S)
        _raise_if_failed(consumer)
        with screen, quit_keys(stop, stdin):
            while not stop.is_set():
                screen.show(state)
                frames += 1
                if max_frames is not None and frames >= max_frames:
                    break
                changed.clear()
                await _wait_any(stop, changed, consumer, timeout=screen.idle_s)
                _raise_if_failed(consumer)
                if not stop.is_set():
                    await asyncio.sleep(screen.min_interval)  # the cap on redraws per second
    finally:
        consumer.cancel()
        with contextlib.suppress(BaseException):
            await consumer
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
    return state


def _raise_if_failed(task: asyncio.Task) -> None:
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()


async def _wait_any(stop: asyncio.Event, changed: asyncio.Event, consumer: asyncio.Task, *, timeout: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(changed.wait())]
    try:
        await asyncio.wait([*waiters, consumer], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

"""One hub per process (per event loop): the only subscriber to the live events group.

The hub folds every event into topic state once, however many browsers watch, and sends each
changed topic's coalesced frame, encoded once, to that topic's channel-layer group; consumers
only forward. Pacing (protocol.py): the first change to an idle topic wakes the flush loop at
once; a topic that sent a frame less than FLUSH_INTERVAL_S ago waits out the rest of it.
Overview, runs and recent run step trees live in memory (bootstrapped from the database when
the hub starts); review rows are re-read from the database when a review event names them,
since the events carry only ids.

Teams: every event carries its run's team (orchestration/engine/events.py). The hub keeps one *lens* per
set of teams its watchers see ("all" for superusers and operator keys, else the team ids of a member or a
team key): each lens has its own topic states, tracked runs, model list and — for a team lens — its own
metrics window fed only by that team's events, so totals, rates and in-flight counts of a member are
computed from their team's events alone. An event goes to the lenses that see its team; one with no team
only to "all". A frame is sent to the group of its lens and topic, so it never reaches another team's
watcher. A lens is made on its first subscriber (bootstrapped from the database, scoped) and dropped
when it has none and MAX_LENSES are kept.

Loss: publishers stamp each event with their origin and a counter (`stamp_origin`). A
number still missing after ORDER_GRACE_S means the channel layer dropped an event on its
way here, so the hub reloads its state and skips a sequence number on every topic: each
subscriber sees the gap and asks for a fresh snapshot.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
import weakref
from collections import OrderedDict

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from dashboard import snapshots
from dashboard.protocol import FLUSH_INTERVAL_S, TopicState, encode, run_id_of
from observability.metrics_window import MetricsWindow, local_window
from observability.model_status import model_status
from orchestration.live import EVENTS_GROUP, events_in

logger = logging.getLogger(__name__)

TICK_INTERVAL_S = 1.0
REFRESH_INTERVAL_S = 10.0  # model list and key budgets: admins change them rarely
METRICS_WINDOW_S = 60
TRACKED_RUNS = 300
ORDER_GRACE_S = 2.0
MAX_LENSES = 64  # lenses without watchers beyond this many are dropped
ALL = "all"  # the lens of every team

class OriginSequence:
    """The event counters seen from one publisher; numbers may arrive out of order for a moment."""

    def __init__(self, first: int) -> None:
        self.high = first
        self.missing: dict[int, float] = {}

    def see(self, number: int, now: float) -> int:
        """Returns how many events are certainly lost (a jump too big to wait for)."""
        if number > self.high:
            if number - self.high > 10_000:
                lost = number - self.high - 1
                self.high = number
                return lost
            for absent in range(self.high + 1, number):
                self.missing[absent] = now
            self.high = number
        else:
            self.missing.pop(number, None)
        return 0

    def lost(self, now: float) -> int:
        late = [number for number, since in self.missing.items() if now - since > ORDER_GRACE_S]
        for number in late:
            del self.missing[number]
        return len(late)


def lens_key(teams: frozenset[int] | None) -> str:
    """The name of the lens a set of teams sees through (part of channel-layer group names)."""
    if teams is None:
        return ALL
    name = "t" + "-".join(str(team) for team in sorted(teams))
    return name if len(name) <= 40 else "h" + hashlib.sha256(name.encode()).hexdigest()[:20]


class Lens:
    """What watchers of one set of teams see: topic states, tracked runs, the models they may call, and metrics."""

    def __init__(self, hub: "Hub", key: str, teams: frozenset[int] | None) -> None:
        self.key, self.teams = key, teams
        self.topics: dict[str, TopicState] = {
            "overview": hub._topic("overview", {"calls": snapshots.RECENT_CALLS}),
            "runs": hub._topic("runs"),
            "reviews": hub._topic("reviews"),
        }
        self.subscribers: dict[str, set[str]] = {}
        self.runs: OrderedDict[str, dict] = OrderedDict()  # run_id -> {"run": row | None, "steps": {}, "team": id}
        self.models: list[dict] = []
        # Every team: the process's window (merged across processes). One team: rates from its own events only.
        self.window = local_window if teams is None else MetricsWindow()

    def sees(self, team: int | None) -> bool:
        return self.teams is None or (team is not None and team in self.teams)

    @property
    def watched(self) -> bool:
        return any(self.subscribers.values())

    def load(self, data: dict) -> None:
        overview = self.topics["overview"]
        overview.values = {f"totals.{alias}": row for alias, row in data["totals"].items()}
        overview.values.update({f"key.{row['prefix']}": row for row in data["keys"]})
        overview.values["backlog"] = data["backlog"]
        overview.streams["calls"].clear()
        overview.streams["calls"].extend(data["recent"])
        self.models = data["models"]

    def track(self, run_id: str) -> dict:
        tracked = self.runs.get(run_id)
        if tracked is None:
            tracked = self.runs[run_id] = {"run": None, "steps": {}, "team": None}
            if len(self.runs) > TRACKED_RUNS:
                old_id, _ = self.runs.popitem(last=False)
                self.topics["runs"].values.pop(f"run.{old_id}", None)
        else:
            self.runs.move_to_end(run_id)
        return tracked

    def apply_step(self, event: dict, team: int | None) -> None:
        tracked = self.track(event["run_id"])
        tracked["team"] = team
        row = snapshots.step_row_from_event(event, tracked["steps"].get(event["step_id"]))
        tracked["steps"][event["step_id"]] = row
        run_topic = self.topics.get(f"run:{event['run_id']}")
        if run_topic is not None:
            run_topic.set(f"step.{event['step_id']}", row)
        if self.window is not local_window:  # the process window is fed by live.publish itself
            self.window.observe(event)
        if event["type"] == "step.finished" and event.get("node_type", "call") == "call" and event.get("model"):
            overview = self.topics["overview"]
            key = f"totals.{event['model']}"
            totals = dict(overview.values.get(key) or {"calls": 0, "failures": 0, "tokens": 0, "cost_usd": 0.0})
            totals["calls"] += 1
            totals["failures"] += event.get("status") == "failed"
            totals["tokens"] += (event.get("tokens_in") or 0) + (event.get("tokens_out") or 0)
            totals["cost_usd"] = round(totals["cost_usd"] + float(event.get("cost_usd") or 0), 8)
            overview.set(key, totals)
            overview.append("calls", snapshots.call_row_from_event(event))

    def apply_run(self, event: dict, team: int | None) -> None:
        tracked = self.track(event["run_id"])
        tracked["team"] = team
        row = snapshots.run_row_from_event(event, tracked["run"])
        tracked["run"] = row
        self.topics["runs"].set(f"run.{event['run_id']}", row)
        run_topic = self.topics.get(f"run:{event['run_id']}")
        if run_topic is not None:
            run_topic.set("run", row)
        if row["finished_ts"] and event.get("api_key") and event.get("cost_usd"):
            overview = self.topics["overview"]
            key = overview.values.get(f"key.{event['api_key']}")
            if key is not None:
                overview.set(f"key.{event['api_key']}",
                             {**key, "spent_usd": round(key["spent_usd"] + float(event["cost_usd"]), 8)})

    def metrics(self, full_series: bool = False) -> dict:
        rates = self.window.model_metrics(window_s=METRICS_WINDOW_S)
        if self.window is not local_window:  # a circuit is the model's state, not a team's traffic
            circuits = {alias: row["circuit"] for alias, row in local_window.model_metrics(window_s=1).items()}
            rates = {alias: {**row, "circuit": circuits.get(alias, row["circuit"])} for alias, row in rates.items()}
        models = {}
        for model in self.models:
            row = rates.get(model["alias"]) or {}
            if not row and self.window is not local_window:
                row = {"circuit": circuits.get(model["alias"], "closed")}
            models[model["alias"]] = {**model, **_rate_defaults(), **row,
                                      "status": model_status(model["enabled"], row)}
        for alias, row in rates.items():  # seen live but not (yet) in the model list
            if alias not in models:
                models[alias] = {"alias": alias, "tier": "", "provider": "", "enabled": True, "admin_id": None,
                                 **row, "status": model_status(True, row)}
        series = self.window.series(span_s=900 if full_series else 20, step_s=10)
        return {"window_s": METRICS_WINDOW_S, "models": models, "series": series}


def _rate_defaults() -> dict:
    return {"calls": 0, "failures": 0, "req_per_s": 0.0, "tokens_per_s": 0.0, "cost_per_min": 0.0,
            "error_rate": 0.0, "latency_p50_ms": None, "latency_p95_ms": None, "in_flight": 0,
            "circuit": "closed"}


class Hub:
    def __init__(self, layer, *, clock=time.monotonic, interval: float = FLUSH_INTERVAL_S) -> None:
        self.layer = layer
        self.id = uuid.uuid4().hex[:10]
        self.clock, self.interval = clock, interval
        self._wake = asyncio.Event()  # set by a change to a topic with nothing pending: flush now
        self.lenses: dict[str, Lens] = {}
        self.lenses[ALL] = Lens(self, ALL, None)
        self.origins: dict[str, OriginSequence] = {}
        self.lost_events = 0
        self.frames_sent = 0
        self._reviews_to_refresh: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self.ready = asyncio.Event()
        self.channel = ""

    # The all-teams lens, as the hub was before teams (tests and tools read these).
    @property
    def topics(self) -> dict[str, TopicState]:
        return self.lenses[ALL].topics

    @property
    def subscribers(self) -> dict[str, set[str]]:
        return self.lenses[ALL].subscribers

    @property
    def runs(self) -> OrderedDict:
        return self.lenses[ALL].runs

    @property
    def models(self) -> list[dict]:
        return self.lenses[ALL].models

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        # The default "specific." prefix: channels-redis receives every process-local channel through one
        # Redis list per prefix, and a second prefix would starve (consumers hold its receive lock).
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(EVENTS_GROUP, self.channel)
        await self._load(self.lenses[ALL])
        for loop_body in (self._receive_loop, self._flush_loop, self._tick_loop, self._refresh_loop):
            self._tasks.append(asyncio.create_task(loop_body(), name=f"dashboard-hub-{loop_body.__name__}"))
        self.ready.set()

    async def _load(self, lens: Lens) -> None:
        lens.load(await database_sync_to_async(snapshots.overview_snapshot)(lens.teams))

    def _topic(self, name: str, append_limits: dict[str, int] | None = None) -> TopicState:
        return TopicState(name, append_limits, clock=self.clock, interval=self.interval, on_pending=self._wake.set)

    def group(self, topic: str, lens: str = ALL) -> str:
        middle = "" if lens == ALL else f"{lens}."
        return f"dashboard.{self.id}.{middle}{topic.replace(':', '.')}"

    async def lens(self, teams: frozenset[int] | None) -> Lens:
        """The lens of these teams, made (and bootstrapped from the database) on first use."""
        key = lens_key(teams)
        lens = self.lenses.get(key)
        if lens is None:
            lens = Lens(self, key, teams)
            await self._load(lens)
            lens = self.lenses.setdefault(key, lens)  # another subscriber may have made it meanwhile
            idle = [name for name, other in self.lenses.items() if name != ALL and not other.watched]
            for name in idle[:max(0, len(self.lenses) - MAX_LENSES)]:
                if name != key:
                    del self.lenses[name]
        return lens

    # --- subscriptions --------------------------------------------------------------------------
    async def may_watch(self, topic: str, teams: frozenset[int] | None) -> bool:
        """Whether watchers of `teams` may watch the topic: a run topic only for a run of one of those teams
        (recorded, or seen live). The answer for another team's run and for no run is the same."""
        run_id = run_id_of(topic)
        if teams is None or run_id is None:
            return True
        tracked = self.runs.get(run_id)  # seen live (with its team) though perhaps not recorded yet
        if tracked is not None:
            return tracked["team"] in teams
        recorded, team = await database_sync_to_async(snapshots.run_team)(run_id)
        return recorded and team in teams

    async def subscribe(self, topic: str, channel_name: str, teams: frozenset[int] | None = None) -> None:
        lens = await self.lens(teams)
        if topic not in lens.topics:
            lens.topics[topic] = self._topic(topic)
        lens.subscribers.setdefault(topic, set()).add(channel_name)
        await self.layer.group_add(self.group(topic, lens.key), channel_name)

    async def unsubscribe(self, topic: str, channel_name: str, teams: frozenset[int] | None = None) -> None:
        lens = self.lenses.get(lens_key(teams))
        if lens is None:
            return
        members = lens.subscribers.get(topic, set())
        members.discard(channel_name)
        await self.layer.group_discard(self.group(topic, lens.key), channel_name)
        if not members and topic.startswith("run:"):
            lens.topics.pop(topic, None)
            lens.subscribers.pop(topic, None)

    async def snapshot(self, topic: str, teams: frozenset[int] | None = None) -> dict:
        """A snapshot frame: the topic's whole state (as the lens of `teams` sees it) at its current number."""
        lens = await self.lens(teams)
        state = lens.topics[topic]
        seq = state.seq  # taken first: frames after it carry absolute values, so overlap is harmless
        if topic == "overview":
            data = {"values": dict(state.values), "streams": {"calls": list(state.streams["calls"])},
                    "metrics": lens.metrics(full_series=True)}
        elif topic == "runs":
            data = await self._runs_data(lens)
        elif topic == "reviews":
            db = await database_sync_to_async(snapshots.reviews_snapshot)(lens.teams)
            values = {f"item.{row['review_id']}": row for row in db["items"]}
            values["counts"] = db["counts"]
            data = {"values": values, "streams": {}}
        else:
            data = await self._run_data(run_id_of(topic), lens)
        return {"type": "snapshot", "topic": topic, "seq": seq, "data": data}

    async def _runs_data(self, lens: Lens) -> dict:
        db = await database_sync_to_async(snapshots.runs_snapshot)(teams=lens.teams)
        rows = {row["run_id"]: row for row in db["runs"]}
        for run_id, tracked in lens.runs.items():
            if tracked["run"]:
                rows[run_id] = {**rows.get(run_id, {}), **tracked["run"]}
        newest = sorted(rows.values(), key=lambda r: r.get("created_ts") or 0, reverse=True)[:snapshots.RECENT_RUNS]
        return {"values": {f"run.{row['run_id']}": row for row in newest}, "streams": {}}

    async def _run_data(self, run_id: str, lens: Lens) -> dict:
        db = await database_sync_to_async(snapshots.run_snapshot)(run_id)
        values = {f"step.{row['step_id']}": row for row in db["steps"]}
        run = db["run"]
        tracked = lens.runs.get(run_id)
        if tracked:
            if tracked["run"]:
                run = {**(run or {}), **tracked["run"]}
            for step_id, row in tracked["steps"].items():
                values[f"step.{step_id}"] = {**values.get(f"step.{step_id}", {}), **row}
        if run:
            values["run"] = run
        return {"values": values, "streams": {}}

    # --- events -------------------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        unreachable = 0  # consecutive failed receives: Redis down must not make this loop spin and flood logs
        try:
            while True:
                try:
                    message = await self.layer.receive(self.channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    unreachable += 1
                    if unreachable == 1 or unreachable % 100 == 0:
                        logger.warning("dashboard hub: the channel layer is unreachable (%s); retrying",
                                       type(exc).__name__)
                    await asyncio.sleep(min(2.0, 0.05 * unreachable))
                    continue
                unreachable = 0
                for event in events_in(message):
                    try:
                        self.apply(event)
                    except Exception:
                        logger.exception("dashboard hub: an event could not be applied")
        finally:  # the server is stopping: leave the group so publishers stop queueing for us
            try:
                await asyncio.wait_for(self.layer.group_discard(EVENTS_GROUP, self.channel), 1)
            except BaseException:
                pass

    def apply(self, event: dict) -> None:
        """Fold one live event into the topics it changes, in every lens that sees the event's team."""
        self._note_sequence(event)
        kind = event.get("type", "")
        if kind in ("step.started", "step.finished", "run.updated"):
            team = self._team_of(event)
            for lens in list(self.lenses.values()):
                if lens.sees(team):
                    if kind == "run.updated":
                        lens.apply_run(event, team)
                    else:
                        lens.apply_step(event, team)
        elif kind.startswith("review.") and event.get("review_id"):
            self._reviews_to_refresh.add(str(event["review_id"]))
            self._wake.set()  # the rows (and their teams) are read in flush()

    def _team_of(self, event: dict) -> int | None:
        """The event's team; a step event published without one takes its run's, as seen on run.updated."""
        if "team" in event:
            return event["team"]
        tracked = self.runs.get(event.get("run_id", ""))
        return tracked["team"] if tracked is not None else None

    def _note_sequence(self, event: dict) -> None:
        origin, number = event.get("origin"), event.get("oseq")
        if origin is None or not isinstance(number, int):
            return
        sequence = self.origins.get(origin)
        if sequence is None:
            self.origins[origin] = OriginSequence(number)
            return
        lost = sequence.see(number, time.monotonic())
        if lost:
            self._upstream_lost(lost)

    def _upstream_lost(self, count: int) -> None:
        self.lost_events += count
        logger.warning("dashboard hub: %d live events lost upstream; subscribers will resync", count)
        asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        try:
            for lens in list(self.lenses.values()):
                await self._load(lens)
        finally:
            for lens in self.lenses.values():
                for state in lens.topics.values():
                    state.mark_lost()

    # --- periodic work --------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        # Sleeps until a change wakes it (leading edge) or a held frame falls due (trailing edge);
        # at least every interval regardless, for the loss check.
        wait = self.interval
        while True:
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()  # before flushing: a change during the flush wakes the next round
            try:
                wait = await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                wait = self.interval
                logger.exception("dashboard hub: flush failed")

    async def flush(self) -> float:
        """Send every topic whose frame is due; returns the seconds until the next held one is."""
        now = time.monotonic()
        lost = sum(sequence.lost(now) for sequence in self.origins.values())
        if lost:
            self._upstream_lost(lost)
        if self._reviews_to_refresh:
            await self._refresh_reviews()
        next_due = self.interval
        for lens in list(self.lenses.values()):
            for topic, state in list(lens.topics.items()):
                due_in = state.due_in()
                if due_in is None:
                    continue
                if due_in > 0:
                    next_due = min(next_due, due_in)
                    continue
                frame = state.take_frame()
                if frame is None or not lens.subscribers.get(topic):
                    continue
                await self.layer.group_send(self.group(topic, lens.key),
                                            {"type": "dashboard.frame", "text": encode(frame)})
                self.frames_sent += 1
        return next_due

    async def _refresh_reviews(self) -> None:
        review_ids, self._reviews_to_refresh = self._reviews_to_refresh, set()
        states = await database_sync_to_async(snapshots.review_states)(review_ids)
        teams = {team for _, team in states.values()}
        for lens in list(self.lenses.values()):
            if not any(lens.sees(team) for team in teams):
                continue  # none of these items is this lens's: its rows and counts did not change
            backlog = (await database_sync_to_async(snapshots.backlog)(lens.teams)).live()
            reviews = lens.topics["reviews"]
            for review_id, (row, team) in states.items():
                if lens.sees(team):
                    reviews.set(f"item.{review_id}", row)
            reviews.set("counts", backlog)
            lens.topics["overview"].set("backlog", backlog)

    def metrics(self, full_series: bool = False) -> dict:
        """The all-teams lens's metrics (see Lens.metrics)."""
        return self.lenses[ALL].metrics(full_series)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            for lens in list(self.lenses.values()):
                if lens.subscribers.get("overview"):
                    try:
                        lens.topics["overview"].tick(lens.metrics())
                    except Exception:
                        logger.exception("dashboard hub: metrics tick failed")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            try:
                await self.refresh_registry()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("dashboard hub: refresh failed")

    async def refresh_registry(self) -> None:
        """Pick up models and API keys an admin added or changed (and which a team may call or owns)."""
        for lens in list(self.lenses.values()):
            lens.models = await database_sync_to_async(snapshots.model_list)(lens.teams)
            keys = await database_sync_to_async(snapshots.active_keys)(lens.teams)
            overview = lens.topics["overview"]
            for row in keys:
                current = overview.values.get(f"key.{row['prefix']}")
                # The database lags live spending by the writer's flush interval: never step back.
                merged = {**row, "spent_usd": max(row["spent_usd"], (current or {}).get("spent_usd", 0))}
                if merged != current:
                    overview.set(f"key.{row['prefix']}", merged)
            current_keys = {f"key.{row['prefix']}" for row in keys}
            for gone in [k for k in overview.values if k.startswith("key.") and k not in current_keys]:
                overview.set(gone, None)  # revoked, or moved to another team


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


async def get_hub() -> Hub:
    """This event loop's hub, started on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(get_channel_layer())
        try:
            await hub.start()
        except Exception:
            del _hubs[loop]
            raise
    await hub.ready.wait()
    return hub


def running_hubs() -> list[Hub]:
    """Hubs whose event loop is still running (a stopped server's hub lingers until collected)."""
    return [hub for loop, hub in list(_hubs.items()) if loop.is_running()]

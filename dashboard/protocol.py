"""The dashboard websocket protocol: topics, snapshots, coalesced deltas, sequence numbers.

Client -> server (JSON text):
    {"type": "subscribe", "topic": "overview" | "runs" | "run:<uuid>" | "reviews"}
    {"type": "resync", "topic": ...}        same as subscribe: a fresh snapshot (after a gap)
    {"type": "unsubscribe", "topic": ...}
    {"type": "ping"}

Server -> client:
    {"type": "snapshot", "topic": t, "seq": n, "data": {...}}
    {"type": "delta", "topic": t, "seq": n, "ts": ms, "changes": {key: value | null}, "appends": {stream: [...]}}
    {"type": "metrics.tick", ...same as delta..., "metrics": {"models": {...}, "series": {...}}}   (overview)
    {"type": "error", "code": "invalid_json" | "invalid_message" | "unknown_topic" | "not_found", "message": ...}
                                            (not_found: a run:<id> of a team the viewer does not watch, or no
                                            such run — the same answer, so it hints at nothing)
    {"type": "pong"}

Teams: a socket sees the teams of its viewer (dashboard/viewers.py): a superuser or an operator key
(`events:all`, or `events` on a key with no team) every team, a member their teams, a team key its team.
`/ws/dashboard/?team=<slug>` narrows that to one team. Every topic — overview totals, calls, keys,
backlog and metrics ticks included — is then built from those teams' runs and events only.

Close codes: the handshake itself is refused (HTTP 403) for a Host outside ALLOWED_HOSTS, an Origin
that is neither the page's own (scheme, host and port) nor in CSRF_TRUSTED_ORIGINS, no session of a
superuser or team member and no API key with scope `events` (a handshake without Origin is a program: key
only), or a `?team=` the viewer may not watch (or that does not exist: the same refusal).
An open socket is closed, within REGISTRY_CHECK_INTERVAL or at its next subscribe/resync, with
    4401  the credential is gone: the key was revoked or deleted, the user deactivated or deleted
    4403  the credential no longer allows watching: the key lost `events`, the user is neither a
          superuser nor in any team any more
    4409  the viewer's teams changed (membership, the key's team or scopes): reconnect to watch the new ones
4401 and 4403 are not worth retrying with the same credential.

A topic is keyed state. Events change keys; a frame carries the *last* value of every key
changed since the previous frame (null = the key is gone), so a subscriber loses no state however
many events arrive. Frames are paced per topic, leading edge plus trailing edge: a change to a topic
that sent no frame in the last FLUSH_INTERVAL_S goes out at once (an idle view pays no coalescing
delay); changes arriving within the interval after a frame are held and go out together when it
ends. So a topic sends at most one frame per FLUSH_INTERVAL_S (~10 a second) and a burst of any
size costs one leading frame plus one trailing frame. Every subscriber of a topic gets every frame
of it (encoded once, sent to the topic's group), so this pace is also each client's per topic; a
new subscriber starts from a snapshot, sent at once. Append streams (the overview's latest calls)
keep only their newest items. Every frame of a topic carries the next sequence number; a
client applies a frame only if its seq is the one after the last it applied, ignores older
ones, and on a gap asks for a fresh snapshot (`resync`): frames can be lost on the way
(channels-redis drops group messages to a full channel), and values are absolute, so a
snapshot plus later frames is always the whole state.
"""
from __future__ import annotations

import re
import time
import uuid
from collections import deque

import orjson

FLUSH_INTERVAL_S = 0.1  # the least time between two frames of a topic
FIXED_TOPICS = ("overview", "runs", "reviews")
RUN_TOPIC_RE = re.compile(r"^run:([0-9a-fA-F-]{32,36})$")


def topic_is_valid(topic) -> bool:
    if not isinstance(topic, str):
        return False
    if topic in FIXED_TOPICS:
        return True
    match = RUN_TOPIC_RE.match(topic)
    if not match:
        return False
    try:
        uuid.UUID(match.group(1))
    except ValueError:
        return False
    return True


def run_id_of(topic: str) -> str | None:
    match = RUN_TOPIC_RE.match(topic)
    return str(uuid.UUID(match.group(1))) if match else None


def parse_client_message(text: str | None) -> tuple[dict | None, dict | None]:
    """(message, None) for a well-formed message, or (None, error frame)."""
    try:
        message = orjson.loads(text or "")
    except orjson.JSONDecodeError:
        return None, error_frame("invalid_json", "The message is not valid JSON.")
    if not isinstance(message, dict) or message.get("type") not in {"subscribe", "resync", "unsubscribe", "ping"}:
        return None, error_frame("invalid_message", "Send {\"type\": \"subscribe\", \"topic\": ...}, "
                                                    "\"resync\", \"unsubscribe\" or \"ping\".")
    if message["type"] != "ping" and not topic_is_valid(message.get("topic")):
        return None, error_frame("unknown_topic", "Topics are overview, runs, reviews and run:<id>.",
                                 topic=message.get("topic") if isinstance(message.get("topic"), str) else None)
    return message, None


def error_frame(code: str, message: str, **extra) -> dict:
    return {"type": "error", "code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}


def encode(frame: dict) -> str:
    return orjson.dumps(frame).decode()


class TopicState:
    """The keyed state of one topic, the changes not yet sent, the topic's sequence number, and
    when its last frame went out (the pacing's only memory; `clock` is injectable for tests)."""

    def __init__(self, name: str, append_limits: dict[str, int] | None = None, *, clock=time.monotonic,
                 interval: float = FLUSH_INTERVAL_S, on_pending=None) -> None:
        self.name = name
        self.clock = clock
        self.interval = interval
        self.on_pending = on_pending  # called when the topic goes from nothing to send to something
        self.sent_at: float | None = None
        self.seq = 0
        self.values: dict[str, object] = {}
        self.streams: dict[str, deque] = {s: deque(maxlen=n) for s, n in (append_limits or {}).items()}
        self._dirty: set[str] = set()
        self._appended: dict[str, deque] = {s: deque(maxlen=n) for s, n in (append_limits or {}).items()}
        self._tick: dict | None = None
        self._skip = False

    def set(self, key: str, value) -> None:
        """Change a key (None removes it); only the last value before a frame is sent."""
        was_pending = self.pending
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
        self._dirty.add(key)
        self._became_pending(was_pending)

    def append(self, stream: str, item) -> None:
        was_pending = self.pending
        self.streams[stream].appendleft(item)
        self._appended[stream].appendleft(item)
        self._became_pending(was_pending)

    def tick(self, metrics: dict) -> None:
        """Attach a metrics tick to the next frame (the newest tick replaces an unsent one)."""
        was_pending = self.pending
        self._tick = metrics
        self._became_pending(was_pending)

    def mark_lost(self) -> None:
        """Something upstream was lost: the next frame skips a number so every subscriber resyncs."""
        was_pending = self.pending
        self._skip = True
        self._became_pending(was_pending)

    def _became_pending(self, was_pending: bool) -> None:
        # Only the first change after a frame wakes the sender: later ones ride on the frame it schedules.
        if not was_pending and self.on_pending is not None:
            self.on_pending()

    @property
    def pending(self) -> bool:
        return bool(self._dirty or self._tick is not None or any(self._appended.values()) or self._skip)

    def due_in(self) -> float | None:
        """Seconds until the pending changes may be sent; None when nothing is pending.

        0 when the topic sent nothing in the last interval (leading edge: no reason to wait);
        otherwise the rest of the interval since the last frame (trailing edge: what arrives
        meanwhile is coalesced into that one frame, which keeps the cap).
        """
        if not self.pending:
            return None
        if self.sent_at is None:
            return 0.0
        return max(0.0, self.sent_at + self.interval - self.clock())

    def take_frame(self, now_ms: int | None = None) -> dict | None:
        """The coalesced frame of everything changed since the last one, or None. Does not check
        the pace (`due_in`): the caller does; the frame's time is remembered for the next check."""
        if not self.pending:
            return None
        self.sent_at = self.clock()
        self.seq += 2 if self._skip else 1
        self._skip = False
        frame = {"type": "delta", "topic": self.name, "seq": self.seq, "ts": now_ms or int(time.time() * 1000),
                 "changes": {key: self.values.get(key) for key in self._dirty}, "appends": {}}
        for stream, items in self._appended.items():
            if items:
                frame["appends"][stream] = list(items)
                items.clear()
        if self._tick is not None:
            frame["type"] = "metrics.tick"
            frame["metrics"] = self._tick
            self._tick = None
        self._dirty.clear()
        return frame

    def snapshot_frame(self, data: dict) -> dict:
        return {"type": "snapshot", "topic": self.name, "seq": self.seq, "data": data}

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
    {"type": "error", "code": "invalid_json" | "invalid_message" | "unknown_topic" | "forbidden", "message": ...}
    {"type": "pong"}

Close codes: the handshake itself is refused (HTTP 403) for a Host outside ALLOWED_HOSTS, an Origin
that is neither the page's own (scheme, host and port) nor in CSRF_TRUSTED_ORIGINS, or no staff
session and no API key with scope `events` (a handshake without Origin is a program: key only).
An open socket is closed, within REGISTRY_CHECK_INTERVAL or at its next subscribe/resync, with
    4401  the credential is gone: the key was revoked or deleted, the user deactivated or deleted
    4403  the credential no longer allows watching: the key lost `events`, the user lost staff
Neither is worth retrying with the same credential (dashboard/viewers.py).

A topic is keyed state. Events change keys; changes are held and flushed at most every
FLUSH_INTERVAL_S as one frame per topic carrying the *last* value of every key changed since
the previous frame (null = the key is gone), so however many events arrive a subscriber gets
at most ~10 frames a second and loses no state. Append streams (the overview's latest calls)
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

FLUSH_INTERVAL_S = 0.1
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
    """The keyed state of one topic, the changes not yet sent, and the topic's sequence number."""

    def __init__(self, name: str, append_limits: dict[str, int] | None = None) -> None:
        self.name = name
        self.seq = 0
        self.values: dict[str, object] = {}
        self.streams: dict[str, deque] = {s: deque(maxlen=n) for s, n in (append_limits or {}).items()}
        self._dirty: set[str] = set()
        self._appended: dict[str, deque] = {s: deque(maxlen=n) for s, n in (append_limits or {}).items()}
        self._tick: dict | None = None
        self._skip = False

    def set(self, key: str, value) -> None:
        """Change a key (None removes it); only the last value before a flush is sent."""
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
        self._dirty.add(key)

    def append(self, stream: str, item) -> None:
        self.streams[stream].appendleft(item)
        self._appended[stream].appendleft(item)

    def tick(self, metrics: dict) -> None:
        """Attach a metrics tick to the next frame (the newest tick replaces an unsent one)."""
        self._tick = metrics

    def mark_lost(self) -> None:
        """Something upstream was lost: the next frame skips a number so every subscriber resyncs."""
        self._skip = True

    @property
    def pending(self) -> bool:
        return bool(self._dirty or self._tick is not None or any(self._appended.values()) or self._skip)

    def take_frame(self, now_ms: int | None = None) -> dict | None:
        """The coalesced frame of everything changed since the last one, or None."""
        if not self.pending:
            return None
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

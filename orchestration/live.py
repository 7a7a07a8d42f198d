"""Publishing live events to dashboards: one helper, never blocking or failing a run.

Channel-layer messages are at-most-once; an event that cannot be delivered is
dropped and counted (`stats["dropped"]`, `podium_live_events_dropped_total`), never raised to the caller.

Every event is a dict `{"type": ..., "ts": <epoch ms>, ...}` built by a builder of
orchestration/engine/events.py, whose TypedDicts say what each type carries: step.started,
step.finished, run.updated, review.created, review.updated, review.decided, model.health.
"""
from __future__ import annotations

import asyncio
import logging
import weakref

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from orchestration.engine.events import Event
from orchestration.instruments import LIVE_EVENTS_DROPPED
from orchestration.process_loop import process_loop

logger = logging.getLogger(__name__)

EVENTS_GROUP = "podium.events"
SEND_TIMEOUT_S = 1.0
stats = {"published": 0, "dropped": 0}
# Callables fed every event before it is sent (metrics, tracing); they must be quick and never block.
observers: list = []


def _observe(event: Event) -> None:
    for observer in observers:
        try:
            observer(event)
        except Exception:  # an observer's bug must not fail a run
            logger.exception("live event observer %r failed", observer)


async def publish_async(event: Event) -> None:
    await _send([event])


# One channel-layer message carries the events a loop published since its last message, up to this many and
# about this much text (prompts and outputs ride in step events): a message costs channels-redis several
# Redis commands, whatever it holds.
MAX_EVENTS_PER_MESSAGE = 200
MAX_MESSAGE_CHARS = 1_000_000


def _messages(events: list[Event]):
    part, chars = [], 0
    for event in events:
        size = _approx_chars(event)
        if part and (len(part) >= MAX_EVENTS_PER_MESSAGE or chars + size > MAX_MESSAGE_CHARS):
            yield part
            part, chars = [], 0
        part.append(event)
        chars += size
    if part:
        yield part


def _approx_chars(event: Event) -> int:
    """The text an event carries, roughly: the fields that hold model text (the rest is small and bounded)."""
    size = 200 + sum(len(event.get(field) or "") for field in ("output", "preview", "error"))
    prompt = event.get("prompt")
    if isinstance(prompt, list):  # [{"role": ..., "content": ...}, ...]; content may be parts: priced flat
        size += sum(len(message["content"]) if isinstance(message, dict) and isinstance(message.get("content"), str)
                    else 1_000 for message in prompt)
    return size


async def _send(events: list[Event]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    parts = list(_messages(events))
    for index, part in enumerate(parts):
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):  # unlike wait_for, no extra task per message
                await layer.group_send(EVENTS_GROUP, {"type": "podium.events", "events": part})
            stats["published"] += len(part)
        except (TypeError, ValueError) as exc:  # a value the layer cannot encode: only its own event is lost
            if len(part) == 1:
                _dropped(1, exc)
            else:
                for event in part:
                    await _send([event])
        except Exception as exc:  # Redis down, channel full, timeout: the run goes on, and so does the sender:
            # the rest is dropped at once rather than waited on part by part, so that a backlog cannot build up
            _dropped(sum(len(rest) for rest in parts[index:]), exc)
            return


def _dropped(count: int, exc: BaseException | None) -> None:
    before, stats["dropped"] = stats["dropped"], stats["dropped"] + count
    LIVE_EVENTS_DROPPED.inc(count)
    if before == 0 or before // 100 != stats["dropped"] // 100:  # the first, then about one in 100
        logger.warning("live events dropped (%s dropped so far): %s", stats["dropped"],
                       type(exc).__name__ if exc else "not answered")


def events_in(message: dict) -> list[Event]:
    """The live events a channel-layer message of the events group carries (none for any other message).
    `podium.event` (one event a message) is what a process of an earlier version sends during an upgrade."""
    kind = message.get("type")
    events = message.get("events") if kind == "podium.events" else [message.get("event")] if kind == "podium.event" \
        else None
    return [event for event in events if isinstance(event, dict)] if isinstance(events, list) else []


def publish(event: Event) -> None:
    """Fire and forget from async code; send and wait (bounded) from sync code.

    From async code the observers (metrics, Prometheus, origin numbers, traces) run with the send, on the
    loop's next turn, not in the caller: a /v1 call publishes four events, and their observers no longer
    stand between the upstream's answer and the client's (its step.started ones run while the upstream works)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _observe(event)
        _publish_from_sync(event)
        return
    batch = _outbox.get(loop)
    if batch is not None:  # a turn is already scheduled on this loop: ride along
        batch.append(event)
        return
    _outbox[loop] = [event]
    loop.call_soon(_drain, loop)


# Events published on one loop between two of its iterations are observed together on its next turn; then
# one sender task per loop sends what has been observed, in order, as few messages as it can (a message or a
# task per event was a measurable share of the /v1 hot path's CPU: four events a call, and on Redis four group
# sends were half of a call's CPU). One sender, not a task per turn: two messages never race each other.
_outbox: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Event]]" = weakref.WeakKeyDictionary()
_unsent: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Event]]" = weakref.WeakKeyDictionary()
_senders: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    events = _outbox.pop(loop, ())
    for event in events:
        _observe(event)  # before the send: the origin stamp numbers what receivers get
    if not events or _nobody_listens(get_channel_layer()):
        return  # no task for events nobody would receive
    _unsent.setdefault(loop, []).extend(events)
    if loop not in _senders:
        _senders[loop] = loop.create_task(_send_unsent(loop))  # held here until it ends


async def _send_unsent(loop: asyncio.AbstractEventLoop) -> None:
    try:
        while events := _unsent.pop(loop, None):  # what arrived meanwhile goes in the next message(s)
            await _send(events)
    except asyncio.CancelledError:  # the loop is ending: what it had not started sending is lost, and counted
        _dropped(len(_unsent.pop(loop, ())), None)
        raise
    finally:
        _senders.pop(loop, None)


async def sent(timeout_s: float = SEND_TIMEOUT_S + 0.5) -> None:
    """Wait (bounded) until what this loop published has been handed to the channel layer: a loop about to end
    (a Celery worker's between tasks, a test's) would otherwise take its last events with it."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)  # publishes scheduled from other threads (call_soon_threadsafe) run first
    for _ in range(10):  # their turn: the observers, then the sender
        if loop not in _outbox:
            break
        await asyncio.sleep(0)
    sender = _senders.get(loop)
    if sender is not None:
        await asyncio.wait([sender], timeout=timeout_s)


def _nobody_listens(layer) -> bool:
    """Embedded mode (in-memory layer) with no dashboard open in this process: nobody to deliver to."""
    return isinstance(layer, InMemoryChannelLayer) and not layer.groups.get(EVENTS_GROUP)


def _publish_from_sync(event: Event) -> None:
    if isinstance(get_channel_layer(), InMemoryChannelLayer | None):
        async_to_sync(publish_async)(event)  # in-process only: no connection to keep
        return
    # Redis: on the process's long-lived loop, never a loop per event (see process_loop.py).
    try:
        process_loop.run(publish_async(event), timeout=SEND_TIMEOUT_S + 1)
    except Exception:  # publish_async counts its own failures; this is the loop thread not answering
        _dropped(1, None)


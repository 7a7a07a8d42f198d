"""Publishing live events to dashboards: one helper, never blocking or failing a run.

Channel-layer messages are at-most-once; an event that cannot be delivered is
dropped and counted (`dropped_events`), never raised to the caller.

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
from orchestration.process_loop import process_loop

logger = logging.getLogger(__name__)

EVENTS_GROUP = "podium.events"
SEND_TIMEOUT_S = 1.0
stats = {"published": 0, "dropped": 0}
_pending: set[asyncio.Task] = set()
# Callables fed every event before it is sent (metrics, tracing); they must be quick and never block.
observers: list = []


def _observe(event: Event) -> None:
    for observer in observers:
        try:
            observer(event)
        except Exception:  # an observer's bug must not fail a run
            logger.exception("live event observer %r failed", observer)


async def publish_async(event: Event) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):  # unlike wait_for, no extra task per event
            await layer.group_send(EVENTS_GROUP, {"type": "podium.event", "event": event})
        stats["published"] += 1
    except Exception as exc:  # Redis down, channel full, timeout: the run goes on
        stats["dropped"] += 1
        if stats["dropped"] % 100 == 1:
            logger.warning("live event dropped (%s dropped so far): %s", stats["dropped"], type(exc).__name__)


def publish(event: Event) -> None:
    """Fire and forget from async code; send and wait (bounded) from sync code."""
    _observe(event)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _publish_from_sync(event)
        return
    if _nobody_listens(get_channel_layer()):
        return  # no task for events nobody would receive
    batch = _outbox.get(loop)
    if batch is not None:  # a send is already scheduled on this loop: ride along
        batch.append(event)
        return
    _outbox[loop] = [event]
    task = loop.create_task(_send_batch(loop))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


# Events published on one loop between two of its iterations go out in one task, in order: the /v1
# hot path publishes four events a request, and a task each was a measurable share of its CPU.
_outbox: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Event]]" = weakref.WeakKeyDictionary()


async def _send_batch(loop: asyncio.AbstractEventLoop) -> None:
    events = _outbox.pop(loop, ())
    if _nobody_listens(get_channel_layer()):
        return
    for event in events:
        await publish_async(event)


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
        stats["dropped"] += 1


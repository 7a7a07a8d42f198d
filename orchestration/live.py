"""Publishing live events to dashboards: one helper, never blocking or failing a run.

Channel-layer messages are at-most-once; an event that cannot be delivered is
dropped and counted (`dropped_events`), never raised to the caller.

Every event is a dict `{"type": ..., "ts": <epoch ms>, ...}`. Types in use:
  step.started   run_id, step_id, parent_id, key, node_id, node_type, model, provider, prompt
  step.finished  the same plus status, output, error, confidence, tokens_in, tokens_out, cost_usd,
                 latency_ms, started_ts, attributes
  run.updated    run_id, status, target, kind, api_key (prefix), and totals when final
  review.created / review.updated / review.decided   review_id, run_id, status, ...
  model.health   model, state (closed | open | half_open), in_flight
  metrics.tick   per-model windows (see dashboard aggregation)
"""
from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

EVENTS_GROUP = "podium.events"
SEND_TIMEOUT_S = 1.0
stats = {"published": 0, "dropped": 0}
_pending: set[asyncio.Task] = set()


async def publish_async(event: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await asyncio.wait_for(layer.group_send(EVENTS_GROUP, {"type": "podium.event", "event": event}),
                               SEND_TIMEOUT_S)
        stats["published"] += 1
    except Exception as exc:  # Redis down, channel full, timeout: the run goes on
        stats["dropped"] += 1
        if stats["dropped"] % 100 == 1:
            logger.warning("live event dropped (%s dropped so far): %s", stats["dropped"], type(exc).__name__)


def publish(event: dict) -> None:
    """Fire and forget from async code; send and wait (bounded) from sync code."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(publish_async)(event)
        return
    task = loop.create_task(publish_async(event))
    _pending.add(task)
    task.add_done_callback(_pending.discard)

"""The Prometheus instruments the domain itself counts into (a leaf: it imports nothing of Podium).

Most of Podium's metrics are counted from live events by the observability app; these are counted
where the thing happens, because no event carries them: a refusal by a per-key limit, a live event
dropped, the batched writer's backlog, failed flushes and dead letters. observability/prometheus.py
exports them with the rest.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge

RATE_LIMITED = Counter("podium_rate_limited", "Requests refused by a per-key limit (429)", ["reason"])
# The batched writer (orchestration/recording.py) sets the gauge once per flush, not per call.
WRITER_PENDING = Gauge("podium_writer_pending_runs", "Run records waiting for the batched writer (every live "
                       "process of this host)", multiprocess_mode="livesum")
WRITER_FAILED_FLUSHES = Counter("podium_writer_failed_flushes", "Flushes of the batched writer that failed because "
                                "the database was unavailable (the rows are kept and retried)")
# Counted where the send fails (orchestration/live.py); in the multiprocess mode the sum over the host's workers.
LIVE_EVENTS_DROPPED = Counter("podium_live_events_dropped", "Live events that could not be handed to the channel "
                              "layer (Redis unreachable, channel full, timeout): dashboards missed them")
WRITER_DEAD_LETTERS = Counter("podium_writer_dead_letters", "Rows the batched writer could never store: set aside "
                              "in the dead-letter table (or only logged if even that failed); spend settled anyway")

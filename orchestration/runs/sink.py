"""The durable event sink of workflow runs: every step is a row as it happens.

`emit` only queues (the engine's loop must not wait for a database); one writer thread per run
applies the events in order, one transaction each: a step.started inserts (or revives) the
step's row, so children always find their parent; a step.finished stores the result and, for a
model call, advances the run's and the API key's totals in the same transaction. Live events
are published after their commit. Rows are keyed by (run, key), so a re-executed run updates
its own earlier rows instead of colliding with them.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading

from django.db import close_old_connections, transaction
from django.db.models import F

from orchestration import live
from orchestration.access import budgets
from orchestration.engine.events import Event, with_team
from orchestration.models import APIKey, Run, Step
from orchestration.models.runs import RunStatus, StepStatus
from orchestration.recording import money, ms_to_datetime, step_from_event

logger = logging.getLogger(__name__)
STEP_FIELDS = [f.name for f in Step._meta.concrete_fields if f.name not in ("id", "run")]
_STOP = object()


class DurableSink:
    def __init__(self, *, run_id: str, api_key_id: int | None, meta: dict,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.run_id, self.api_key_id = run_id, api_key_id
        self.meta = meta  # the RunContext's meta: a cancel seen here reaches the engine at the next node
        self.loop = loop
        self.failed_writes = 0
        self._team: list[int | None] = []  # the run's team, read once by the writer thread
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"podium-run-{run_id[:8]}", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        if event.get("type") in ("step.started", "step.finished") and event.get("run_id") == self.run_id:
            self._queue.put(event)
        else:  # model.health and the like: live only
            live.publish(event)

    def close(self) -> None:
        """Write what is queued, then stop (blocking: call through asyncio.to_thread from async code)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        try:
            while (event := self._queue.get()) is not _STOP:
                try:
                    self._write(event)
                except Exception:
                    # The run goes on; its final totals are recomputed from the rows that made it.
                    self.failed_writes += 1
                    logger.exception("run %s: could not record %s %s", self.run_id, event["type"], event.get("key"))
                    close_old_connections()
                    continue
                self._publish(event)
        finally:
            close_old_connections()

    def _publish(self, event: Event) -> None:
        if not self._team:  # live step events carry the run's team (the dashboard routes them by it)
            self._team.append(Run.objects.filter(pk=self.run_id).values_list("team_id", flat=True).first())
        event = with_team(event, self._team[0])
        loop = self.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(live.publish, event)
        else:
            live.publish(event)

    def _write(self, event: dict) -> None:
        with transaction.atomic():
            existing = Step.objects.filter(run_id=self.run_id, key=event["key"]).values_list("id", flat=True).first()
            if event["type"] == "step.started":
                self._write_started(event, existing)
            else:
                self._write_finished(event, existing)
        if event["type"] == "step.finished":
            budgets.settle_step(event)  # the step's budget hold gives way to its committed cost

    def _write_started(self, event: dict, existing) -> None:
        fields = dict(parent_id=event.get("parent_id"), node_id=event.get("node_id", ""),
                      node_type=event.get("node_type", "call"), model_alias=event.get("model") or "",
                      provider=event.get("provider") or "", status=StepStatus.RUNNING,
                      prompt=event.get("prompt") or [], output="", error="", confidence=None,
                      started_at=ms_to_datetime(event["ts"]), finished_at=None)
        if existing is None:
            Step.objects.create(id=event["step_id"], run_id=self.run_id, key=event["key"], **fields)
        else:  # re-executed after an interruption, or a retried call: the row (and its id) lives on
            Step.objects.filter(pk=existing).update(**fields)

    def _write_finished(self, event: dict, existing) -> None:
        step = step_from_event(event)
        step.status = event["status"] if event["status"] in StepStatus.values else StepStatus.FAILED
        fields = [name for name in STEP_FIELDS if not (name == "prompt" and not event.get("prompt"))]
        if existing is None:
            step.save(force_insert=True)
        else:
            step.id = existing
            step._state.adding = False  # an update of the row step.started wrote
            step.save(update_fields=fields)
        if event.get("node_type", "call") == "call" and (event.get("cost_usd") or event.get("tokens_in")
                                                          or event.get("tokens_out")):
            cost = money(event.get("cost_usd") or 0.0)
            Run.objects.filter(pk=self.run_id).update(
                tokens_in=F("tokens_in") + int(event.get("tokens_in") or 0),
                tokens_out=F("tokens_out") + int(event.get("tokens_out") or 0), cost_usd=F("cost_usd") + cost)
            if self.api_key_id and cost:
                APIKey.objects.filter(pk=self.api_key_id).update(spent_usd=F("spent_usd") + cost)
        if Run.objects.filter(pk=self.run_id, status=RunStatus.CANCELLED).exists():
            self.meta["cancel_requested"] = True

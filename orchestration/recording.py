"""Turning engine events into Run/Step rows, and the batched writer of the /v1 hot path.

The writer is a background thread: the request path only appends to a list, and
rows are bulk-inserted at most WRITER_FLUSH_INTERVAL later. A failed flush keeps
its rows for the next attempt; `stop()` (registered at exit and called on ASGI
lifespan shutdown) flushes what is left, so a clean shutdown loses nothing.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

import orjson
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections, router, transaction
from django.db.models import F

from orchestration.models import APIKey, Run, Step

logger = logging.getLogger(__name__)
STEP_EVENT_ATTRIBUTES = ("cached", "redacted", "retries", "fallback_from", "reason", "tokens_estimated",
                         "tier_reason", "iteration", "branch")


def ms_to_datetime(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def money(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.00000001"))


class Row(dict):
    """An unsaved row as plain values by attribute name (`Row(Run, id=..., api_key_id=...)`), readable like a
    model instance (`row.tokens_in`; a field left out reads as its default). The hot path hands these to the
    writer: building a Model instance costs about ten times more, and the writer only needs the values."""

    __slots__ = ("model",)

    def __init__(self, model, values=(), **fields):
        super().__init__(values, **fields)
        self.model = model

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            pass
        try:
            return self.model._meta.get_field(name).get_default()
        except Exception:
            raise AttributeError(name) from None


def step_values(event: dict) -> dict:
    attributes = dict(event.get("attributes") or {})
    for name in STEP_EVENT_ATTRIBUTES:
        if event.get(name) not in (None, False, ""):
            attributes.setdefault(name, event[name])
    return dict(
        id=event["step_id"], run_id=event["run_id"], parent_id=event.get("parent_id"), key=event["key"],
        node_id=event.get("node_id", ""), node_type=event.get("node_type", "call"),
        model_alias=event.get("model") or "", provider=event.get("provider") or "",
        status=event["status"], prompt=event.get("prompt") or [], output=event.get("output") or "",
        confidence=event.get("confidence"), tokens_in=event.get("tokens_in", 0),
        tokens_out=event.get("tokens_out", 0), tokens_estimated=bool(event.get("tokens_estimated")),
        cost_usd=money(event.get("cost_usd", 0.0)), latency_ms=event.get("latency_ms"),
        error=event.get("error") or "", attributes=attributes,
        started_at=ms_to_datetime(event.get("started_ts", event["ts"])), finished_at=ms_to_datetime(event["ts"]),
    )


def step_from_event(event: dict) -> Step:
    """A `step.finished` event as an unsaved Step row."""
    return Step(**step_values(event))


def step_row(event: dict) -> Row:
    """A `step.finished` event as a Row for the batched writer (the hot path's `step_from_event`)."""
    return Row(Step, step_values(event))


_insert_plans: dict[tuple, tuple] = {}
# Rows prepared at a time: the driver releases the GIL for every row it inserts, so a waiting event loop
# gets it back within a chunk's preparation (well under a millisecond), not a whole batch's.
# (A time.sleep(0) between chunks cost ~80 µs of wall time each on a VM and gave nothing more.)
INSERT_CHUNK = 10
# Values of these field types reach the database driver as they are.
PLAIN_FIELD_TYPES = frozenset({"CharField", "TextField", "IntegerField", "PositiveIntegerField", "BigIntegerField",
                               "SmallIntegerField", "PositiveSmallIntegerField", "FloatField", "BooleanField",
                               "AutoField", "BigAutoField"})


def _plain(value):
    return str(value) if isinstance(value, str) and type(value) is not str else value  # TextChoices -> str


def column_converter(field, connection):
    """A function giving what `field.get_db_prep_save(value, connection)` gives, several times cheaper for the
    values the hot path hands over (ids as text, aware datetimes, Decimals, JSON of plain types); any other
    value goes through Django's own preparation. This was most of the batched writer's CPU (bench/v1_cpu.py)."""
    def django_prepared(value):
        return field.get_db_prep_save(value, connection)

    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return None  # pre_save sets it: the caller takes Django's path
    kind = (field.target_field if field.is_relation else field).get_internal_type()
    if kind in PLAIN_FIELD_TYPES:
        return _plain
    if kind == "UUIDField":
        native = connection.features.has_native_uuid_field

        def uuid_value(value):
            if value is None:
                return None
            if not isinstance(value, uuid.UUID):
                value = uuid.UUID(value)
            return value if native else value.hex
        return uuid_value
    if kind == "DecimalField":
        return lambda value: value if type(value) is Decimal else django_prepared(value)
    if kind == "DateTimeField" and connection.vendor in ("sqlite", "postgresql"):
        zone = connection.timezone if connection.vendor == "sqlite" else None

        def datetime_value(value):
            if not isinstance(value, datetime) or value.tzinfo is None:
                return django_prepared(value)  # None, text, naive: Django's path (it warns about naive ones)
            return str(value.astimezone(zone).replace(tzinfo=None)) if zone else value  # sqlite: naive UTC text
        return datetime_value
    if kind == "JSONField" and connection.vendor == "sqlite" and field.encoder is None:
        def json_value(value):
            try:
                return orjson.dumps(value).decode()
            except TypeError:  # what orjson refuses (non-text keys, say), Django's json.dumps may take
                return django_prepared(value)
        return json_value
    return django_prepared


_MISSING = object()


def _prepared_row(obj, columns, connection) -> tuple:
    """One row's values as the database driver takes them, from a Row (a field it lacks takes its default)
    or a Model instance."""
    values = []
    if isinstance(obj, dict):
        get = obj.get
        for field, convert in columns:
            value = get(field.attname, _MISSING)
            if value is _MISSING:
                value = field.get_default()
            values.append(convert(value) if convert is not None else field.get_db_prep_save(value, connection))
    else:
        for field, convert in columns:
            value = field.pre_save(obj, True)
            values.append(convert(value) if convert is not None else field.get_db_prep_save(value, connection))
    return tuple(values)


def insert_rows(model, objs: list) -> None:
    """What `bulk_create` does for rows whose primary keys are set, minus its per-row SQL compilation
    and with cheaper per-value preparation (`column_converter`).

    It matters: the writer thread holds the GIL while it prepares rows, and every millisecond it holds it
    is a millisecond the event loop serving /v1 waits; on one core its CPU is the loop's CPU.
    """
    if not objs:
        return
    connection = connections[router.db_for_write(model)]
    plan = _insert_plans.get((model, connection.alias))
    if plan is None:
        fields = model._meta.concrete_fields
        quote = connection.ops.quote_name
        sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
               f"VALUES ({', '.join(['%s'] * len(fields))})")
        converters = tuple(column_converter(field, connection) for field in fields)
        plan = _insert_plans[(model, connection.alias)] = (sql, tuple(zip(fields, converters)))
    sql, columns = plan
    with connection.cursor() as cursor:
        for start in range(0, len(objs), INSERT_CHUNK):
            cursor.executemany(sql, [_prepared_row(obj, columns, connection)
                                     for obj in objs[start:start + INSERT_CHUNK]])


WRITER_NICENESS = 10


def lower_this_threads_priority() -> None:
    """Background work yields the core: while the database works (the GIL released), a request woken on
    the event loop's thread preempts this one at once instead of waiting for its time slice (Linux; a
    thread's niceness is its own there, and raising it needs no privilege)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + WRITER_NICENESS))
    except (AttributeError, OSError):  # not Linux/Unix: the writer runs at the process's priority
        pass


class BatchedWriter:
    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # a flush returns only once earlier rows are committed
        self._runs: list[Run] = []
        self._steps: list[Step] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.written_runs = 0
        self.failed_flushes = 0
        self.dropped_runs = 0  # rows the database refused for good (see _write_one_by_one)

    def add(self, run: Run | Row, steps: list[Step | Row]) -> None:
        with self._lock:
            self._runs.append(run)
            self._steps.extend(steps)
        if self._thread is None:
            self._start()

    def discard_pending(self) -> int:
        """Forget rows not yet written (tests: one test's rows must not land in the next one's database)."""
        with self._lock:
            count = len(self._runs)
            self._runs, self._steps = [], []
        return count

    def pending(self) -> int:
        with self._lock:
            return len(self._runs)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="podium-writer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        lower_this_threads_priority()
        while not self._stopping.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()
        close_old_connections()

    def flush(self) -> int:
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        with self._lock:
            runs, steps = self._runs, self._steps
            self._runs, self._steps = [], []
        if not runs:
            return 0
        try:
            self._write(runs, steps)
        except IntegrityError:
            # One row the database can never take (its API key was deleted meanwhile, say) must not
            # block every later batch: write run by run, and give up only on the runs that still fail.
            close_old_connections()
            return self._write_one_by_one(runs, steps)
        except Exception:
            # Keep the rows for the next attempt: nothing is lost because the database blinked.
            self.failed_flushes += 1
            logger.exception("batched writer: flush of %d runs failed; will retry", len(runs))
            close_old_connections()
            with self._lock:
                self._runs[:0] = runs
                self._steps[:0] = steps
            return 0
        self.written_runs += len(runs)
        return len(runs)

    def _write(self, runs: list, steps: list) -> None:
        spend: dict[int, Decimal] = defaultdict(Decimal)
        usage: dict[int, tuple[int, float]] = {}
        for run in runs:
            if run.api_key_id and run.cost_usd:
                spend[run.api_key_id] += run.cost_usd
            if run.api_key_id:
                tokens, cost = usage.get(run.api_key_id, (0, 0.0))
                usage[run.api_key_id] = (tokens + run.tokens_in + run.tokens_out, cost + float(run.cost_usd))
        with transaction.atomic():
            insert_rows(Run, runs)
            insert_rows(Step, steps)
            for key_id, amount in spend.items():
                APIKey.objects.filter(pk=key_id).update(spent_usd=F("spent_usd") + amount)
        from orchestration import limits  # imports services, which imports this module

        limits.settle(usage)  # tokens/min and budget counters, once the rows are committed

    def _write_one_by_one(self, runs: list, steps: list) -> int:
        steps_by_run: dict[str, list] = defaultdict(list)
        for step in steps:
            steps_by_run[str(step.run_id)].append(step)
        written = 0
        for run in runs:
            run_steps = steps_by_run.get(str(run.id), [])
            try:
                self._write([run], run_steps)
            except IntegrityError:
                if not run.api_key_id:
                    self.dropped_runs += 1
                    logger.error("batched writer: run %s cannot be recorded (integrity error); dropped", run.id)
                    continue
                # Its key is gone: keep the run, without the key.
                if isinstance(run, Row):
                    run["api_key_id"] = None
                else:
                    run.api_key_id = None
                try:
                    self._write([run], run_steps)
                except IntegrityError:
                    self.dropped_runs += 1
                    logger.error("batched writer: run %s cannot be recorded (integrity error); dropped", run.id)
                    continue
            written += 1
        self.written_runs += written
        return written

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        self.flush()
        self._stopping.clear()


writer = BatchedWriter(settings.PODIUM["WRITER_FLUSH_INTERVAL"])
atexit.register(writer.stop)

"""The batched writer of the /v1 hot path.

The writer is a background thread: the request path only appends to a list, and
rows are bulk-inserted at most WRITER_FLUSH_INTERVAL later. `stop()` (registered at
exit and called on ASGI lifespan shutdown) flushes what is left, so a clean shutdown
loses nothing; a killed process loses the rows still in memory (at most one interval's).

No row can stop the writer. When the database blinks (connection lost, locked) the
rows are kept and retried with backoff; any other failure is the rows' own: the batch
is written run by run, and a run that can never be stored is set aside in the
dead-letter table (WriterDeadLetter) with the reason, its spend settled all the same.
"""
from __future__ import annotations

import atexit
import itertools
import logging
import os
import reprlib
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

import orjson
from django.conf import settings
from django.db import (IntegrityError, InterfaceError, OperationalError, close_old_connections, connections, router,
                       transaction)
from django.db.models import F

from orchestration.access import budgets
from orchestration.instruments import WRITER_DEAD_LETTERS, WRITER_FAILED_FLUSHES, WRITER_PENDING
from orchestration.models import APIKey, Run, Step, WriterDeadLetter
from orchestration.recording import Row

logger = logging.getLogger(__name__)
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


# How long a flush asked from outside (tests, shutdown, commands) waits for answered calls' records to arrive.
PROMISED_WAIT_S = 2.0
# After a failed flush the writer waits interval × 2^failures, up to this, before the next attempt.
MAX_RETRY_DELAY_S = 5.0
# While the database stays unavailable, one log line this often (not one per attempt).
FAILURE_LOG_EVERY_S = 60.0
# /readyz says degraded once this many flushes in a row have failed (observability/health.py).
DEGRADED_AFTER_FAILED_FLUSHES = 3
# What a dead letter keeps of the row (WriterDeadLetter): bounded, whatever the row holds.
REASON_MAX_CHARS = 2_000
PAYLOAD_MAX_CHARS = 100_000
# Spend beyond this on one run is no spend (APIKey.spent_usd holds 14 digits, 8 of them decimals).
MAX_SETTLED_COST_USD = Decimal(100_000)


def database_blinked(exc: BaseException) -> bool:
    """Whether a write failed because of the database (connection lost, locked, shut down), not its rows:
    such rows are kept for the next attempt; any other failure is the rows' own."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    # PostgreSQL reports a row beyond one of its limits (class 54, e.g. a statement too complex) as an
    # OperationalError as well; retrying that row would fail forever.
    return not (getattr(exc.__cause__, "sqlstate", None) or "").startswith("54")


class BoundedRepr(reprlib.Repr):
    """reprlib's depth- and size-bounded repr, minus its one way to fail (ints beyond str()'s digit limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple, self.maxset = 12, 200, 200, 200, 200
        self.maxstring, self.maxother, self.maxlong = 20_000, 2_000, 100

    def repr_int(self, x, level):
        try:
            return super().repr_int(x, level)
        except ValueError:
            return f"<int of {x.bit_length()} bits>"


_bounded_repr = BoundedRepr()


def storable_text(text: str, limit: int) -> str:
    """Text any database takes: at most `limit` characters, no NUL, no lone surrogate."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _values(obj) -> dict:
    if isinstance(obj, dict):
        return dict(obj)
    return {field.attname: getattr(obj, field.attname, None) for field in obj._meta.concrete_fields}


def rendered_row(obj, steps: list = ()) -> str:
    """A Row or Model instance (and a run's steps) as bounded, storable text; never raises."""
    try:
        text = _bounded_repr.repr(_values(obj))
        if steps:
            text += "\nsteps: " + _bounded_repr.repr([_values(step) for step in steps])
    except Exception as exc:
        text = f"<not renderable: {type(exc).__name__}>"
    return storable_text(text, PAYLOAD_MAX_CHARS)


def failure_reason(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:
        message = ""
    return storable_text(f"{type(exc).__name__}: {message}", REASON_MAX_CHARS)


def settleable_usage(obj) -> tuple[int | None, int, Decimal]:
    """(API key id, tokens, cost) of a row that could not be written, as far as they are sound values."""
    key_id = getattr(obj, "api_key_id", None)
    if type(key_id) is not int or key_id <= 0:
        key_id = None
    tokens = 0
    for name in ("tokens_in", "tokens_out"):
        value = getattr(obj, name, 0)
        if type(value) is int and 0 < value < 2 ** 31:
            tokens += value
    try:
        cost = Decimal(str(getattr(obj, "cost_usd", 0) or 0))
        cost = cost.quantize(Decimal("0.00000001")) if cost.is_finite() and 0 < cost < MAX_SETTLED_COST_USD \
            else Decimal(0)
    except Exception:
        cost = Decimal(0)
    return key_id, tokens, cost


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
        self._in_flight = 0  # runs taken by the flush under way
        # Calls answered whose record is still to come (`expect`/`fulfilled`): a flush asked from outside
        # waits for those promised before it began, so it never misses a call whose answer is out.
        self._promised: set[int] = set()
        self._promises_kept = threading.Condition(self._lock)
        self._tickets = itertools.count()
        self.written_runs = 0
        self.failed_flushes = 0
        self.failures_in_a_row = 0  # flushes failed since the last one that wrote
        self.failing_since: float | None = None  # time.monotonic() of the first of them
        self._failure_logged_at = 0.0
        self.set_aside = 0  # rows stored in the dead-letter table instead (see _set_aside)
        self.dropped_rows = 0  # rows that could not even be set aside (logged)

    def add(self, run: Run | Row, steps: list[Step | Row]) -> None:
        budgets.bind_run(run)  # the /v1 call's budget hold is settled when this run is committed
        with self._lock:
            self._runs.append(run)
            self._steps.extend(steps)
        if self._thread is None:
            self._start()

    def expect(self) -> int:
        """A call's record will come shortly (once its answer is sent): a ticket for `fulfilled`."""
        ticket = next(self._tickets)
        with self._lock:
            self._promised.add(ticket)
        return ticket

    def fulfilled(self, ticket: int) -> None:
        with self._lock:
            self._promised.discard(ticket)
            self._promises_kept.notify_all()

    def _await_promised(self, timeout_s: float) -> None:
        """Until the records promised so far are added (bounded: a caller on the loop that owes one must not hang)."""
        with self._lock:
            owed = set(self._promised)
            if owed:
                self._promises_kept.wait_for(lambda: self._promised.isdisjoint(owed), timeout_s)

    def discard_pending(self) -> int:
        """Forget rows not yet written (tests: one test's rows must not land in the next one's database)."""
        with self._lock:
            count = len(self._runs)
            self._runs, self._steps = [], []
        return count

    def pending(self) -> int:
        """Runs not yet recorded: waiting, or in a flush under way."""
        with self._lock:
            return len(self._runs) + self._in_flight

    def failing_for_s(self) -> float:
        since = self.failing_since
        return 0.0 if since is None else time.monotonic() - since

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="podium-writer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        lower_this_threads_priority()
        while not self._stopping.is_set():
            self._wake.wait(self._next_delay())
            self._wake.clear()
            try:
                self.flush(promised_wait_s=0)  # the next round takes what comes meanwhile
            except Exception:  # a bug here must not end recording for the life of the process
                logger.exception("batched writer: flush failed unexpectedly")
            WRITER_PENDING.set(self.pending())
        close_old_connections()

    def _next_delay(self) -> float:
        if not self.failures_in_a_row:
            return self.interval_s
        return min(MAX_RETRY_DELAY_S, max(self.interval_s, 0.01) * 2 ** min(self.failures_in_a_row, 16))

    def flush(self, *, promised_wait_s: float = PROMISED_WAIT_S) -> int:
        """Write what is waiting, including the records of calls already answered and about to be added."""
        if promised_wait_s > 0:
            self._await_promised(promised_wait_s)
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        with self._lock:
            runs, steps = self._runs, self._steps
            self._runs, self._steps = [], []
            self._in_flight = len(runs)
        if not runs:
            return 0
        try:
            return self._flush_taken(runs, steps)
        finally:
            self._in_flight = 0

    def _flush_taken(self, runs: list, steps: list) -> int:
        try:
            self._write(runs, steps)
        except Exception as exc:
            close_old_connections()
            if database_blinked(exc):
                self._keep(runs, steps, exc)
                return 0
            # Some row here can never be written (it cannot be serialised, the database refuses a value,
            # its API key was deleted meanwhile...): it must not hold back the others.
            return self._write_one_by_one(runs, steps)
        if self.failing_since is not None:
            self._recovered()
        self.written_runs += len(runs)
        return len(runs)

    def _keep(self, runs: list, steps: list, exc: BaseException) -> None:
        """Put rows back for the next attempt: nothing is lost because the database blinked."""
        with self._lock:
            self._runs[:0] = runs
            self._steps[:0] = steps
            self._in_flight = 0
        now = time.monotonic()
        self.failed_flushes += 1
        self.failures_in_a_row += 1
        WRITER_FAILED_FLUSHES.inc()
        if self.failing_since is None:
            self.failing_since = self._failure_logged_at = now
            logger.warning("batched writer: the database is unavailable (%s); %d runs kept, retrying with backoff",
                           failure_reason(exc), self.pending())
        elif now - self._failure_logged_at >= FAILURE_LOG_EVERY_S:
            self._failure_logged_at = now
            logger.warning("batched writer: the database has been unavailable for %.0fs (%s); %d runs kept",
                           now - self.failing_since, failure_reason(exc), self.pending())

    def _recovered(self) -> None:
        logger.warning("batched writer: writing again after %.1fs and %d failed flushes",
                       self.failing_for_s(), self.failures_in_a_row)
        self.failing_since, self.failures_in_a_row = None, 0

    def _write(self, runs: list, steps: list) -> None:
        spend: dict[int, Decimal] = defaultdict(Decimal)
        for run in runs:
            if run.api_key_id and run.cost_usd:
                spend[run.api_key_id] += run.cost_usd
        with transaction.atomic():
            insert_rows(Run, runs)
            insert_rows(Step, steps)
            for key_id, amount in spend.items():
                APIKey.objects.filter(pk=key_id).update(spent_usd=F("spent_usd") + amount)
        budgets.settle_runs(runs)  # the calls' budget holds give way to their committed cost

    def _write_one_by_one(self, runs: list, steps: list) -> int:
        steps_by_run: dict[str, list] = defaultdict(list)
        for step in steps:
            steps_by_run[str(step.run_id)].append(step)
        written = 0
        for index, run in enumerate(runs):
            run_steps = steps_by_run.pop(str(run.id), [])
            try:
                written += self._write_run(run, run_steps)
            except Exception as exc:
                close_old_connections()
                if not database_blinked(exc):  # not expected from _write_run; still, never retry a row forever
                    logger.exception("batched writer: run %s could not be written nor set aside; dropped", run.id)
                    self.dropped_rows += 1
                    continue
                kept = runs[index:]
                kept_ids = {str(each.id) for each in kept}
                self._keep(kept, [step for step in steps if str(step.run_id) in kept_ids], exc)
                self.written_runs += written
                return written
        for orphans in steps_by_run.values():  # steps whose run is not in the batch: nothing to attach them to
            for step in orphans:
                try:
                    self._set_aside(step, [], ValueError(f"its run {step.run_id} is not among the rows to write"))
                except Exception:
                    logger.exception("batched writer: a step without its run could not be set aside; dropped")
        if self.failing_since is not None:
            self._recovered()
        self.written_runs += written
        return written

    def _write_run(self, run, run_steps: list) -> int:
        """Write one run with its steps (1), or set it aside (0); raises only when the database blinked."""
        try:
            self._write([run], run_steps)
            return 1
        except Exception as exc:
            if database_blinked(exc):
                raise
            failure = exc
        if isinstance(failure, IntegrityError):
            try:
                if self._written_despite_integrity_error(run, run_steps):
                    return 1
            except Exception as exc:
                if database_blinked(exc):
                    raise
                failure = exc
        self._set_aside(run, run_steps, failure)
        return 0

    def _written_despite_integrity_error(self, run, run_steps: list) -> bool:
        if Run.objects.filter(pk=run.id).exists():  # a retry of a commit that went through before the drop
            return True
        if not run.api_key_id or APIKey.objects.filter(pk=run.api_key_id).exists():
            return False
        # Its key was deleted meanwhile: keep the run, without the key.
        if isinstance(run, Row):
            run["api_key_id"] = None
        else:
            run.api_key_id = None
        self._write([run], run_steps)
        return True

    def _set_aside(self, obj, steps: list, exc: BaseException) -> None:
        """Store a row that can never be written in the dead-letter table, and settle its spend all the same
        (budgets keep holding). If even that fails, say so once in the log: the writer never loops on a row."""
        key_id, tokens, cost = settleable_usage(obj)
        label = (obj.model if isinstance(obj, Row) else type(obj))._meta.label
        try:
            object_id = storable_text(str(obj.id), 64)
        except Exception:
            object_id = ""
        reason = failure_reason(exc)
        entry = WriterDeadLetter(model_label=label, object_id=object_id, api_key_id=key_id, cost_usd=cost,
                                 reason=reason, payload=rendered_row(obj, steps))
        stored = spent = False
        try:
            with transaction.atomic():
                if key_id and cost:
                    APIKey.objects.filter(pk=key_id).update(spent_usd=F("spent_usd") + cost)
                spent = True
                try:
                    with transaction.atomic():
                        entry.save()
                    stored = True
                except Exception as store_exc:
                    if database_blinked(store_exc):
                        raise
                    reason += f"; and it could not be set aside: {failure_reason(store_exc)}"
        except Exception as settle_exc:
            if database_blinked(settle_exc):
                raise
            spent = False
            reason += f"; and its spend could not be settled: {failure_reason(settle_exc)}"
        logger.error("batched writer: %s %s cannot be recorded (%s); %s", label, object_id, reason,
                     "set aside in the dead-letter table" if stored else "dropped")
        if stored:
            self.set_aside += 1
        else:
            self.dropped_rows += 1
        WRITER_DEAD_LETTERS.inc()
        if spent:  # a run's budget hold gives way to the spend settled here (else it expires, conservatively)
            budgets.settle_record(object_id, cost, tokens)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        self.flush()
        self._stopping.clear()
        left = self.pending()
        if left:
            logger.error("batched writer: stopping with %d runs not recorded (the database is unavailable); "
                         "they are lost", left)


writer = BatchedWriter(settings.PODIUM["WRITER_FLUSH_INTERVAL"])
atexit.register(writer.stop)

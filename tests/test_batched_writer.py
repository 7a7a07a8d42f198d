"""The batched writer's rows read back as Django saves them, and a run whose key vanished is still kept.
(Database blinks and rows that can never be stored: tests/test_writer_dead_letters.py.)"""
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.utils import timezone

from orchestration.gateway.writer import WRITER_NICENESS, BatchedWriter, insert_rows
from orchestration.models import APIKey, Run, Step
from orchestration.recording import Row
from tests.conftest import wait_for


def run_row(api_key_id=None) -> Row:
    now = timezone.now()
    return Row(Run, id=str(uuid.uuid4()), kind="chat", target="swift-mini", status="succeeded", api_key_id=api_key_id,
               cost_usd=Decimal("0.001"), tokens_in=3, tokens_out=4, created_at=now, started_at=now, finished_at=now)


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_key_vanished_is_kept_without_the_key_and_the_rest_of_the_batch_lands():
    writer = BatchedWriter(interval_s=60)
    key, _ = APIKey.issue("kept")
    good, orphan = run_row(key.id), run_row(api_key_id=key.id + 1000)  # no such key
    writer.add(good, [])
    writer.add(orphan, [])
    writer.flush()

    assert Run.objects.get(id=good.id).api_key_id == key.id
    assert Run.objects.get(id=orphan.id).api_key_id is None
    assert writer.pending() == 0 and writer.set_aside == 0 and writer.dropped_rows == 0
    assert APIKey.objects.get(id=key.id).spent_usd == Decimal("0.001")
    writer.stop()


@pytest.mark.django_db(transaction=True)
def test_rows_the_writer_prepares_itself_read_back_as_django_saves_them():
    """insert_rows prepares values without Django's per-field path (recording.column_converter); what it
    stores must read back exactly like the same values saved through the ORM."""
    key, _ = APIKey.issue("read-back")
    started = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt_timezone(timedelta(hours=2)))  # not UTC
    values = dict(kind=Run.Kind.WORKFLOW, target="workflow/x", api_key_id=key.id, status="succeeded",
                  input={"messages": [{"role": "user", "content": "héllo ✓ \"q\" 𝄞"}], "n": [1, 2.5, None, True]},
                  output="answer", confidence=0.25, tokens_in=7, tokens_out=9, cost_usd=Decimal("0.00012345"),
                  latency_ms=12.5, error="", metadata={"k": {"nested": ["a"]}}, created_at=started,
                  started_at=started, finished_at=started + timedelta(milliseconds=1500))
    written_id, saved_id = str(uuid.uuid4()), uuid.uuid4()
    step_values = dict(key="answer", node_id="answer", node_type="call", model_alias="m", provider="p",
                       status="succeeded", prompt=[{"role": "user", "content": "x"}], output="answer",
                       confidence=None, tokens_in=7, tokens_out=9, tokens_estimated=True,
                       cost_usd=Decimal("0.00012345"), latency_ms=3.0, error="", attributes={"retries": 1},
                       started_at=started, finished_at=None)
    insert_rows(Run, [Row(Run, id=written_id, **values)])
    insert_rows(Step, [Row(Step, id=str(uuid.uuid4()), run_id=written_id, parent_id=None, **step_values)])
    Run.objects.create(id=saved_id, **values)
    Step.objects.create(run_id=saved_id, **step_values)

    fields = [f.attname for f in Run._meta.concrete_fields if f.attname != "id"]
    written, saved = (Run.objects.filter(id=run_id).values(*fields).get() for run_id in (written_id, saved_id))
    assert written == saved
    step_fields = [f.attname for f in Step._meta.concrete_fields if f.attname not in ("id", "run_id")]
    assert (Step.objects.filter(run_id=written_id).values(*step_fields).get()
            == Step.objects.filter(run_id=saved_id).values(*step_fields).get())
    # Datetimes stored alike also compare alike in the database (ordering, range filters).
    assert Run.objects.filter(created_at=started, finished_at__gt=started).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_writer_thread_yields_the_core_to_the_request_path():
    writer = BatchedWriter(interval_s=60)
    writer.add(run_row(), [])  # starts its thread
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    wait_for(lambda: os.getpriority(os.PRIO_PROCESS, writer._thread.native_id) == min(19, own + WRITER_NICENESS), 5)
    writer.stop()


@pytest.mark.django_db(transaction=True)
def test_a_flush_includes_a_call_already_answered_whose_record_is_still_on_its_way():
    """/v1 records a call once its answer is sent (gateway/records.record_later): a flush that starts in
    between waits for that record instead of missing it; one promised later does not hold it up."""
    writer = BatchedWriter(interval_s=60)
    answered = run_row()
    ticket = writer.expect()

    def record_a_moment_later():
        time.sleep(0.3)
        writer.add(answered, [])
        writer.fulfilled(ticket)

    threading.Thread(target=record_a_moment_later).start()
    assert writer.flush() == 1
    assert Run.objects.filter(id=answered.id).exists()

    late = writer.expect()  # a promise nobody keeps: a flush waits for it at most as long as it is told
    started = time.monotonic()
    assert writer.flush(promised_wait_s=0.2) == 0
    assert 0.2 <= time.monotonic() - started < 2
    writer.fulfilled(late)
    writer.stop()

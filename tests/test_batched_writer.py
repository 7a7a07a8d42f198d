"""The batched writer keeps rows across a database blink, and one impossible row never blocks the rest."""
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from orchestration.models import APIKey, Run
from orchestration.recording import BatchedWriter, Row


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
    assert writer.pending() == 0 and writer.dropped_runs == 0
    assert APIKey.objects.get(id=key.id).spent_usd == Decimal("0.001")
    writer.stop()


@pytest.mark.django_db(transaction=True)
def test_rows_are_kept_for_the_next_flush_when_the_database_is_unavailable(monkeypatch):
    writer = BatchedWriter(interval_s=60)
    row = run_row()
    writer.add(row, [])
    original = writer._write

    def database_down(runs, steps):
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(writer, "_write", database_down)
    assert writer.flush() == 0 and writer.pending() == 1 and writer.failed_flushes == 1
    monkeypatch.setattr(writer, "_write", original)
    assert writer.flush() == 1
    assert Run.objects.filter(id=row.id).exists()
    writer.stop()

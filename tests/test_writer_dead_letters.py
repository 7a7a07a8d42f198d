"""No row can stop the batched writer: rows that can never be stored are set aside (WriterDeadLetter) with
their reason and their spend settled; rows the database could not take for the moment are kept and written
once it answers; /readyz and /metrics say how recording is going."""
import sqlite3
import uuid
from contextlib import contextmanager
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from orchestration.gateway.writer import PAYLOAD_MAX_CHARS, BatchedWriter, writer
from orchestration.models import APIKey, Run, Step, WriterDeadLetter
from orchestration.recording import Row
from tests.conftest import wait_for
from tests.test_metrics_export import metric


def nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def run_row(api_key_id=None, cost="0.001", **values) -> Row:
    now = timezone.now()
    fields = dict(id=str(uuid.uuid4()), kind="chat", target="swift-mini", status="succeeded", api_key_id=api_key_id,
                  input={"messages": [{"role": "user", "content": "hi"}]}, output="hello", cost_usd=Decimal(cost),
                  tokens_in=3, tokens_out=4, metadata={}, created_at=now, started_at=now, finished_at=now)
    return Row(Run, {**fields, **values})


def step_row(run: Row, **values) -> Row:
    now = timezone.now()
    return Row(Step, {**dict(id=str(uuid.uuid4()), run_id=run["id"], key="answer", node_id="answer",
                             model_alias="swift-mini", provider="mock-fast", status="succeeded", output="hello",
                             cost_usd=run["cost_usd"], started_at=now, finished_at=now), **values})


@contextmanager
def database_locked_by_another_process(monkeypatch):
    """What a backup or a long admin transaction does to SQLite: another connection holds the write lock.
    New connections give up waiting for it after 0.1 s instead of 20 (the test would only be slower)."""
    if connection.vendor != "sqlite":
        pytest.skip("holds SQLite's write lock")
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.1)
    connection.close()  # this thread's next connection takes the short timeout too
    locker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_rows_that_can_never_be_stored_are_set_aside_with_their_reason_and_their_spend_is_settled(client):
    key, _ = APIKey.issue("spender")
    own = BatchedWriter(interval_s=60)
    before = scrape(client)
    good = [run_row(key.id) for _ in range(3)]
    deep = run_row(key.id, cost="0.25", metadata=nested(1000))  # Django's json.dumps: RecursionError
    huge = run_row(key.id, cost="0.5", tokens_in=2 ** 70)  # no database integer holds it
    unencodable = run_row(key.id, cost="0.125", output="half a pair \ud800 and a \x00")  # not UTF-8
    for run in (good[0], deep, good[1], huge, unencodable, good[2]):
        own.add(run, [step_row(run)])

    assert own.flush() == 3
    assert own.pending() == 0 and own.set_aside == 3
    assert set(Run.objects.values_list("id", flat=True)) == {uuid.UUID(run["id"]) for run in good}
    assert Step.objects.count() == 3
    letters = {letter.object_id: letter for letter in WriterDeadLetter.objects.all()}
    assert set(letters) == {deep["id"], huge["id"], unencodable["id"]}
    assert letters[deep["id"]].reason.startswith("RecursionError")
    assert letters[huge["id"]].reason.startswith(("OverflowError", "DataError"))  # SQLite's driver, PostgreSQL
    assert letters[unencodable["id"]].reason.startswith(("UnicodeEncodeError", "DataError"))
    for run, letter in ((deep, letters[deep["id"]]), (huge, letters[huge["id"]])):
        assert letter.model_label == "orchestration.Run" and letter.api_key_id == key.id
        assert letter.cost_usd == run["cost_usd"]
        assert "'swift-mini'" in letter.payload and "steps: [{" in letter.payload  # the row, with its step
        assert len(letter.payload) <= PAYLOAD_MAX_CHARS + 1
    assert "{...}" in letters[deep["id"]].payload  # depth-bounded: the rendering itself cannot recurse
    assert "\\ud800" in letters[unencodable["id"]].payload and "\\x00" in letters[unencodable["id"]].payload
    # Budgets keep holding: every call's cost reached the key, recorded or set aside.
    assert APIKey.objects.get(id=key.id).spent_usd == Decimal("0.003") + Decimal("0.875")

    after = scrape(client)
    assert metric(after, "podium_writer_dead_letters_total") - metric(before, "podium_writer_dead_letters_total") == 3
    assert metric(after, "podium_writer_dead_letters_stored") == 3
    own.stop()


@pytest.mark.django_db(transaction=True)
def test_a_step_that_names_no_run_of_its_batch_is_set_aside_and_its_run_is_written():
    own = BatchedWriter(interval_s=60)
    run = run_row()
    stray = step_row(run_row())  # its run was never handed to the writer
    own.add(run, [step_row(run), stray])

    assert own.flush() == 1
    assert Run.objects.filter(id=run["id"]).exists() and Step.objects.filter(run_id=run["id"]).count() == 1
    letter = WriterDeadLetter.objects.get()
    assert letter.model_label == "orchestration.Step" and letter.object_id == stray["id"]
    assert "is not among the rows to write" in letter.reason
    own.stop()


def test_after_a_row_that_cannot_be_written_the_next_100_v1_calls_are_all_recorded_and_budgets_hold(
        podium_server, demo_registry, api_key, client):
    """The issue's probe: one request's metadata nested 1,000 deep used to stop all recording and budgets."""
    tight, tight_raw = APIKey.issue("tight", budget_usd=Decimal("0.001"))
    poison = run_row(tight.id, cost="0.25", metadata=nested(1000))
    writer.add(poison, [step_row(poison)])
    wait_for(lambda: WriterDeadLetter.objects.filter(object_id=poison["id"]).exists(), 10)
    assert not Run.objects.filter(id=poison["id"]).exists()

    run_ids = []
    with httpx.Client(base_url=podium_server.url, headers={"authorization": f"Bearer {api_key}"}, timeout=10) as http:
        for number in range(100):
            response = http.post("/v1/chat/completions", json={
                "model": "swift-mini", "messages": [{"role": "user", "content": f"call {number}"}]})
            assert response.status_code == 200, response.text
            run_ids.append(response.headers["x-podium-run-id"])
        # The set-aside run's $0.25 was settled on its key: the next call over that budget is refused.
        refused = http.post("/v1/chat/completions", headers={"authorization": f"Bearer {tight_raw}"},
                            json={"model": "swift-mini", "messages": [{"role": "user", "content": "over budget"}]})

    wait_for(lambda: Run.objects.filter(id__in=run_ids).count() == 100, 10,
             describe=lambda: f"{Run.objects.filter(id__in=run_ids).count()} of 100 calls recorded")
    writer.flush()  # waits for a flush under way: its rows can be committed before its settlement ends
    assert writer.pending() == 0
    assert APIKey.objects.get(id=tight.id).spent_usd == Decimal("0.25")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["writer"]["dead_letters"] == 1


@pytest.mark.django_db(transaction=True)
def test_rows_are_kept_while_the_database_is_locked_and_written_once_it_is_released(monkeypatch, client):
    key, _ = APIKey.issue("patient")
    own = BatchedWriter(interval_s=60)
    rows = [run_row(key.id) for _ in range(5)]
    for run in rows:
        own.add(run, [step_row(run)])
    before = scrape(client)

    with database_locked_by_another_process(monkeypatch):
        assert own.flush() == 0 and own.flush() == 0
        assert own.pending() == 5 and own.failures_in_a_row == 2 and own.failing_for_s() > 0
        assert own.set_aside == 0 and not WriterDeadLetter.objects.exists()  # a lock is no reason to give up a row
        failed = metric(scrape(client), "podium_writer_failed_flushes_total")

    assert own.flush() == 5
    assert Run.objects.filter(id__in=[run["id"] for run in rows]).count() == 5 and Step.objects.count() == 5
    assert own.pending() == 0 and own.failures_in_a_row == 0 and own.failing_since is None
    assert APIKey.objects.get(id=key.id).spent_usd == Decimal("0.005")  # settled once, with the rows
    assert failed - metric(before, "podium_writer_failed_flushes_total") == 2
    own.stop()


@pytest.mark.django_db(transaction=True)
def test_readyz_says_degraded_with_503_while_this_process_cannot_record(monkeypatch, client):
    writer.stop()  # its next thread opens its connection with the lock's short timeout
    rows = [run_row() for _ in range(3)]
    # One lock for both halves: released between them, the writer could record the rows in the gap, and the
    # second half would then wait for failures that never come (CI saw it).
    with database_locked_by_another_process(monkeypatch):
        with override_settings(PODIUM={**settings.PODIUM, "WRITER_BACKLOG_LIMIT": 2}):
            for run in rows:
                writer.add(run, [])
            response = client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "degraded" and body["checks"]["database"] == "ok"
            assert body["checks"]["writer"] == "degraded: 3 runs waiting to be recorded (limit 2)"
            assert body["writer"]["pending_runs"] == 3 and body["writer"]["dead_letters"] == 0
            assert metric(scrape(client), "podium_writer_pending_runs") == 3

        with override_settings(PODIUM={**settings.PODIUM, "WRITER_BACKLOG_LIMIT": 10_000}):
            wait_for(lambda: writer.failures_in_a_row >= 3, 30)
            body = client.get("/readyz").json()
            assert body["status"] == "degraded" and body["checks"]["writer"].startswith("degraded: recording "
                                                                                       "has failed for")
    wait_for(lambda: client.get("/readyz").status_code == 200, 30)
    assert Run.objects.filter(id__in=[run["id"] for run in rows]).count() == 3
    writer.stop()  # its connection goes; the next one takes the usual timeout

"""The embedded mode resumes runs a stopped process left queued or running, and only those.

A "previous process" here is a real one: a Python subprocess that executes a run against the test
database and is killed (SIGKILL) while its second model call is in flight.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from orchestration.models import Provider, Run, Step
from orchestration.runner.inprocess import runner
from orchestration.runs import leases, recovery
from orchestration.runs.actions import create_run
from orchestration.runs.dispatch import dispatch
from orchestration.workflows import save_workflow
from tests.conftest import LiveServer, wait_for

ROOT = Path(__file__).resolve().parents[1]
PAIR = {"root": {"type": "sequence", "id": "pair", "steps": [
    {"type": "call", "id": "first", "model": "fake-gpt", "prompt": "{{input}}"},
    {"type": "call", "id": "second", "model": "fake-gpt", "prompt": "{{previous}}"}]}}


@pytest.fixture
def pair(transactional_db, upstream_model):
    Provider.objects.filter(name="fake").update(timeout_s=30)  # the slow second call must not time out and retry
    save_workflow(slug="pair", spec=PAIR)
    yield
    runner.wait_idle(20)
    runner.close_clients()  # this test's fake upstream goes away with it


def upstream_calls(upstream) -> int:
    return sum(1 for request in upstream.requests if request.get("path") is None)  # chat requests


def backdate(run_id, minutes: int = 10) -> None:
    """As if the run had been created a while before its process stopped (younger runs are still being handed out)."""
    Run.objects.filter(pk=run_id).update(created_at=timezone.now() - timedelta(minutes=minutes))


def execute_in_another_process(run_id) -> subprocess.Popen:
    """A second process, sharing the test database, that executes the run; it returns once the run's second
    call is in flight (the fake upstream holds it a few seconds)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PODIUM_RUNNER": "inprocess",
           "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}"}
    env.pop("REDIS_URL", None)
    code = f"import django; django.setup(); from orchestration.runs.execution import execute_run; execute_run({str(run_id)!r})"
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    calls = Step.objects.filter(run_id=run_id, node_type="call")
    wait_for(lambda: calls.filter(status="running").count() == 1 and calls.filter(status="succeeded").count() == 1,
             timeout=60,
             describe=lambda: f"the other process did not reach the second call (exit code {process.poll()})")
    return process


def call_steps(run_id) -> dict[str, tuple]:
    return {step.key: (step.id, step.status, step.finished_at, step.cost_usd)
            for step in Step.objects.filter(run_id=run_id, node_type="call")}


def test_a_run_another_live_process_executes_is_left_alone_until_that_process_dies(pair, fake_upstream):
    run = create_run(workflow_slug="pair", input="elsewhere", status="running")
    fake_upstream.inject("", "slow:4")  # the first call answers at once, the second takes 4 s
    other = execute_in_another_process(run.pk)
    try:
        backdate(run.pk)
        assert recovery.recover_stalled_runs() == 0  # its lease is held by a live process
        assert Run.objects.get(pk=run.pk).status == "running"
    finally:
        other.kill()
        other.wait(10)
    assert recovery.recover_stalled_runs() == 1  # the operating system released the dead process's lease
    assert runner.wait_idle(20)
    assert Run.objects.get(pk=run.pk).status == "succeeded"


def test_a_restart_resumes_runs_left_running_or_queued_from_their_finished_steps(pair, fake_upstream):
    running = create_run(workflow_slug="pair", input="go", status="running")
    fake_upstream.inject("", "slow:4")
    previous = execute_in_another_process(running.pk)
    previous.kill()  # the previous server process dies mid-run
    previous.wait(10)
    never_dispatched = create_run(workflow_slug="pair", input="queued")  # it died before handing this out
    backdate(running.pk)
    backdate(never_dispatched.pk)
    before = call_steps(running.pk)
    first_key = next(key for key, (_, status, _, _) in before.items() if status == "succeeded")
    calls_before = upstream_calls(fake_upstream)

    with override_settings(PODIUM_RUNNER="inprocess", PODIUM_SCHEDULER_INTERVAL_S=0.2):
        server = LiveServer().start()  # the restart: its lifespan starts the embedded scheduler
        try:
            wait_for(lambda: set(Run.objects.filter(pk__in=[running.pk, never_dispatched.pk])
                                 .values_list("status", flat=True)) == {"succeeded"}, timeout=30,
                     describe=lambda: str(list(Run.objects.values_list("status", "error"))))
        finally:
            server.stop()

    after = call_steps(running.pk)
    assert set(after) == set(before) and len(after) == 2  # no duplicate steps
    assert after[first_key] == before[first_key]  # the finished step was reused, not called again
    assert all(status == "succeeded" for _, status, _, _ in after.values())
    assert upstream_calls(fake_upstream) - calls_before == 1 + 2  # the interrupted call again, the queued run's two
    resumed = Run.objects.get(pk=running.pk)
    assert resumed.output == "echo: echo: go"
    assert resumed.cost_usd == sum(cost for _, _, _, cost in after.values()) > 0  # each call counted once
    assert not (leases.lease_dir() / str(running.pk)).exists()  # the lease of an execution that ended is gone


def test_a_run_executing_in_this_process_is_not_touched(pair, fake_upstream):
    fake_upstream.inject("", "slow:2")
    run = create_run(workflow_slug="pair", input="here")
    dispatch(str(run.pk))
    wait_for(lambda: Step.objects.filter(run_id=run.pk, node_type="call", status="running").exists(), timeout=20)
    backdate(run.pk)

    assert recovery.recover_stalled_runs() == 0
    assert runner.wait_idle(20)
    assert Run.objects.get(pk=run.pk).status == "succeeded"
    assert upstream_calls(fake_upstream) == 2 and len(call_steps(run.pk)) == 2


def test_a_run_that_keeps_being_interrupted_is_failed_with_the_reason(pair, fake_upstream):
    run = create_run(workflow_slug="pair", input="poison", status="running")
    backdate(run.pk)
    for _ in range(recovery.MAX_INTERRUPTIONS):  # what executions that never ended leave behind
        leases.LocalLease.take(str(run.pk), executing=True).release(ended=False)

    assert recovery.recover_stalled_runs() == 0
    failed = Run.objects.get(pk=run.pk)
    assert failed.status == "failed" and failed.finished_at is not None
    assert f"interrupted {recovery.MAX_INTERRUPTIONS} times" in failed.error
    assert upstream_calls(fake_upstream) == 0
    assert not (leases.lease_dir() / str(run.pk)).exists()


def test_a_run_without_a_workflow_version_is_failed_with_the_reason(transactional_db):
    run = Run.objects.create(target="workflow/gone", kind="workflow", status="queued",
                             created_at=timezone.now() - timedelta(hours=1))

    assert recovery.recover_stalled_runs() == 0
    failed = Run.objects.get(pk=run.pk)
    assert failed.status == "failed" and "no workflow version" in failed.error


def test_a_run_created_moments_ago_is_left_to_the_process_handing_it_out(pair):
    run = create_run(workflow_slug="pair", input="just now", status="running")

    assert recovery.recover_stalled_runs() == 0
    assert Run.objects.get(pk=run.pk).status == "running" and not Step.objects.filter(run=run).exists()

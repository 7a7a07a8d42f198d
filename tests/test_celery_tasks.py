"""The Celery app's delivery guarantees, and tasks that are idempotent thin doors taking ids."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from config import celery as celery_config
from orchestration import tasks
from orchestration.models import Run, Step
from orchestration.process_loop import ProcessLoop
from orchestration.runs.actions import create_run
from orchestration.runs.delivery import time_limits
from orchestration.workflows import save_workflow

PAIR = {"root": {"type": "sequence", "id": "pair", "steps": [
    {"type": "call", "id": "first", "model": "swift-mini", "prompt": "{{input}}"},
    {"type": "call", "id": "second", "model": "swift-code", "prompt": "{{previous}}"}]}}


def test_a_task_is_acknowledged_only_once_done_and_never_outlives_the_visibility_timeout():
    conf = celery_config.app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility
    assert time_limits(3600) == (3510, 3540)
    assert time_limits(8)[1] < 8


def test_beat_schedules_registered_tasks_only():
    registered = set(celery_config.app.tasks.keys())
    scheduled = {entry["task"] for entry in celery_config.app.conf.beat_schedule.values()}
    assert {"orchestration.tasks.expire_reviews_task", "orchestration.tasks.lapse_claims_task",
            "orchestration.tasks.learning_cycle_task", "orchestration.tasks.recalibrate_task",
            "orchestration.tasks.recover_stalled_runs_task"} == scheduled
    assert scheduled <= registered


def test_only_transient_infrastructure_errors_are_retried_with_backoff():
    from django.db import OperationalError

    task = tasks.execute_run_task
    assert OperationalError in task.autoretry_for and ValueError not in task.autoretry_for
    assert task.retry_backoff and task.retry_jitter and task.max_retries


def test_a_run_that_vanished_is_nothing_to_do(transactional_db):
    assert tasks.execute_run_task.run(str(uuid.uuid4())) is None
    assert tasks.resume_run_task.run(str(uuid.uuid4())) is None


def test_executing_a_run_twice_calls_each_model_once(transactional_db, demo_registry):
    save_workflow(slug="pair", spec=PAIR)
    run = create_run(workflow_slug="pair", input="twice")
    assert tasks.execute_run_task.run(str(run.pk)) == "succeeded"
    calls = Step.objects.filter(run=run, node_type="call")
    first = {step.key: (step.id, step.finished_at, step.cost_usd) for step in calls}
    assert tasks.execute_run_task.run(str(run.pk)) == "succeeded"  # delivered again: the run already ended
    again = {step.key: (step.id, step.finished_at, step.cost_usd) for step in calls.all()}
    assert again == first and len(first) == 2
    assert Run.objects.get(pk=run.pk).cost_usd == sum(cost for _, _, cost in first.values())


def test_the_process_loop_is_reused_and_a_forked_process_gets_its_own(monkeypatch):
    loop = ProcessLoop(name="test-loop")

    async def current():
        import asyncio

        return asyncio.get_running_loop()

    first, second = loop.run(current()), loop.run(current())
    assert first is second and first.is_running()
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a Celery prefork child
    assert loop.run(current()) is not first


def test_a_coroutine_that_overruns_its_timeout_is_cancelled():
    import asyncio
    import concurrent.futures

    loop = ProcessLoop(name="test-timeout")
    cancelled = []

    async def sleepy():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(concurrent.futures.TimeoutError):
        loop.run(sleepy(), timeout=0.05)
    loop.run(asyncio.sleep(0.05))
    assert cancelled == [True]


def test_a_queued_run_whose_task_was_lost_is_dispatched_again(transactional_db, demo_registry):
    from datetime import timedelta

    from django.utils import timezone

    from orchestration.runner.inprocess import runner
    from orchestration.runs.recovery import requeue_stalled_runs

    save_workflow(slug="pair", spec=PAIR)
    lost = create_run(workflow_slug="pair", input="lost")  # created, never dispatched
    fresh = create_run(workflow_slug="pair", input="fresh")
    Run.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    assert requeue_stalled_runs() == 1
    assert runner.wait_idle(10)
    assert Run.objects.get(pk=lost.pk).status == "succeeded"
    assert Run.objects.get(pk=fresh.pk).status == "queued"  # probably still in a queue: left alone


def test_a_worker_started_by_hand_in_production_shares_its_host_s_metrics_folder(tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR its metrics would count alone, unseen by /metrics."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(REDIS_URL="redis://127.0.0.1:6379/0", PODIUM_VAR_DIR=str(tmp_path))
    script = "import os, config.celery; print(os.environ['PROMETHEUS_MULTIPROC_DIR'])"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "prometheus") and (tmp_path / "prometheus").is_dir()
    env.pop("REDIS_URL")  # the embedded mode: one process, nothing to share
    done = subprocess.run([sys.executable, "-c", "import os, config.celery; "
                           "print(os.environ.get('PROMETHEUS_MULTIPROC_DIR', 'unset'))"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == "unset"

"""`manage.py podium_run`: progress on stderr, the output on stdout, and an exit code for every outcome."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from orchestration.models import APIKey, Provider, ReviewItem, Run
from orchestration.registry import bump_version
from orchestration.workflows import save_workflow

ROOT = Path(__file__).resolve().parent.parent
TWO_STEPS = {"root": {"type": "sequence", "id": "pipeline", "steps": [
    {"type": "call", "id": "draft", "model": "swift-mini", "prompt": "Draft: {{input}}"},
    {"type": "call", "id": "polish", "model": "atlas-pro", "prompt": "Polish: {{previous}}"},
]}}
GATED = {"root": {"type": "gate", "id": "review", "threshold": 0.99,
                  "node": {"type": "call", "id": "answer", "model": "swift-mini", "prompt": "{{input}}"}}}


@pytest.fixture
def workflows(transactional_db, demo_registry):
    save_workflow(slug="two-steps", spec=TWO_STEPS)
    save_workflow(slug="gated", spec=GATED)


def podium_run(*args, stdin: str | None = None) -> tuple[str, str, CommandError | None]:
    out, err = io.StringIO(), io.StringIO()
    options = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    try:
        call_command("podium_run", *args, stdout=out, stderr=err, **options)
    except CommandError as exc:
        return out.getvalue(), err.getvalue(), exc
    return out.getvalue(), err.getvalue(), None


def test_a_succeeding_run_prints_its_steps_then_its_output(workflows):
    out, err, error = podium_run("two-steps", "--input", "the parcel is late")
    assert error is None
    assert out.strip() == "[atlas-pro] Polish: [swift-mini] Draft: the parcel is late"
    lines = err.splitlines()
    started = [line for line in lines if line.startswith("started")]
    finished = [line for line in lines if line.startswith("succeeded")]
    assert any("draft (call, swift-mini)" in line for line in started)
    assert any("polish (call, atlas-pro)" in line for line in started)
    draft = next(line for line in finished if "draft (call, swift-mini)" in line)
    assert "tokens" in draft and "$0.0000" in draft and "ms" in draft
    # each step is announced as started before it is reported finished
    assert lines.index(next(l for l in started if "polish" in l)) < lines.index(
        next(l for l in finished if "polish (call" in l))
    assert "succeeded in" in lines[-1]
    run = Run.objects.get(target="workflow/two-steps")
    assert run.status == "succeeded" and run.metadata["source"] == "podium_run"


def test_json_prints_the_final_run_with_its_steps(workflows):
    out, _, error = podium_run("two-steps", "--input", "hi", "--json")
    assert error is None
    run = json.loads(out)
    assert run["status"] == "succeeded" and run["workflow"] == "two-steps"
    assert [step["model_alias"] for step in run["steps"] if step["node_type"] == "call"] == ["swift-mini", "atlas-pro"]


def test_json_is_what_the_runs_api_answers_for_the_run(workflows, admin_user):
    from django.test import Client

    out, _, error = podium_run("two-steps", "--input", "hi", "--json")
    assert error is None
    printed = json.loads(out)
    client = Client()
    client.force_login(admin_user)
    answered = client.get(f"/api/runs/{printed['id']}/").json()
    assert printed == answered and len(printed["step_tree"][0]["children"]) == 2


def test_input_comes_from_a_file_or_standard_input(workflows, tmp_path):
    path = tmp_path / "ticket.txt"
    path.write_text("from a file")
    out, _, _ = podium_run("two-steps", "--input", f"@{path}", "--quiet")
    assert out.strip().endswith("Draft: from a file")
    out, _, _ = podium_run("two-steps", "--input", "-", "--quiet", stdin="from stdin")
    assert out.strip().endswith("Draft: from stdin")


def test_a_failing_run_exits_1_with_the_reason(workflows):
    Provider.objects.filter(name="mock-fast").update(
        mock_options={"seed": 1, "latency_ms": 1, "failure_rate": 1, "max_retries": 0})
    bump_version()
    out, err, error = podium_run("two-steps", "--input", "hello")
    assert error is not None and error.returncode == 1
    assert "the run failed" in str(error) and "injected failure" in str(error)
    assert out == "" and any(line.startswith("failed") and "draft" in line for line in err.splitlines())


def test_a_run_waiting_for_review_exits_5_and_prints_the_review_link(workflows, settings):
    out, _, error = podium_run("gated", "--input", "capital of France?")
    assert error is not None and error.returncode == 5
    review = ReviewItem.objects.get(run__target="workflow/gated", status="pending")
    assert f"http://127.0.0.1:8000/reviews/{review.id}/" in str(error)
    assert "waiting for a person" in str(error) and out == ""


def test_budget_and_deadline_stops_have_their_own_exit_codes(workflows):
    _, _, error = podium_run("two-steps", "--input", "hello", "--budget-usd", "0.000000001")
    assert error is not None and error.returncode == 3 and "budget" in str(error)
    _, _, error = podium_run("two-steps", "--input", "hello", "--deadline-s", "0.001")
    assert error is not None and error.returncode == 4 and "deadline" in str(error)


def test_an_unknown_workflow_is_refused_with_exit_2(workflows):
    _, _, error = podium_run("no-such-flow", "--input", "hello")
    assert error is not None and error.returncode == 2 and "no-such-flow" in str(error)
    assert not Run.objects.exists()


def run_command_process(*args: str, var_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PODIUM_VAR_DIR": str(var_dir)}
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "podium_run", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)


def test_against_a_remote_podium_the_process_exit_codes_are_0_and_5(podium_server, workflows, tmp_path):
    _, key = APIKey.issue("cli", scopes=["runs", "reviews:decide"])
    done = run_command_process("two-steps", "--input", "over the wire", "--url", podium_server.url, "--key", key,
                               var_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[atlas-pro] Polish: [swift-mini] Draft: over the wire"
    assert "polish (call, atlas-pro)" in done.stderr

    waiting = run_command_process("gated", "--input", "unsure", "--url", podium_server.url, "--key", key,
                                  var_dir=tmp_path)
    review = ReviewItem.objects.get(run__target="workflow/gated", status="pending")
    assert waiting.returncode == 5
    assert f"{podium_server.url}/reviews/{review.id}/" in waiting.stderr


@pytest.mark.production
@pytest.mark.timeout(240)
def test_in_production_a_celery_worker_executes_the_run_and_the_command_follows_it():
    from tests.production.stack import Stack, require_services

    require_services()
    stack = Stack()
    try:
        stack.prepare()
        stack.start_worker("w1", 2)
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "podium_run", "chain", "--input", "go"],
                              capture_output=True, text=True, timeout=120, env=stack.base_env, cwd=ROOT)
        assert done.returncode == 0, done.stderr + stack.logs()
        assert done.stdout.strip().endswith("step 5")
        assert [line.split()[1] for line in done.stderr.splitlines() if line.startswith("succeeded s")] == [
            f"s{i}" for i in range(6)]
        waiting = subprocess.run([sys.executable, str(ROOT / "manage.py"), "podium_run", "gated", "--input", "?"],
                                 capture_output=True, text=True, timeout=120, env=stack.base_env, cwd=ROOT)
        assert waiting.returncode == 5 and "/reviews/" in waiting.stderr
    finally:
        stack.stop()

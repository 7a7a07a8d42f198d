"""The demo traffic generator drives both direct calls and workflow runs, so every page moves."""
from io import StringIO

from django.core.management import call_command

from orchestration.demo import seed_demo_workflows
from orchestration.gateway.writer import writer
from orchestration.models import Run
from orchestration.runner.inprocess import runner
from tests.conftest import wait_for


def test_demo_traffic_sends_chat_calls_and_starts_workflow_runs(podium_server, api_key, demo_registry):
    seed_demo_workflows()
    out = StringIO()
    call_command("podium_demo_traffic", "--url", podium_server.url, "--key", api_key, "--rate", "200",
                 "--count", "30", "--workflow-share", "0.3", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 30 and all(line.endswith(("200", "202")) for line in lines), lines
    assert runner.wait_idle(30), "a demo workflow run was still executing"
    writer.flush()
    assert wait_for(lambda: Run.objects.filter(kind="workflow").exists())
    assert Run.objects.filter(kind="chat").exists()

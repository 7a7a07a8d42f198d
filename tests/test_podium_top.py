"""`manage.py podium_top`: a live screen under a real pseudo-terminal, a recording console, and plain output."""
from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command
from rich.console import Console

from api.v1.app import v1_app
from observability.metrics_window import local_window
from orchestration.models import Step
from terminal.top import ChannelLayerSource, LiveScreen, run_top
from terminal.top_state import TopState
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


@pytest.fixture(autouse=True)
def fresh_metrics():
    """The server's sliding window is process-wide: calls of earlier tests must not show here."""
    local_window.reset()
    yield
    local_window.reset()


def model_row(screen_text: str, alias: str) -> list[str] | None:
    """The cells of a model's row in the last complete frame of the models table."""
    frames = [f for f in screen_text.split("Podium top") if "Review backlog" in f]
    if not frames:
        return None
    models_part = frames[-1].split("Latest runs")[0]
    for line in models_part.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 2 and cells[1] == alias:
            return cells[1:-1]
    return None


def calls_of(row: list[str] | None) -> int | None:
    return int(row[3]) if row else None  # model, status, in-flight, calls, …


class PseudoTerminal:
    """A child process on a pty of a fixed size; `screen` is everything it drew, escape codes removed."""

    def __init__(self, argv: list[str], env: dict, rows: int = 45, cols: int = 160):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                        start_new_session=True)
        os.close(slave)
        self.raw = b""

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", errors="replace"))

    def until(self, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            value = predicate(self.screen)
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"podium_top exited early ({self.process.returncode}):\n{self.screen[-3000:]}")
        pytest.fail(f"the screen never showed what was expected:\n{self.screen[-3000:]}")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        os.close(self.master)


def chat(server_url: str, key: str, model: str, text: str = "hello") -> httpx.Response:
    return httpx.post(f"{server_url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": text}]}, timeout=30)


def test_under_a_terminal_a_model_row_changes_after_a_call_and_q_quits(podium_server, api_key, watcher_key, demo_registry,
                                                                         tmp_path):
    env = {**os.environ, "TERM": "xterm-256color", "PODIUM_VAR_DIR": str(tmp_path), "COLUMNS": "160",
           "LINES": "45"}
    terminal = PseudoTerminal([sys.executable, str(ROOT / "manage.py"), "podium_top", "--url", podium_server.url,
                               "--key", watcher_key, "--fps", "8"], env)
    try:
        before = terminal.until(lambda screen: model_row(screen, "swift-code"))
        assert before[1].endswith("healthy") and calls_of(before) == 0
        assert chat(podium_server.url, api_key, "swift-code").status_code == 200
        after = terminal.until(lambda screen: (row := model_row(screen, "swift-code")) and calls_of(row) == 1 and row)
        assert after[4] != before[4]  # req/s moved too
        assert calls_of(model_row(terminal.screen, "titan-ultra")) == 0
        terminal.type("q")
        assert terminal.process.wait(20) == 0
    finally:
        terminal.close()


def test_ctrl_c_quits_cleanly(podium_server, watcher_key, demo_registry, tmp_path):
    env = {**os.environ, "TERM": "xterm-256color", "PODIUM_VAR_DIR": str(tmp_path)}
    terminal = PseudoTerminal([sys.executable, str(ROOT / "manage.py"), "podium_top", "--url", podium_server.url,
                               "--key", watcher_key], env)
    try:
        terminal.until(lambda screen: model_row(screen, "swift-mini"))
        terminal.process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert terminal.process.wait(20) == 0
        terminal.pump(0.2)
        assert "Traceback" not in terminal.screen
    finally:
        terminal.close()


def test_a_key_without_the_events_scope_is_told_so(podium_server, demo_registry):
    from orchestration.models import APIKey

    _, key = APIKey.issue("chat-only", scopes=["chat"])
    out = io.StringIO()
    with pytest.raises(CommandError, match="needs an API key with the .events. scope"):
        call_command("podium_top", "--url", podium_server.url, "--key", key, "--once", stdout=out)


def test_without_a_terminal_it_prints_plain_blocks(podium_server, api_key, watcher_key, demo_registry):
    assert chat(podium_server.url, api_key, "atlas-pro", "plain").status_code == 200
    time.sleep(1.1)  # the window counts whole seconds: let the call's second end
    out = io.StringIO()
    call_command("podium_top", "--url", podium_server.url, "--key", watcher_key, "--once", stdout=out)
    text = out.getvalue()
    assert "\x1b[" not in text  # no escape codes in a log
    line = next(line for line in text.splitlines() if "model atlas-pro" in line)
    assert "healthy" in line and "calls=1" in line and "p50=" in line
    assert re.search(r"runs\s+\w{8} atlas-pro succeeded", text)
    assert "reviews open=0" in text


def test_in_embedded_mode_it_explains_how_to_watch_the_server(db):
    with pytest.raises(CommandError, match="--url http://127.0.0.1:8000"):
        call_command("podium_top", stdout=io.StringIO())


def test_on_the_channel_layer_a_recording_console_sees_a_row_change(transactional_db, api_key, demo_registry):
    """The local source: the same live events the dashboard hub reads, from the channel-layer group."""
    console = Console(record=True, width=160, force_terminal=True, color_system=None, file=io.StringIO())

    async def scenario():
        source = ChannelLayerSource()
        screen = LiveScreen(console, source.name, fps=10, alternate_screen=False)
        stop = asyncio.Event()
        task = asyncio.create_task(run_top(source, screen, state=TopState(), stop=stop, stdin=io.StringIO()))
        await asyncio.wait_for(source.joined.wait(), 10)
        before = model_row(console.export_text(clear=False), "swift-mini")
        # A real /v1 request through the gateway's ASGI app, on this loop: its events reach our group.
        transport = httpx.ASGITransport(app=v1_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            response = await client.post("/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                                         json={"model": "swift-mini", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 200
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            after = model_row(console.export_text(clear=False), "swift-mini")
            if calls_of(after) == 1:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)
        return before, after

    before, after = asyncio.run(scenario())
    assert calls_of(before) == 0 and calls_of(after) == 1
    assert after[1].endswith("healthy") and after[7] != "–"  # a p50 latency appeared
    # The answer's confidence and how it was measured, as the step recorded them (the mock sends no signal here);
    # the batched writer records the step a moment after the answer.
    wait_for(lambda: Step.objects.filter(model_alias="swift-mini", node_type="call").exists(), timeout=10)
    step = Step.objects.get(model_alias="swift-mini", node_type="call")
    assert step.confidence_method == "prior" and after[10] == f"{step.confidence:.2f} prior"


# --- the state and the loop, without a server ----------------------------------------------------

def test_circuit_state_errors_and_reviews_fold_into_what_the_screen_shows():
    now = [time.time()]
    state = TopState(clock=lambda: now[0])
    state.load_models([{"alias": "a", "provider": "p", "tier": "fast"}, {"alias": "b"},
                       {"alias": "off", "enabled": False}])
    state.apply({"type": "model.health", "model": "a", "state": "open", "ts": now[0] * 1000})
    for index in range(4):
        state.apply({"type": "step.started", "model": "b", "step_id": f"s{index}", "ts": now[0] * 1000})
        state.apply({"type": "step.finished", "model": "b", "step_id": f"s{index}", "status": "failed",
                     "ts": now[0] * 1000, "latency_ms": 10})
    state.apply({"type": "review.created", "review_id": "r1", "run_id": "x", "status": "pending",
                 "created_ts": (now[0] - 90) * 1000})
    now[0] += 2
    figures = {row.alias: row for row in state.figures()}
    assert figures["a"].status == "circuit open"
    assert figures["b"].status == "degraded" and figures["b"].errors == 4 and figures["b"].in_flight == 0
    assert figures["off"].status == "disabled"
    count, oldest, _ = state.backlog()
    assert count == 1 and 90 <= oldest <= 93
    state.apply({"type": "review.decided", "review_id": "r1", "status": "approved"})
    assert state.backlog()[0] == 0


def test_the_latest_answers_confidence_shows_with_how_it_was_measured():
    from terminal.top_view import plain_lines

    now = time.time()
    state = TopState(clock=lambda: now)
    state.load_models([{"alias": "a"}, {"alias": "b"}, {"alias": "quiet"}])
    finished = {"type": "step.finished", "status": "succeeded", "latency_ms": 10}
    state.apply({**finished, "model": "a", "step_id": "1", "ts": now * 1000, "confidence": 0.82,
                 "confidence_method": "logprobs", "confidence_raw": 0.9})
    state.apply({**finished, "model": "a", "step_id": "0", "ts": (now - 5) * 1000, "confidence": 0.4,
                 "confidence_method": "verifier"})  # arrived late: an older answer's
    state.apply({**finished, "model": "b", "step_id": "2", "ts": now * 1000, "confidence": 0.7})  # no method: the prior
    figures = {row.alias: row for row in state.figures()}
    assert (figures["a"].confidence, figures["a"].confidence_method) == (0.82, "logprobs")
    lines = {line.split()[1]: line for line in plain_lines(state, now=now)[1:] if line.startswith("  model ")}
    assert lines["a"].endswith("confidence=0.82 logprobs")
    assert lines["b"].endswith("confidence=0.70 prior")
    assert lines["quiet"].endswith("confidence=–")


def test_protocol_frames_bring_the_servers_figures_runs_and_reviews():
    state = TopState()
    state.apply_frame({"type": "snapshot", "topic": "runs", "seq": 3, "data": {"values": {
        "run.1": {"run_id": "1", "status": "succeeded", "target": "swift-mini", "created_ts": 1},
        "run.2": {"run_id": "2", "status": "running", "target": "workflow/report", "created_ts": 2}}}})
    state.apply_frame({"type": "delta", "topic": "runs", "seq": 4, "changes": {
        "run.2": {"run_id": "2", "status": "awaiting_review", "target": "workflow/report"}}})
    state.apply_frame({"type": "snapshot", "topic": "reviews", "seq": 1, "data": {"values": {
        "item.r9": {"review_id": "r9", "run_id": "2", "status": "pending", "reason": "low_confidence",
                    "created_ts": 1000}, "counts": {"pending": 1, "claimed": 0, "oldest_pending_ts": 1000}}}})
    state.apply_frame({"type": "metrics.tick", "topic": "overview", "seq": 9, "changes": {}, "metrics": {"models": {
        "atlas-pro": {"alias": "atlas-pro", "enabled": True, "calls": 7, "req_per_s": 0.12, "tokens_per_s": 3.5,
                      "cost_per_min": 0.002, "latency_p50_ms": 250, "latency_p95_ms": 480, "in_flight": 2,
                      "circuit": "half_open", "status": "degraded", "failures": 1}}}})
    assert [(r.id, r.status) for r in state.latest_runs()] == [("2", "awaiting_review"), ("1", "succeeded")]
    assert state.backlog()[0] == 1
    row = next(r for r in state.figures() if r.alias == "atlas-pro")
    assert (row.status, row.in_flight, row.calls, row.p95_ms) == ("degraded", 2, 7, 480)
    state.apply_frame({"type": "delta", "topic": "reviews", "seq": 2, "changes": {
        "item.r9": None, "counts": {"pending": 0, "claimed": 0, "oldest_pending_ts": None}}})
    assert state.backlog() == (0, None, [])


class ScriptedClient:
    """Stands in for AsyncPodiumClient.events: one scripted list of frames per connection."""

    base_url = "http://podium.test"

    def __init__(self, *connections):
        self.connections = list(connections)
        self.opened = 0

    async def events(self, topics, team=None):
        self.opened += 1
        for frame in self.connections.pop(0) if self.connections else []:
            yield frame
        await asyncio.sleep(3600)


def test_a_gap_in_a_topics_sequence_reconnects_for_fresh_snapshots():
    from terminal.top import WebSocketSource

    snapshots = [{"type": "snapshot", "topic": t, "seq": 5, "data": {"values": {}}} for t in WebSocketSource.TOPICS]
    client = ScriptedClient(
        snapshots + [{"type": "delta", "topic": "runs", "seq": 6, "changes": {}},
                     {"type": "delta", "topic": "runs", "seq": 8, "changes": {}},  # 7 never came
                     {"type": "delta", "topic": "runs", "seq": 9, "changes": {}}],
        snapshots)
    source = WebSocketSource(client)

    async def scenario():
        seen = []
        async def collect():
            async for event in source.events():
                seen.append(event["frame"])
        task = asyncio.create_task(collect())
        while len(seen) < 7:
            await asyncio.sleep(0.01)
        task.cancel()
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert client.opened == 2
    assert [(f["type"], f["seq"]) for f in seen[3:7]] == [("delta", 6), ("snapshot", 5), ("snapshot", 5),
                                                           ("snapshot", 5)]


def test_a_burst_of_events_is_drawn_at_most_fps_times_a_second():
    """Loose, as the issue asks: 'at most a few times per second'."""
    class Burst:
        name = "burst"
        joined = asyncio.Event()

        async def load(self, state):
            pass

        async def events(self):
            self.joined.set()
            for index in range(3000):
                yield {"type": "step.finished", "model": "m", "step_id": str(index), "status": "succeeded",
                       "ts": time.time() * 1000, "latency_ms": 5}
                if index % 100 == 0:
                    await asyncio.sleep(0.05)

    class CountingScreen:
        min_interval, idle_s, notice, shown = 1 / 4, 1.0, "", 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def show(self, state):
            self.shown += 1

    screen = CountingScreen()

    async def scenario():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        return await run_top(Burst(), screen, stop=stop, stdin=io.StringIO())

    state = asyncio.run(scenario())
    assert state.events_seen == 3000
    assert 2 <= screen.shown <= 1.5 * 4 + 2


@pytest.mark.production
@pytest.mark.timeout(240)
def test_with_redis_the_local_source_sees_a_call_served_by_another_process(tmp_path):
    """Production mode without --url: the channel-layer group of a web process, over Redis."""
    from tests.production.stack import Stack, require_services

    require_services()
    stack = Stack()
    terminal = None
    try:
        stack.prepare()
        stack.start_web(1)
        env = {**stack.base_env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "45"}
        terminal = PseudoTerminal([sys.executable, str(ROOT / "manage.py"), "podium_top", "--fps", "8"], env)
        before = terminal.until(lambda screen: model_row(screen, "ci-fast"))
        assert calls_of(before) == 0  # the first frame is drawn once the group is joined
        response = httpx.post(f"{stack.url()}/v1/chat/completions", headers=stack.key_headers, timeout=30,
                              json={"model": "ci-fast", "messages": [{"role": "user", "content": "over redis"}]})
        assert response.status_code == 200
        terminal.until(lambda screen: calls_of(model_row(screen, "ci-fast")) == 1)
        terminal.type("q")
        assert terminal.process.wait(20) == 0
    finally:
        if terminal is not None:
            terminal.close()
        stack.stop()

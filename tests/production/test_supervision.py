"""Supervision against the real PostgreSQL and Redis: the web server, two Celery workers and beat under
supervisord with the project's config/supervisord.conf (as `make up` runs them), and `scripts/up.sh` itself.

A Celery worker's main process SIGKILLed while runs are queued is restarted by supervisord while the web
server keeps taking submissions; every run ends, each step once, the key's spend the sum of the steps.
A pool process SIGKILLed (the OOM killer's usual victim) is replaced by its worker, whose main process lives
on; the cut run goes on elsewhere from its finished steps, with the same guarantees. /v1 calls in flight when
supervisord gets SIGTERM all answer 200: the web server stops last and drains them.
SIGTERM or SIGINT (Ctrl-C) to supervisord stops every program and it exits 0. Short leases and a short sweep
(PODIUM_RUN_LEASE_S, PODIUM_SCHEDULER_INTERVAL_S) let a killed worker's runs go on within seconds.
Run with -s to see the figures.
"""
from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.production.stack import (
    BIN, PROGRAM_LINE, ROOT, Stack, Supervisor, alive, children, descendants, free_port, require_services,
)

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]
FINAL = ("succeeded", "failed", "cancelled", "budget_exceeded", "deadline_exceeded")
PROGRAMS = ["web", "worker1", "worker2", "beat"]
# A killed worker's runs: their lease lapses within LEASE_S, beat's sweep (every SWEEP_S) hands them out again.
LEASE_S, SWEEP_S = "3", "1"
STEP_MS, STEPS = "300", "6"


@pytest.fixture(scope="module")
def stack():
    require_services()
    stack = Stack()
    stack.base_env.update({"CI_SLOW_MS": STEP_MS, "CI_CHAIN_STEPS": STEPS, "PODIUM_RUN_LEASE_S": LEASE_S,
                           "PODIUM_SCHEDULER_INTERVAL_S": SWEEP_S})
    try:
        stack.prepare()
        stack.start_supervised(web_processes=2, workers=2, concurrency=3)
        yield stack
    finally:
        stack.stop()


def wait_until(predicate, timeout: float, what: str, stack: Stack, interval: float = 0.1):
    return wait_for(predicate, timeout, interval, describe=lambda: f"{what} not within {timeout}s\n{stack.logs()}")


def leases(stack: Stack) -> dict[str, int]:
    """{run id: pid of the process executing it} from the runs' leases in Redis ("<host>:<pid>:<token>")."""
    found = {}
    for key in stack.redis.client.scan_iter("podium:run-lease:*"):
        value = stack.redis.client.get(key)
        if value:
            found[key.decode().rsplit(":", 1)[1]] = int(value.decode().split(":")[1])
    return found


def finished_steps(stack: Stack, run_id: str) -> int:
    return stack.db.value("SELECT count(*) FROM orchestration_step WHERE run_id = %s AND status = 'succeeded' "
                          "AND node_type = 'call'", [run_id])



def assert_each_run_succeeded_once(stack, submitted: list[str]) -> int:
    """Every run succeeded with each of its STEPS call steps recorded once; the number of call steps."""
    statuses = dict(stack.db.query("SELECT status, count(*) FROM orchestration_run WHERE id = ANY(%s::uuid[]) "
                                   "GROUP BY status", [submitted]))
    assert statuses == {"succeeded": len(submitted)}, statuses
    duplicates = stack.db.query("SELECT run_id, key, count(*) FROM orchestration_step WHERE run_id = ANY(%s::uuid[]) "
                                "GROUP BY run_id, key HAVING count(*) > 1", [submitted])
    assert duplicates == []
    steps = stack.db.value("SELECT count(*) FROM orchestration_step WHERE run_id = ANY(%s::uuid[]) "
                           "AND node_type = 'call'", [submitted])
    assert steps == len(submitted) * int(STEPS)
    return steps


def assert_billed_once(stack, submitted: list[str], key_id, spent_before: float) -> float:
    """Each run costs the sum of its call steps, and the key's spend grew by exactly their sum; that growth."""
    mismatched = stack.db.query(
        "SELECT r.id FROM orchestration_run r WHERE r.id = ANY(%s::uuid[]) AND r.cost_usd <> "
        "(SELECT coalesce(sum(s.cost_usd), 0) FROM orchestration_step s WHERE s.run_id = r.id AND s.node_type = 'call')",
        [submitted])
    assert mismatched == []
    step_cost = float(stack.db.value("SELECT sum(cost_usd) FROM orchestration_step WHERE run_id = ANY(%s::uuid[]) "
                                     "AND node_type = 'call'", [submitted]))
    spent_after = float(stack.db.value("SELECT spent_usd FROM orchestration_apikey WHERE id = %s", [key_id]))
    assert spent_after - spent_before == pytest.approx(step_cost, abs=1e-8)
    return spent_after - spent_before


def test_every_line_of_supervisords_output_carries_its_programs_name(stack):
    lines = [line for line in stack.supervisor.output().splitlines() if line.strip()]
    names = [PROGRAM_LINE.match(line) for line in lines]
    assert all(names), [line for line, name in zip(lines, names) if not name][:5]
    seen = {name[1] for name in names}
    assert set(PROGRAMS) | {"supervisord"} <= seen, seen
    output = stack.supervisor.output()
    assert "worker1     | " in output and "supervisord | web running (pid" in output
    # The program's own log file has the same lines, unprefixed.
    assert " ready." in stack.supervisor.program_log("worker1")
    print(f"\n[one stream] {len(lines)} lines, each behind its name: {sorted(seen)}")


def test_a_worker_sigkilled_under_load_is_restarted_and_every_run_ends_with_each_step_once(stack):
    supervisor = stack.supervisor
    key_id = stack.seed["api_key_id"]
    spent_before = float(stack.db.value("SELECT spent_usd FROM orchestration_apikey WHERE id = %s", [key_id]))
    submitted, refused = [], []
    client = httpx.Client(headers=stack.key_headers, timeout=30)

    def submit(n: int) -> None:
        try:
            response = client.post(f"{stack.url()}/api/runs/", json={"workflow": "chain", "input": f"load {n}"})
        except httpx.HTTPError as exc:
            refused.append(repr(exc))
            return
        if response.status_code == 202:
            submitted.append(response.json()["id"])
        else:
            refused.append(f"{response.status_code} {response.text[:200]}")

    for n in range(24):
        submit(n)
    old_pid = supervisor.pid_of("worker1")
    pool = children(old_pid)

    def interrupted_candidates():
        """{run: steps finished} of the runs worker1's pool executes, past their first step: the kill cuts them."""
        steps = {run_id: finished_steps(stack, run_id) for run_id, pid in leases(stack).items() if pid in pool}
        return {run_id: done for run_id, done in steps.items() if 1 <= done < int(STEPS)}

    before = wait_until(interrupted_candidates, 60, "a run on worker1 with a finished step", stack, 0.05)
    victims = list(before)
    os.kill(old_pid, signal.SIGKILL)  # the worker's main process only, as the OOM killer would
    killed_at = time.monotonic()

    # Submissions go on while the worker is down and comes back: the web server must take every one.
    answered = []
    stop_load = threading.Event()

    def load() -> None:
        n = 100
        while not stop_load.is_set() and n < 112:
            submit(n)
            answered.append(client.get(f"{stack.url()}/healthz").status_code)
            n += 1
            stop_load.wait(0.4)

    loader = threading.Thread(target=load)
    loader.start()
    new_pid = supervisor.wait_running(["worker1"], timeout=30, besides={"worker1": old_pid})["worker1"]
    restarted_s = time.monotonic() - killed_at
    supervisor.wait_worker_ready("worker1", times=2)
    ready_s = time.monotonic() - killed_at
    wait_until(lambda: not any(alive(pid) for pid in pool), 10, "the killed worker's pool to exit", stack)
    loader.join(30)
    stop_load.set()
    client.close()

    assert refused == [] and set(answered) == {200}, (refused, answered)
    assert 20 <= len(submitted) <= 50
    assert supervisor.pid_of("web") and supervisor.pid_of("worker2") and supervisor.pid_of("beat")
    wait_until(lambda: stack.db.value("SELECT count(*) FROM orchestration_run WHERE id = ANY(%s::uuid[]) "
                                      "AND status = ANY(%s)", [submitted, list(FINAL)]) == len(submitted),
               120, "every run to reach a final state", stack, 0.2)
    all_done_s = time.monotonic() - killed_at

    steps = assert_each_run_succeeded_once(stack, submitted)
    spent = assert_billed_once(stack, submitted, key_id, spent_before)
    for run_id in victims:  # went on from its finished steps after the kill
        assert finished_steps(stack, run_id) == int(STEPS) > before[run_id]
    output = supervisor.output()
    assert f"supervisord | worker1 exited unexpectedly (pid {old_pid}): restarting" in output
    assert f"supervisord | worker1 running (pid {new_pid})" in output
    print(f"\n[SIGKILL worker1] {len(submitted)} runs submitted (12 while it was down or starting), 0 refused; "
          f"{len(victims)} runs interrupted; supervisord restarted it in {restarted_s:.1f}s (ready after "
          f"{ready_s:.1f}s); every run succeeded {all_done_s:.1f}s after the kill; {steps} steps, 0 duplicated; "
          f"spend ${spent:.6f} = sum of step costs")


def test_a_pool_child_sigkilled_is_replaced_by_its_worker_and_every_run_ends_with_each_step_once(stack):
    """The OOM killer's usual victim: one Celery pool process (not the worker's main process) SIGKILLed while it
    executes a run. The worker's main process survives and forks a replacement; the cut run goes on from its
    finished steps once its lease lapses (beat's sweep), every run succeeds, each step once, spend = steps."""
    supervisor = stack.supervisor
    key_id = stack.seed["api_key_id"]
    spent_before = float(stack.db.value("SELECT spent_usd FROM orchestration_apikey WHERE id = %s", [key_id]))
    main_pid = supervisor.pid_of("worker1")
    assert main_pid
    pool = children(main_pid)
    assert len(pool) == 3, pool
    submitted = []
    with httpx.Client(headers=stack.key_headers, timeout=30) as client:
        for n in range(18):
            response = client.post(f"{stack.url()}/api/runs/", json={"workflow": "chain", "input": f"pool {n}"})
            assert response.status_code == 202, response.text[:300]
            submitted.append(response.json()["id"])

    def cut_candidate():
        """(run, pid of worker1's pool process executing it, steps finished) for a run past its first step."""
        for run_id, pid in leases(stack).items():
            if pid in pool and run_id in submitted and 1 <= finished_steps(stack, run_id) < int(STEPS):
                return run_id, pid, finished_steps(stack, run_id)
        return None

    victim_run, victim_pid, done_before = wait_until(cut_candidate, 30, "a run in worker1's pool with a step done",
                                                     stack, 0.05)
    os.kill(victim_pid, signal.SIGKILL)  # that pool process only, as the OOM killer would
    killed_at = time.monotonic()

    wait_until(lambda: not alive(victim_pid), 10, "the killed pool process to be reaped", stack)
    replaced = wait_until(lambda: (lambda now: now if len(now) == 3 and victim_pid not in now else None)(
        children(main_pid)), 20, "worker1 to replace its pool process", stack)
    replaced_s = time.monotonic() - killed_at
    wait_until(lambda: stack.db.value("SELECT count(*) FROM orchestration_run WHERE id = ANY(%s::uuid[]) "
                                      "AND status = ANY(%s)", [submitted, list(FINAL)]) == len(submitted),
               60, "every run to reach a final state within 60 s of the kill", stack, 0.2)
    all_done_s = time.monotonic() - killed_at

    # The worker's main process lived through it: same pid, still RUNNING, never restarted by supervisord.
    assert alive(main_pid) and supervisor.pid_of("worker1") == main_pid
    assert f"worker1 exited unexpectedly (pid {main_pid})" not in supervisor.output()
    new_children = sorted(set(replaced) - set(pool))
    assert len(new_children) == 1, (pool, replaced)
    assert supervisor.pid_of("web") and supervisor.pid_of("worker2") and supervisor.pid_of("beat")

    steps = assert_each_run_succeeded_once(stack, submitted)
    assert finished_steps(stack, victim_run) == int(STEPS) > done_before
    assert_billed_once(stack, submitted, key_id, spent_before)
    print(f"\n[SIGKILL a pool process] worker1's pool process {victim_pid} killed {done_before} steps into its run; "
          f"worker1 (pid {main_pid}) lived and replaced it in {replaced_s:.1f}s; all {len(submitted)} runs "
          f"succeeded {all_done_s:.1f}s after the kill; {steps} steps, 0 duplicated; spend = sum of step costs")


def test_sigterm_to_supervisord_stops_every_program_and_it_exits_0(stack):
    supervisor = stack.supervisor
    tree = descendants(supervisor.pid)
    assert len(tree) >= 1 + 1 + 2 + 2 * 3 + 1 + 1  # listener, gunicorn + 2 workers, 2 × (worker + 3 pool), beat
    started = time.monotonic()
    assert supervisor.stop(signal.SIGTERM) == 0
    took = time.monotonic() - started
    assert [pid for pid in tree if alive(pid)] == []
    log = (supervisor.var / "supervisor/supervisord.log").read_text()
    lines = [line.split("stopped: ")[1] for line in log.splitlines() if "stopped: " in line]
    stopped = [line.split(" ")[0] for line in lines]
    assert stopped[:4] == ["beat", "worker1", "worker2", "web"] or stopped[:4] == ["beat", "worker2", "worker1", "web"]
    for name in ["web", "worker1", "worker2"]:
        assert f"{name} (exit status 0)" in lines, lines  # each drained and exited by itself, none killed
    # beat exits by itself too, though not always 0: Celery beat's SIGTERM handler closes its schedule file and
    # raises SystemExit wherever beat is, and when that is inside a send to Redis, beat's next tick fails on the
    # closed file (exit 1). Its jobs are idempotent and the schedule was saved: nothing is lost.
    assert any(line.startswith("beat (exit status ") for line in lines), lines
    print(f"\n[SIGTERM] {len(tree)} processes stopped in {took:.1f}s, in order {stopped}; supervisord exited 0")


# Longer than beat's and the worker's stops (4-6.5 s measured here), which come first: the calls are still in
# flight when the web server gets its SIGTERM, and finish within its graceful timeout (15 s in this test).
DRAIN_MS = 9000
ADD_DRAIN_MODEL = f"""
import django
django.setup()
from orchestration.models import LLMModel, Provider
from orchestration.registry import bump_version
provider, _ = Provider.objects.update_or_create(name="ci-drain-provider", defaults={{
    "kind": Provider.Kind.MOCK, "is_local": True, "max_concurrency": 512,
    "mock_options": {{"seed": 7, "latency_ms": {DRAIN_MS}, "failure_rate": 0, "confidence": 0.9}}}})
LLMModel.objects.update_or_create(alias="ci-drain", defaults={{
    "provider": provider, "upstream_name": "ci-drain", "tier": "fast", "price_in_per_m": "1.0",
    "price_out_per_m": "2.0", "quality_prior": 0.9, "allowed_data_classes": ["public", "internal"]}})
bump_version()
"""


def supervisord_log_times(supervisor: Supervisor, event: str) -> list[float]:
    """Wall-clock times (epoch seconds) of supervisord.log lines containing `event`."""
    import datetime

    found = []
    for line in (supervisor.var / "supervisor/supervisord.log").read_text().splitlines():
        if event in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            found.append(stamp.timestamp())
    return found


def test_sigterm_to_supervisord_drains_in_flight_v1_calls_and_leaves_no_process(stack):
    """Several /v1 chat calls to a model answering in DRAIN_MS are in flight when supervisord gets SIGTERM:
    beat and the worker stop first, then gunicorn lets its workers finish their requests: every call answers
    200, supervisord exits 0, nothing is left."""
    stack.supervisor.stop()  # (stopped already by the test before) a fresh stack for this one
    done = subprocess.run([str(BIN / "python"), "-c", ADD_DRAIN_MODEL], cwd=ROOT, env=stack.base_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    supervisor = stack.start_supervised(web_processes=2, workers=1, concurrency=1, WEB_GRACEFUL_TIMEOUT_S="15")
    try:
        tree = descendants(supervisor.pid)
        # Warm both web processes (and the model's registry entry) before the calls that matter.
        with httpx.Client(headers=stack.key_headers, timeout=10) as client:
            for n in range(4):
                assert client.post(f"{stack.url()}/v1/chat/completions", json={
                    "model": "ci-fast", "messages": [{"role": "user", "content": f"warm {n}"}]}).status_code == 200

        calls = 8
        results: dict[int, tuple] = {}
        sent = threading.Barrier(calls + 1)

        def call(n: int) -> None:
            body = {"model": "ci-drain", "messages": [{"role": "user", "content": f"drain {n} {time.time()}"}]}
            with httpx.Client(headers=stack.key_headers, timeout=60) as client:
                sent.wait()
                began = time.time()
                try:
                    response = client.post(f"{stack.url()}/v1/chat/completions", json=body)
                    results[n] = (response.status_code, began, time.time(), response.text[:200])
                except httpx.HTTPError as exc:
                    results[n] = (repr(exc), began, time.time(), "")

        threads = [threading.Thread(target=call, args=(n,)) for n in range(calls)]
        for thread in threads:
            thread.start()
        sent.wait()
        time.sleep(0.4)  # every request sent and accepted, each waiting on its model's answer
        assert results == {}, results
        signalled = time.time()
        started = time.monotonic()
        code = supervisor.stop(signal.SIGTERM, timeout=60)
        took = time.monotonic() - started
        for thread in threads:
            thread.join(30)
    finally:
        supervisor.stop()  # whatever happened above: nothing outlives the test
    assert code == 0, supervisor.output_tail()
    statuses = [results.get(n, ("missing",))[0] for n in range(calls)]
    assert statuses == [200] * calls, results
    assert [pid for pid in tree if alive(pid)] == []
    # The calls were still in flight when the web server was asked to stop (after beat and the worker).
    web_asked = supervisord_log_times(supervisor, "stopped: worker1")[-1]  # supervisord signals web next
    answered_last = max(result[2] for result in results.values())
    assert answered_last > web_asked, (answered_last - signalled, web_asked - signalled)
    log = (supervisor.var / "supervisor/supervisord.log").read_text()
    assert "stopped: web (exit status 0)" in log.split("received SIGTERM")[-1], log[-2000:]
    print(f"\n[drain] {calls} /v1 calls of {DRAIN_MS} ms in flight at SIGTERM: all 200; supervisord exited 0 "
          f"{took:.1f}s after SIGTERM; last answer {answered_last - signalled:.1f}s after SIGTERM "
          f"(web asked to stop {web_asked - signalled:.1f}s after it, drained by gunicorn); "
          f"{len(tree)} processes, none left")


def stop_tree(pid: int) -> None:
    """Stop a process and everything under it: its supervisord gracefully (SIGTERM, as its programs are in
    process groups of their own), then SIGKILL to what is left. The tree is read first: once `pid` is gone its
    supervisord would belong to init."""
    tree = descendants(pid)
    supervisords = []
    for process in tree:
        try:
            if b"supervisord" in Path(f"/proc/{process}/cmdline").read_bytes():
                supervisords.append(process)
                os.kill(process, signal.SIGTERM)
        except (OSError, ProcessLookupError):
            pass
    deadline = time.monotonic() + 60
    while any(alive(process) for process in supervisords) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in [pid, *tree, *(p for s in supervisords for p in descendants(s))]:
        try:
            os.kill(process, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def read_until(fd: int, wanted: bytes, timeout: float, seen: bytearray) -> bool:
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return False
            if not data:
                return wanted in seen
            seen += data
    return wanted in seen


def test_make_up_on_a_terminal_stops_on_ctrl_c_and_exits_0(stack, tmp_path):
    """scripts/up.sh (what `make up` runs) on a pseudo-terminal: it refuses without SECRET_KEY, migrates, starts
    everything under supervisord, prints the URL once /readyz answers; a second one is refused without touching
    the first's metrics; Ctrl-C stops it all and it exits 0."""
    stack.supervisor.stop()  # (stopped already by the test before) this one has the database and Redis alone
    port = free_port()
    var = tmp_path / "var"
    env = {**stack.supervised_env(web_processes=1, workers=1, concurrency=1, var_dir=var), "PORT": str(port),
           "PY": str(BIN / "python"), "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"), "TERM": "dumb"}

    no_key = {k: v for k, v in env.items() if k not in ("SECRET_KEY", "DEMO")}
    refused = subprocess.run(["bash", "scripts/up.sh"], cwd=ROOT, env=no_key, capture_output=True, text=True,
                             timeout=30)
    assert refused.returncode == 2 and "SECRET_KEY is not set" in refused.stdout

    status = None
    pid, fd = pty.fork()
    if pid == 0:  # the child: up.sh with the pseudo-terminal as its terminal, as in a shell
        os.chdir(ROOT)
        os.execve("/bin/bash", ["bash", "scripts/up.sh"], env)
    seen = bytearray()
    try:
        assert read_until(fd, f"Podium: http://127.0.0.1:{port}/".encode(), 120, seen), seen.decode(errors="replace")
        assert b"readiness: {\"status\": \"ok\"" in seen
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        supervisor = Supervisor(env, tmp_path)  # only to ask supervisorctl
        pids = supervisor.wait_running(["web", "worker1", "beat"], timeout=60)
        supervisord_pid = int((var / "supervisor/supervisord.pid").read_text())
        tree = descendants(supervisord_pid)
        assert set(pids.values()) <= set(tree)

        marker = var / "prometheus" / "marker.db"
        marker.write_bytes(b"")  # a second `make up` must neither start nor clear the live stack's metrics
        second = subprocess.run(["bash", "scripts/up.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=30)
        assert second.returncode == 1 and "already running" in second.stdout, second.stdout + second.stderr
        assert marker.exists()

        read_until(fd, b"worker1     | ", 30, seen)
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to its foreground process group
        interrupted = time.monotonic()
        read_until(fd, b"Podium stopped", 90, seen)
        deadline = time.monotonic() + 30
        while status is None and time.monotonic() < deadline:
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
            time.sleep(0.1)
        took = time.monotonic() - interrupted
        assert status is not None, f"up.sh still running after Ctrl-C:\n{seen.decode(errors='replace')[-3000:]}"
    finally:
        # Whatever happened, nothing may outlive the test: a stray worker on this Redis db would take the
        # next session's tasks. Nothing to do once up.sh exited by itself (waited for above).
        if status is None:
            stop_tree(pid)
        os.close(fd)
    text = seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    assert "Podium stopped (supervisord exited 0" in text
    assert [p for p in tree if alive(p)] == []
    assert "supervisord | web stopping" in text and "worker1     | " in text
    print(f"\n[make up, Ctrl-C] {len(tree)} processes; stopped and exited 0 {took:.1f}s after Ctrl-C")


def test_the_reference_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """deploy/systemd/ as installed (paths pointed at this checkout): systemd's own checker accepts every unit,
    and each stops like config/supervisord.conf's programs — SIGTERM to the main process, SIGKILL to the rest."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed here")
    units = sorted((ROOT / "deploy/systemd").glob("podium*.service")) + [ROOT / "deploy/systemd/podium.target"]
    for unit in units:
        text = unit.read_text().replace("/srv/podium/.venv/bin", str(BIN)).replace("/srv/podium", str(ROOT))
        (tmp_path / unit.name).write_text(text)
        if unit.suffix == ".service" and unit.name != "podium-prepare.service":
            assert "KillMode=mixed" in text and "KillSignal=SIGTERM" in text and "Restart=always" in text
    names = [u.name.replace("@.service", "@1.service") for u in units]
    done = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if "podium" in line and "User=" not in line and "Failed to" not in line]
    assert done.returncode == 0 or not problems, done.stdout + done.stderr
    assert problems == [], problems

"""Reliability against the real PostgreSQL and Redis: the production web server (one port, two uvicorn
worker processes under gunicorn) and Celery worker subprocesses.

Skipped, with the reason, where PostgreSQL or Redis does not answer (see stack.py); `.ci/run`
points the suite at the machine's services. Each test prints its figures (run with -s to see them).
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest
import websockets

from tests.conftest import wait_for
from tests.dashboardhelpers import frames_until, subscribe
from tests.production.stack import ROOT, NginxProxy, Stack, nginx_unavailable, require_services

pytestmark = [pytest.mark.production, pytest.mark.timeout(240)]
WORKER_CONCURRENCY = 4  # pool processes per worker; a run mostly waits on PostgreSQL and Redis
FINAL = ("succeeded", "failed", "cancelled", "budget_exceeded", "deadline_exceeded")


@pytest.fixture(scope="module")
def stack():
    require_services()
    stack = Stack()
    try:
        stack.prepare()
        stack.start_web(2)
        stack.start_worker("w1", WORKER_CONCURRENCY)
        stack.start_worker("w2", WORKER_CONCURRENCY)
        yield stack
    finally:
        stack.stop()


def wait_until(predicate, timeout: float, what: str, stack: Stack, interval: float = 0.1):
    return wait_for(predicate, timeout, interval, describe=lambda: f"{what} not within {timeout}s\n{stack.logs()}")


def start_run(stack: Stack, workflow: str, text: str, **extra) -> str:
    response = httpx.post(f"{stack.url()}/api/runs/", headers=stack.key_headers,
                          json={"workflow": workflow, "input": text, **extra}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def run_status(stack: Stack, run_id: str) -> str | None:
    return stack.db.value("SELECT status FROM orchestration_run WHERE id = %s", [run_id])


def connect_dashboard(stack: Stack):
    return websockets.connect(f"{stack.ws_url()}/ws/dashboard/", additional_headers={"Cookie": stack.cookie()},
                              origin=stack.url(), open_timeout=10)


def metric(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_run_executed_by_a_worker_is_seen_live_on_a_websocket_of_the_web_server(stack):
    async def scenario():
        async with connect_dashboard(stack) as socket:
            await subscribe(socket, "runs")
            async with httpx.AsyncClient() as client:  # submitted over HTTP; executed by a Celery worker
                response = await client.post(f"{stack.url()}/api/runs/", headers=stack.key_headers,
                                             json={"workflow": "chain", "input": "across processes"}, timeout=30)
            run_id = response.json()["id"]
            key = f"run.{run_id}"
            frames = await frames_until(
                socket, lambda f: (f.get("changes") or {}).get(key, {}).get("status") == "succeeded", timeout=60)
            return run_id, [f["changes"][key]["status"] for f in frames if key in (f.get("changes") or {})]

    run_id, statuses = asyncio.run(scenario())
    assert statuses[-1] == "succeeded"
    assert "running" in statuses  # seen while it ran, not only read back at the end
    assert run_status(stack, run_id) == "succeeded"
    print(f"\n[live across processes] run {run_id}: statuses seen on the websocket: {statuses}")


def test_a_worker_killed_mid_run_leaves_a_run_that_completes_with_each_step_counted_once(stack):
    spent_before = float(stack.db.value("SELECT spent_usd FROM orchestration_apikey WHERE id = %s",
                                        [stack.seed["api_key_id"]]))
    run_id = start_run(stack, "chain", "survive a crash")
    finished_sql = ("SELECT key, id, finished_at, cost_usd FROM orchestration_step "
                    "WHERE run_id = %s AND status = 'succeeded' AND node_type = 'call' ORDER BY key")
    wait_until(lambda: len(stack.db.query(finished_sql, [run_id])) >= 2, 60, "two finished steps", stack, 0.05)
    for worker in list(stack.workers.values()):
        worker.kill()  # SIGKILL to each worker's whole process group, pool children included
    killed_at = time.monotonic()
    before = stack.db.query(finished_sql, [run_id])
    assert 2 <= len(before) < 6 and run_status(stack, run_id) == "running"

    stack.start_worker("w3", WORKER_CONCURRENCY)  # a worker comes back: the unacknowledged task is delivered again
    wait_until(lambda: run_status(stack, run_id) in FINAL, 90, "the interrupted run to finish", stack)
    recovered_s = time.monotonic() - killed_at

    assert run_status(stack, run_id) == "succeeded"
    steps = stack.db.query("SELECT key, status, cost_usd FROM orchestration_step WHERE run_id = %s AND "
                           "node_type = 'call' ORDER BY key", [run_id])
    assert [key for key, _, _ in steps] == sorted({key for key, _, _ in steps})  # one row per step: no duplicate
    assert len(steps) == 6 and all(status == "succeeded" for _, status, _ in steps)
    after = {row[0]: row for row in stack.db.query(finished_sql, [run_id])}
    for key, step_id, finished_at, cost in before:  # steps finished before the crash were reused, not re-run
        assert after[key][1:] == (step_id, finished_at, cost)
    step_cost = sum(float(cost) for _, _, cost in steps)
    run_cost = float(stack.db.value("SELECT cost_usd FROM orchestration_run WHERE id = %s", [run_id]))
    spent_after = float(stack.db.value("SELECT spent_usd FROM orchestration_apikey WHERE id = %s",
                                       [stack.seed["api_key_id"]]))
    assert run_cost == pytest.approx(step_cost, abs=1e-8)
    assert spent_after - spent_before == pytest.approx(step_cost, abs=1e-8)  # no double cost on the key
    calls = metric(httpx.get(f"{stack.url()}/metrics").text, "podium_model_requests_total", model="ci-slow",
                   status="succeeded")
    assert calls <= 6 + 6  # this run's six and the first test's six at most: no finished call counted twice
    stack.start_worker("w2", WORKER_CONCURRENCY)
    print(f"\n[SIGKILL] run {run_id}: {len(before)} of 6 steps finished before the kill; completed "
          f"{recovered_s:.1f}s after it; 6 steps, 0 duplicates; run cost ${run_cost:.6f} = sum of steps = "
          f"key's spend increase ${spent_after - spent_before:.6f}")


def test_redis_unavailable_for_a_few_seconds_v1_keeps_answering_and_dashboards_recover(stack):
    v1_body = {"model": "ci-fast", "messages": [{"role": "user", "content": "during the outage"}]}
    statuses = []
    # One keep-alive connection, so one web process: podium_live_events_dropped_process is the answering
    # process's own count, and the scrapes must come from the process that served the calls.
    # podium_live_events_dropped_total is the host's (every web process's files in the multiprocess dir).
    with httpx.Client(headers=stack.key_headers, timeout=10) as client:
        scrape = client.get(f"{stack.url()}/metrics").text
        dropped_before = metric(scrape, "podium_live_events_dropped_process")
        host_dropped_before = metric(scrape, "podium_live_events_dropped_total")
        stack.proxy.cut()
        cut_at = time.monotonic()
        while time.monotonic() - cut_at < 4:
            statuses.append(client.post(f"{stack.url()}/v1/chat/completions", json=v1_body).status_code)
        ready = httpx.get(f"{stack.url()}/readyz", timeout=10)
        scrape = client.get(f"{stack.url()}/metrics").text
        dropped = metric(scrape, "podium_live_events_dropped_process") - dropped_before
        host_dropped = metric(scrape, "podium_live_events_dropped_total") - host_dropped_before
    stack.proxy.restore()

    assert statuses and set(statuses) == {200}, statuses
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")
    assert dropped > 0  # the events had nowhere to go: dropped and counted, never raised to the caller
    assert host_dropped >= dropped  # the host's count includes this process's

    async def recovered():
        """A dashboard (re)connecting after the outage gets the next call live."""
        deadline = time.monotonic() + 30
        while True:
            try:
                async with connect_dashboard(stack) as socket:
                    await subscribe(socket, "overview")
                    async with httpx.AsyncClient(headers=stack.key_headers) as client:
                        response = await client.post(f"{stack.url()}/v1/chat/completions", timeout=10,
                                                     json={**v1_body, "messages": [{"role": "user",
                                                                                    "content": "after"}]})
                    run_id = response.headers["x-podium-run-id"]
                    await frames_until(socket, lambda f: any(call.get("run_id") == run_id for call in
                                                             (f.get("appends") or {}).get("calls", [])), timeout=5)
                    return time.monotonic() - deadline + 30
            except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    took = asyncio.run(recovered())
    assert httpx.get(f"{stack.url()}/readyz", timeout=10).status_code == 200
    print(f"\n[Redis outage] {len(statuses)} /v1 calls during a {time.monotonic() - cut_at:.1f}s cut: all 200; "
          f"{dropped:.0f} live events dropped and counted; dashboard live again {took:.1f}s after Redis returned")


def test_two_processes_approving_the_same_review_at_once_exactly_one_wins(stack):
    run_ids = [start_run(stack, "gated", f"decide {n}") for n in range(5)]
    review_sql = "SELECT id FROM orchestration_reviewitem WHERE run_id = %s AND status = 'pending'"
    items = [wait_until(lambda run_id=run_id: stack.db.value(review_sql, [run_id]), 60, "a review item", stack)
             for run_id in run_ids]

    async def race(item_id):
        async with httpx.AsyncClient(headers=stack.key_headers, timeout=30) as client:
            return await asyncio.gather(*(client.post(f"{stack.url()}/api/reviews/{item_id}/approve/", json={})
                                          for _ in range(2)))

    outcomes = [sorted(r.status_code for r in asyncio.run(race(item))) for item in items]
    assert outcomes == [[200, 409]] * len(items)
    for run_id in run_ids:
        wait_until(lambda run_id=run_id: run_status(stack, run_id) in FINAL, 60, "the approved run to finish", stack)
        assert run_status(stack, run_id) == "succeeded"
    decided = stack.db.query("SELECT count(*) FROM orchestration_reviewitem WHERE run_id = ANY(%s::uuid[]) "
                             "AND status = 'approved'", [run_ids])[0][0]
    assert decided == len(items)
    check = subprocess.run([sys.executable, "manage.py", "verify_audit"], cwd=ROOT, env=stack.base_env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # concurrent decisions still chain one after another
    print(f"\n[review race] {len(items)} items approved twice at once through the web server's two processes: "
          f"{len(items)} × (one 200, one 409); each run resumed once and succeeded")


def test_a_burst_of_1000_runs_all_reach_a_final_state(stack):
    tag = f"burst-{time.time()}"
    submitted, started = [], time.monotonic()

    async def submit_all():
        limits = httpx.Limits(max_connections=40)
        timeout = httpx.Timeout(60, pool=None)  # 1000 requests queue for 40 connections: no pool timeout
        async with httpx.AsyncClient(headers=stack.key_headers, timeout=timeout, limits=limits) as client:
            async def one(n):
                response = await client.post(f"{stack.url()}/api/runs/", json={
                    "workflow": "quick", "input": f"burst {n}", "metadata": {"burst": tag}})
                assert response.status_code == 202, response.text
                submitted.append(response.json()["id"])
            await asyncio.gather(*(one(n) for n in range(1000)))

    asyncio.run(submit_all())
    submit_s = time.monotonic() - started
    count_sql = ("SELECT status, count(*) FROM orchestration_run WHERE metadata->>'burst' = %s GROUP BY status")

    def all_final():
        counts = dict(stack.db.query(count_sql, [tag]))
        return counts if sum(counts.get(s, 0) for s in FINAL) == 1000 else None

    counts = wait_until(all_final, 180, "1000 runs to reach a final state", stack, 0.5)
    total_s = time.monotonic() - started
    assert len(submitted) == len(set(submitted)) == 1000
    assert counts == {"succeeded": 1000}, counts
    lost = 1000 - sum(counts.values())
    print(f"\n[burst] submitted 1000 in {submit_s:.1f}s through one port (two web processes); completed "
          f"{counts.get('succeeded', 0)} (failed {counts.get('failed', 0)}), lost {lost}; all final after "
          f"{total_s:.1f}s with 2 workers × {WORKER_CONCURRENCY} processes ({1000 / total_s:.0f} runs/s)")


def test_rate_limits_hold_across_processes(stack):
    # A fixed one-minute window: start well inside one so the count cannot straddle two.
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)
    body = {"model": "ci-fast", "messages": [{"role": "user", "content": "limited"}]}
    headers = {"authorization": f"Bearer {stack.seed['limited_key']}"}

    async def burst():
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            return await asyncio.gather(*(client.post(f"{stack.url()}/v1/chat/completions", json=body)
                                          for n in range(60)))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 20 and codes.count(429) == 40  # one limit of 20/min, not 20 per process
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    print(f"\n[rate limit] 60 requests at once on two processes for a 20/min key: 20 × 200, 40 × 429")


def test_v1_calls_are_recorded_by_the_batched_writer_in_postgresql(stack):
    """The writer prepares values itself (recording.column_converter): on PostgreSQL, ids, aware datetimes,
    money and JSON must land as Django would have saved them."""
    tag, text = f"writer-{time.time()}", "héllo ✓ \"quoted\" 𝄞"
    body = {"model": "ci-fast", "messages": [{"role": "user", "content": text}], "metadata": {"writer": tag}}
    run_ids = []
    for n in range(4):
        response = httpx.post(f"{stack.url()}/v1/chat/completions", headers=stack.key_headers, json=body,
                              timeout=30)
        assert response.status_code == 200, response.text
        run_ids.append(response.headers["x-podium-run-id"])
    count_sql = "SELECT count(*) FROM orchestration_run WHERE metadata->>'writer' = %s"
    wait_until(lambda: stack.db.value(count_sql, [tag]) == 4, 30, "4 recorded runs", stack)
    rows = stack.db.query(
        "SELECT r.id::text, r.input->'messages'->0->>'content', r.cost_usd, r.created_at <= r.finished_at, "
        "s.run_id = r.id, s.prompt->0->>'content', s.cost_usd = r.cost_usd, s.started_at <= s.finished_at "
        "FROM orchestration_run r JOIN orchestration_step s ON s.run_id = r.id WHERE r.metadata->>'writer' = %s",
        [tag])
    assert sorted(row[0] for row in rows) == sorted(run_ids)  # one step each, under the id the client got
    for _, content, cost, ordered, linked, prompt, same_cost, step_ordered in rows:
        assert content == prompt == text and cost > 0 and same_cost
        assert ordered and linked and step_ordered


def test_metrics_aggregate_every_process_and_report_queue_and_backlog(stack):
    start_run(stack, "quick", "counted")
    recorded_sql = ("SELECT count(*) FROM orchestration_step WHERE model_alias = 'ci-fast' AND node_type = 'call' "
                    "AND status = 'succeeded'")
    runs_sql = "SELECT count(*) FROM orchestration_run WHERE kind = 'workflow' AND status = 'succeeded'"
    wait_until(lambda: stack.db.value(runs_sql) >= 1, 60, "a finished workflow run", stack)
    recorded, finished_runs = stack.db.value(recorded_sql), stack.db.value(runs_sql)
    text = httpx.get(f"{stack.url()}/metrics").text
    # Workflow calls ran in Celery workers, /v1 calls in the web processes: one scrape sees them all.
    assert metric(text, "podium_model_requests_total", model="ci-fast", status="succeeded") >= recorded > 0
    assert metric(text, "podium_model_latency_seconds_count", model="ci-fast") >= recorded
    assert metric(text, "podium_runs_finished_total", kind="workflow", status="succeeded") >= finished_runs
    assert "podium_queue_depth{" in text and "podium_review_backlog{" in text
    # Worker health: the workers' presence keys in Redis, tasks held by workers, the longest-running run.
    assert metric(text, "podium_workers_alive") >= 1 and metric(text, "podium_tasks_unacked") >= 0
    assert metric(text, "podium_oldest_running_run_age_seconds") >= 0 and metric(text, "podium_runs_lease_expired") == 0


def test_the_audit_trail_refuses_changes_in_postgresql_and_verify_audit_finds_tampering(stack):
    import psycopg

    assert stack.db.value("SELECT count(*) FROM orchestration_auditevent") > 0
    for statement in ("UPDATE orchestration_auditevent SET actor = 'mallory'", "DELETE FROM orchestration_auditevent"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            stack.db.query(statement)
    victim = stack.db.value("SELECT id FROM orchestration_auditevent ORDER BY id LIMIT 1 OFFSET 1")
    # Someone with the database owner's rights goes around the trigger:
    with psycopg.connect(stack.db.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE orchestration_auditevent DISABLE TRIGGER podium_audit_append_only")
        conn.execute("UPDATE orchestration_auditevent SET data = '{\"comment\": \"forged\"}' WHERE id = %s",
                     [victim])
        conn.execute("ALTER TABLE orchestration_auditevent ENABLE TRIGGER podium_audit_append_only")
    check = subprocess.run([sys.executable, "manage.py", "verify_audit"], cwd=ROOT, env=stack.base_env,
                           capture_output=True, text=True)
    assert check.returncode != 0
    assert f"broken at event {victim} " in check.stderr


def test_workers_publish_on_one_loop_without_leaking_loops_or_connections(stack):
    logs = "\n".join(p.log_path.read_text(errors="replace") for p in stack.processes if p.name.startswith("worker"))
    assert "Task orchestration.tasks.execute_run_task" in logs  # the logs are the workers' own
    for symptom in ("Event loop is closed", "was never awaited", "Unclosed client session"):
        assert symptom not in logs
    # After 1,000+ runs Redis sees the processes' pools (about 5 per worker process, 50 per web process
    # with its broker and cache pools), not a connection per run or per event.
    clients = [c for c in stack.redis.client.client_list() if int(c.get("db", -1)) == stack.redis.number]
    processes = 2 + 2 * (WORKER_CONCURRENCY + 1)
    assert len(clients) < 300, len(clients)
    print(f"\n[connections] {len(clients)} Redis connections on the test db for {processes} processes "
          f"after the burst")


# The web server's own tests come last: their /v1 calls are still being recorded (the batched writer) when
# the next test starts, and the killed-Celery-worker test above compares the key's spend before and after.
def post_v1(connection: http.client.HTTPConnection, stack: Stack, content: str) -> tuple[int, str | None]:
    """One /v1 call on a kept-alive connection: (status, run id)."""
    body = json.dumps({"model": "ci-fast", "messages": [{"role": "user", "content": content}]})
    connection.request("POST", "/v1/chat/completions", body=body,
                       headers={**stack.key_headers, "content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status, response.getheader("x-podium-run-id")


def test_one_port_serves_http_and_websockets_from_every_web_process(stack):
    """Two web processes behind one port: dashboards and /v1 calls are accepted by both, and a /v1 call served
    by one process shows live on a dashboard held by the other. Which process holds a connection is read from
    outside, in the kernel's socket tables (/proc), not from anything Podium says."""
    workers = set(stack.wait_web_workers(2))

    async def scenario():
        async with contextlib.AsyncExitStack() as held:  # every connection stays open: each new one is a new accept
            sockets, calls = {}, {}  # owner pid -> a dashboard websocket / a kept-alive /v1 connection
            ws_owners, v1_owners = [], []
            for n in range(100):
                socket = await held.enter_async_context(connect_dashboard(stack))
                owner = stack.connection_owner(socket.local_address[1])
                ws_owners.append(owner)
                sockets.setdefault(owner, socket)
                connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
                held.callback(connection.close)
                status, _ = post_v1(connection, stack, f"which process {n}")
                assert status == 200
                owner = stack.connection_owner(connection.sock.getsockname()[1])
                v1_owners.append(owner)
                calls.setdefault(owner, connection)
                if set(sockets) == set(calls) == workers:
                    break
            assert None not in ws_owners + v1_owners  # every connection was found held by one of the workers
            assert set(sockets) == set(calls) == workers, (ws_owners, v1_owners, workers)
            # A dashboard on one process, a /v1 call on the other: the call shows live (through Redis).
            watcher, caller = sorted(workers)
            socket = sockets[watcher]
            await subscribe(socket, "overview")
            status, run_id = post_v1(calls[caller], stack, "seen by the other process")
            assert status == 200 and stack.connection_owner(calls[caller].sock.getsockname()[1]) == caller
            await frames_until(socket, lambda f: any(call.get("run_id") == run_id for call in
                                                     (f.get("appends") or {}).get("calls", [])), timeout=15)
            return ws_owners, v1_owners

    ws_owners, v1_owners = asyncio.run(scenario())
    spread = {pid: (ws_owners.count(pid), v1_owners.count(pid)) for pid in sorted(workers)}
    print(f"\n[one port] {len(ws_owners)} websockets and {len(v1_owners)} /v1 connections held open; "
          f"per worker pid (websockets, /v1): {spread}; a /v1 call served by one worker seen live on the other's "
          f"dashboard")


def test_a_killed_web_process_is_replaced_while_the_port_keeps_answering(stack):
    before = stack.wait_web_workers(2)
    victim, survivor = before
    body = {"model": "ci-fast", "messages": [{"role": "user", "content": "through a worker's death"}]}
    results: list[tuple[float, object]] = []
    between_requests = threading.Lock()  # the kill lands between two calls: none is in flight on the victim
    done = threading.Event()

    def probe():
        while not done.is_set():
            with between_requests:
                try:  # a new connection per call: each one is accepted afresh by whichever worker is alive
                    response = httpx.post(f"{stack.url()}/v1/chat/completions", headers={
                        **stack.key_headers, "connection": "close"}, json=body, timeout=10)
                    results.append((time.monotonic(), response.status_code))
                except httpx.HTTPError as exc:
                    results.append((time.monotonic(), repr(exc)))
            time.sleep(0.002)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(results) >= 10, 30, "the probe's first calls", stack)
        with between_requests:
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
        after = stack.wait_web_workers(2, timeout=60, besides=frozenset({victim}))
        replaced_s = time.monotonic() - killed_at
        time.sleep(1)
    finally:
        done.set()
        thread.join(15)

    replacement = (set(after) - {survivor}).pop()
    assert survivor in after and victim not in stack.web_workers() and stack.web.alive()  # same master, same port
    during = [status for at, status in results if killed_at <= at <= killed_at + replaced_s]
    failures = [status for _, status in results if status != 200]
    assert not failures, failures
    assert during, "no call was made while the worker was being replaced"
    # The replacement serves too: connections are accepted by it (found by the kernel's tables, as above).
    connections = []
    try:
        for n in range(100):
            connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
            connections.append(connection)
            assert post_v1(connection, stack, f"new worker {n}")[0] == 200
            if stack.connection_owner(connection.sock.getsockname()[1]) == replacement:
                break
        else:
            pytest.fail(f"no connection reached the replacement worker {replacement}")
    finally:
        for connection in connections:
            connection.close()
    print(f"\n[worker killed] SIGKILL to web worker {victim}: replaced by {replacement} (application started) "
          f"{replaced_s:.1f}s later; {len(during)} /v1 calls on new connections meanwhile, {len(results)} in all, "
          f"every one 200 (served by {survivor} until the replacement was up)")


def test_the_reference_tls_proxy_carries_v1_and_dashboards_to_the_one_port(stack, tmp_path):
    """deploy/nginx/podium.conf in front of the web server: HTTPS /v1 (plain and streamed) and a wss dashboard
    that sees the call live."""
    reason = nginx_unavailable()
    if reason:
        pytest.skip(reason)
    proxy = NginxProxy(tmp_path / "nginx", stack.port).start()
    tls = ssl.create_default_context(cafile=str(proxy.cert))
    body = {"model": "ci-fast", "messages": [{"role": "user", "content": "through the proxy"}]}

    async def scenario():
        async with websockets.connect(f"wss://127.0.0.1:{proxy.https_port}/ws/dashboard/", ssl=tls, open_timeout=10,
                                      additional_headers={"Cookie": stack.cookie()}, origin=proxy.url) as socket:
            await subscribe(socket, "overview")
            async with httpx.AsyncClient(verify=tls, headers=stack.key_headers, timeout=15) as client:
                response = await client.post(f"{proxy.url}/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                run_id = response.headers["x-podium-run-id"]
                await frames_until(socket, lambda f: any(call.get("run_id") == run_id for call in
                                                         (f.get("appends") or {}).get("calls", [])), timeout=15)
                async with client.stream("POST", f"{proxy.url}/v1/chat/completions",
                                         json={**body, "stream": True}) as streamed:
                    assert streamed.status_code == 200
                    assert streamed.headers["content-type"].startswith("text/event-stream")
                    chunks = [line async for line in streamed.aiter_lines() if line.startswith("data: ")]
            return chunks

    try:
        chunks = asyncio.run(scenario())
    finally:
        proxy.stop()
    assert len(chunks) >= 2 and chunks[-1] == "data: [DONE]"
    print(f"\n[TLS proxy] nginx with deploy/nginx/podium.conf: HTTPS /v1 200, streamed in {len(chunks)} events, "
          f"wss dashboard saw the call live")

"""Shared fixtures: personas, API keys, a live Podium on loopback, the fake upstream."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from django.conf import global_settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from orchestration import live
from orchestration.demo import seed_demo_registry
from orchestration.engine.circuit_breaker import circuit_breakers
from orchestration.engine.events import ListSink
from orchestration.gateway.writer import writer
from orchestration.models import APIKey, LLMModel, Provider
from orchestration.calibration.store import forget as forget_calibrations
from orchestration.registry import bump_version
from podium.fake_upstream import FakeUpstream
from tests.eventschema import EventChecker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PromptlyStoppedServer(uvicorn.Server):
    """uvicorn's Server without its fixed pauses on the way out (up to 0.2 s a stop; a suite stops a server some
    250 times): the main loop also wakes when told to stop, instead of at its next 0.1 s tick."""

    stop_requested: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # as uvicorn's: the Date header, max requests, should_exit
            counter = (counter + 1) % 864000
            try:
                await asyncio.wait_for(self.stop_requested.wait(), 0.1)
            except TimeoutError:
                pass

    async def shutdown(self, sockets=None) -> None:
        """uvicorn's shutdown less its fixed 0.1 s pause: connections and tasks are still waited for, then the
        application's lifespan shutdown (the writer's flush) runs."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await self._wait_tasks_to_complete()
        if not self.force_exit:
            await self.lifespan.shutdown()

    def request_stop(self) -> None:
        self.should_exit = True  # first: a main loop not yet running sees it at its first tick
        if self.stop_requested is not None:
            try:
                self.loop.call_soon_threadsafe(self.stop_requested.set)
            except RuntimeError:  # the loop has closed: the server stopped already
                pass


class LiveServer:
    """config.asgi served by uvicorn in a thread of the test process: same database, same channel layer."""

    def __init__(self, port: int | None = None) -> None:
        from config.asgi import application

        self.port = port or free_port()  # a fixed port lets a test restart the server where clients reconnect
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", ws="websockets-sansio",
                                # As `make run-uvicorn`: X-Forwarded-* are PODIUM_TRUSTED_PROXIES's to judge.
                                proxy_headers=False)
        self.server = PromptlyStoppedServer(config)
        self.thread = threading.Thread(target=self._run, name="live-podium", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.request_stop()
        self.thread.join(10)


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Passwords the test process sets are hashed with MD5: Django's default (PBKDF2, a million rounds) costs
    ~0.4 s per user created or login checked, minutes over the suite. The default hashers stay in the list, so
    a hash another process wrote still verifies here. Subprocesses (daphne, Celery, manage.py) keep Django's
    defaults: the users they authenticate are created in them (tests/production/seed.py), as in production."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher",
                                             *global_settings.PASSWORD_HASHERS]):
        yield


@pytest.fixture(scope="session", autouse=True)
def event_checker(request):
    """Every live event published in this process, and every event a ListSink collects, checked against its type."""
    checker = EventChecker()
    live.observers.append(checker)
    with pytest.MonkeyPatch.context() as patch:
        collect = ListSink.emit

        def emit(sink, event):
            checker(event)
            collect(sink, event)
        patch.setattr(ListSink, "emit", emit)
        request.config.stash[EVENTS_CHECKED] = checker
        yield checker
    live.observers.remove(checker)
    fail_for_bad_events(checker)  # published after the last test's own check


EVENTS_CHECKED = pytest.StashKey[EventChecker]()


def pytest_terminal_summary(terminalreporter, config):
    checker = config.stash.get(EVENTS_CHECKED, None)
    if checker is not None and checker.checked:
        types = ", ".join(f"{name} {count}" for name, count in sorted(checker.types.items(), key=str))
        terminalreporter.write_line(f"live events checked against their types: {checker.checked} ({types})")


@pytest.fixture(autouse=True)
def events_match_their_types(event_checker):
    """A test during which an event not matching its type was published fails, naming the event and the field."""
    yield
    fail_for_bad_events(event_checker)


def fail_for_bad_events(checker: EventChecker) -> None:
    problems = checker.drain()
    if problems:
        pytest.fail("live events that do not match their types (orchestration/engine/events.py):\n  "
                    + "\n  ".join(problems[:20]), pytrace=False)


@pytest.fixture(autouse=True)
def fresh_registry_cache():
    """Each test sees the registry and the calibrators its own database holds, and closed circuits (breakers are
    process-wide)."""
    bump_version()
    forget_calibrations()
    circuit_breakers.reset()
    yield
    writer.flush()
    # What could not be written now (the test's database is gone) must not land in the next test's.
    writer.discard_pending()


@pytest.fixture
def podium_server(transactional_db):
    server = LiveServer().start()
    yield server
    server.stop()
    writer.flush()


@pytest.fixture
def fake_upstream():
    upstream = FakeUpstream().start_in_thread()
    yield upstream
    upstream.stop()


@pytest.fixture
def demo_registry(db):
    seed_demo_registry()
    # Fast mocks with no injected failures, so tests are quick and deterministic.
    Provider.objects.filter(kind="mock").update(mock_options={"seed": 1, "latency_ms": 5, "failure_rate": 0})
    bump_version()


@pytest.fixture
def upstream_model(db, fake_upstream):
    provider = Provider.objects.create(name="fake", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                       base_url=fake_upstream.base_url, timeout_s=2)
    model = LLMModel.objects.create(provider=provider, alias="fake-gpt", upstream_name="fake-gpt-1",
                                    price_in_per_m="2.0", price_out_per_m="8.0", quality_prior=0.7)
    bump_version()
    return model


@pytest.fixture
def api_key(db) -> str:
    _, raw = APIKey.issue("test")
    return raw


@pytest.fixture
def watcher_key(db) -> str:
    """A key that may also watch live events (scope `events`), as podium_top --url needs."""
    _, raw = APIKey.issue("watcher", scopes=["chat", "runs", "runs:read", "events"])
    return raw


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-password-1")


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("operator", password="operator-password-1", is_staff=True)


@pytest.fixture
def reviewer(db):
    """A staff member in the `reviewers` group (created by a migration; re-created after a transactional flush)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name="reviewers")
    group.permissions.add(Permission.objects.get(codename="decide_reviewitem", content_type__app_label="orchestration"))
    user = get_user_model().objects.create_user("rita", password="reviewer-password-1", is_staff=True)
    user.groups.add(group)
    return user


@pytest.fixture
def outsider(db):
    return get_user_model().objects.create_user("outsider", password="outsider-password-1")


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, describe=None):
    """Poll until predicate() is truthy; returns its value or fails the test (with describe() when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(describe() if describe else f"condition not met within {timeout}s")


@pytest.fixture
def published(monkeypatch):
    """Every live event the server publishes, as the dashboard receives them."""
    events = []
    original = live.publish

    def capture(event):
        events.append(event)
        original(event)
    monkeypatch.setattr(live, "publish", capture)
    return events


"""Playwright driving Debian's Chromium against a live Podium in this process (same DB and channel layer)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import LiveServer, free_port
from tests.dashboardhelpers import publish_in_server

# Playwright's sync API keeps an event loop on this thread; the ORM calls our tests make here are still sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class RestartableServer:
    """A live server on a fixed port, so browsers that lose it can reconnect to its successor."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = LiveServer(self.port).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server = LiveServer(self.port).start()

    def publish(self, *events: dict) -> None:
        publish_in_server(*events)


@pytest.fixture
def browser_server(transactional_db):
    server = RestartableServer()
    yield server
    server.stop()


# Module scope, not session: Playwright's sync API keeps an event loop running on this thread until it
# stops, and later tests that call asyncio.run() must not find one.
@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make browser-deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def browser_context(chromium, request):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(10_000)
    yield context
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        for index, page in enumerate(context.pages):
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}-{index}.png"), full_page=True)
            except Exception:
                pass
    context.close()


@pytest.fixture
def dialogs(browser_context):
    """Every alert/confirm a page opens: a model output that executes would show up here."""
    opened = []

    def record(dialog):
        opened.append(dialog.message)
        dialog.dismiss()
    browser_context.on("page", lambda page: page.on("dialog", record))
    return opened


def log_in(context, server, username: str, password: str):
    page = context.new_page()
    page.goto(f"{server.url}/admin/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")
    return page

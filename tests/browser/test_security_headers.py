"""The content security policy in a real browser: every page works under it with no violation, the control
room's websocket still connects, and the API docs load with no network beyond this server."""
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from orchestration.models import LLMModel, Provider
from orchestration.workflows import save_workflow
from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser

# Init scripts come from the browser itself, so the policy does not stop this one from listening.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def watched(browser_context):
    """Every CSP violation a page reports, from its console and from its securitypolicyviolation events."""
    console = []
    browser_context.add_init_script(RECORD_VIOLATIONS)
    browser_context.on("console", lambda message: console.append(message.text)
                       if "Content Security Policy" in message.text else None)

    def violations(page) -> list[str]:
        return console + page.evaluate("window.__cspViolations")
    return violations


@pytest.fixture
def offline(browser_context, browser_server):
    """Every request to anywhere but the server is aborted (as with no network), and remembered."""
    aborted = []
    origin = urlparse(browser_server.url).netloc

    def route(route):
        if urlparse(route.request.url).netloc == origin:
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort("internetdisconnected")
    browser_context.route("**/*", route)
    return aborted


def test_swagger_ui_lists_the_operations_with_no_network_and_no_csp_violation(
        browser_server, browser_context, offline, watched, db):
    page = browser_context.new_page()
    page.goto(f"{browser_server.url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Podium API")
    expect(page.locator(".opblock-summary-path", has_text="/api/runs/").first).to_be_visible()
    assert page.locator(".opblock").count() > 10
    page.locator(".opblock-summary-path", has_text="/api/workflows/").first.click()  # the UI reacts
    expect(page.locator(".opblock.is-open").first).to_be_visible()
    assert offline == []  # nothing was even tried elsewhere (no CDN, no validator badge)
    assert watched(page) == []


def test_the_control_room_pages_work_under_the_policy_and_the_websocket_connects(
        browser_server, browser_context, watched, admin_user, demo_registry):
    page = log_in(browser_context, browser_server, "admin", "admin-password-1")
    for path in ("/", "/runs/", "/models/", "/reviews/", "/runs/00000000-0000-0000-0000-000000000001/"):
        page.goto(browser_server.url + path)
        expect(page.locator("#connection")).to_have_text("live")  # connect-src 'self' admits the websocket
        assert watched(page) == [], path
    page.goto(f"{browser_server.url}/")
    expect(page.locator("canvas").first).to_be_visible()  # the chart script (a static file) ran
    assert watched(page) == []


def test_the_admin_and_its_login_page_work_under_the_policy(
        browser_server, browser_context, watched, admin_user, demo_registry):
    save_workflow(slug="csp-check", spec={"root": {"type": "call", "id": "a", "model": "swift-mini",
                                                   "prompt": "{{input}}"}})
    login = browser_context.new_page()
    login.goto(f"{browser_server.url}/admin/login/")
    expect(login.get_by_label("Username")).to_be_visible()
    assert watched(login) == []
    page = log_in(browser_context, browser_server, "admin", "admin-password-1")
    provider = Provider.objects.first()
    model = LLMModel.objects.first()
    for path in ("/admin/", "/admin/orchestration/provider/", f"/admin/orchestration/provider/{provider.pk}/change/",
                 f"/admin/orchestration/llmmodel/{model.pk}/change/", "/admin/orchestration/apikey/add/",
                 "/admin/orchestration/workflow/", "/admin/orchestration/run/"):
        response = page.goto(browser_server.url + path)
        assert response.status == 200, path
        expect(page.locator("#content")).to_be_visible()
        assert watched(page) == [], path
    # The admin's own scripts run: the theme toggle (admin/js/theme.js) switches the theme.
    page.goto(f"{browser_server.url}/admin/")
    before = page.evaluate("document.documentElement.dataset.theme || 'auto'")
    page.locator("button.theme-toggle").first.click()
    assert page.evaluate("document.documentElement.dataset.theme") != before
    assert watched(page) == []

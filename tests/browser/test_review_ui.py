"""The review queue in a real browser: live queue, keyboard decisions, the edit diff, bulk approve, and the
paused run completing on the runs page."""
import pytest
from playwright.sync_api import expect

from orchestration.models import ReviewItem, Run, Team, TeamMembership
from orchestration.reviews.actions import Reviewer, claim_review
from orchestration.runs.actions import start_run
from orchestration.workflows import save_workflow
from tests.browser.conftest import log_in
from tests.conftest import wait_for
from tests import reviewhelpers

pytestmark = pytest.mark.browser
HOSTILE = "<img src=x onerror=alert(1)> capital of France?"


@pytest.fixture
def gated(demo_registry):
    save_workflow(slug="gated", spec={"root": {
        "type": "gate", "id": "check", "threshold": 0.9, "default_action": "reject",
        "node": {"type": "call", "id": "draft", "model": "swift-mini", "prompt": "{{input}}"}}})


@pytest.fixture(autouse=True)
def ops(db):
    """The team whose runs these reviewers review (the control room shows a person their teams only)."""
    return Team.objects.create(slug="ops", name="Ops")


@pytest.fixture
def reviewer(reviewer, ops):
    TeamMembership.objects.create(team=ops, user=reviewer, role=TeamMembership.Role.REVIEWER)
    return reviewer


def another_reviewer(username: str):
    user = reviewhelpers.another_reviewer(username)
    TeamMembership.objects.create(team=Team.objects.get(slug="ops"), user=user, role=TeamMembership.Role.REVIEWER)
    return user


def paused_run(text=HOSTILE) -> ReviewItem:
    run = start_run(workflow_slug="gated", input=text, team_id=Team.objects.get(slug="ops").id)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == "awaiting_review", timeout=20)
    return ReviewItem.objects.get(run=run)


def queue_row(page, item):
    return page.locator(f'#review-queue tr[data-review-id="{item.id}"]')


def test_approving_in_the_ui_completes_the_run_and_updates_every_open_queue(
        browser_server, browser_context, chromium, reviewer, gated, dialogs):
    first = paused_run()
    rita = log_in(browser_context, browser_server, "rita", "reviewer-password-1")
    rita.goto(f"{browser_server.url}/reviews/")
    expect(rita.locator("#connection")).to_have_text("live")
    expect(queue_row(rita, first)).to_contain_text("swift-mini")

    another_reviewer("bob")
    other = chromium.new_context()
    try:
        bob = log_in(other, browser_server, "bob", "bob-password-1")
        bob.goto(f"{browser_server.url}/reviews/")
        expect(bob.locator("#connection")).to_have_text("live")

        second = paused_run("what is 2 + 2?")  # arrives in both open queues without a reload
        for page in (rita, bob):
            expect(queue_row(page, second)).to_be_visible()
            expect(page.locator('#review-counts [data-field="pending"]')).to_have_text("2")

        rita.keyboard.press("j")  # the oldest item: the first run's
        expect(queue_row(rita, first)).to_have_class("current")
        rita.keyboard.press("Enter")
        rita.wait_for_url(f"**/reviews/{first.id}/")
        # Untrusted model output and request are shown as text, candidates with model, confidence and cost.
        candidate = rita.locator("article.candidate").first
        expect(candidate.locator(".output")).to_have_text(f"[swift-mini] {HOSTILE}")
        expect(candidate).to_contain_text("confidence 0.62")
        expect(rita.locator("#connection")).to_have_text("live")
        rita.keyboard.press("a")
        expect(rita.locator("#review-message")).to_contain_text("Approved")
        expect(rita.locator('[data-field="released"]')).to_have_text(f"[swift-mini] {HOSTILE}")
        expect(queue_row(bob, first)).to_have_count(0)  # decided: gone from the other reviewer's queue at once
        expect(queue_row(bob, second)).to_be_visible()
        expect(rita.locator('[data-field="run-status"]')).to_have_text("succeeded")

        rita.goto(f"{browser_server.url}/runs/")
        row = rita.locator(f'#runs tbody tr[data-run-id="{first.run_id}"]')
        expect(row.locator('[data-field="status"]')).to_have_text("✔ succeeded")
        assert Run.objects.get(pk=first.run_id).output == f"[swift-mini] {HOSTILE}"
    finally:
        other.close()
    assert dialogs == []


def test_editing_shows_a_diff_and_releases_the_edited_text(browser_server, browser_context, reviewer, gated, dialogs):
    item = paused_run("capital of France?")
    page = log_in(browser_context, browser_server, "rita", "reviewer-password-1")
    page.goto(f"{browser_server.url}/reviews/{item.id}/")
    expect(page.locator("#connection")).to_have_text("live")
    page.keyboard.press("e")
    editor = page.locator("#edit-text")
    expect(editor).to_be_focused()
    editor.fill("[swift-mini] Paris <b>is</b> the capital")
    diff = page.locator("#edit-diff")
    expect(diff.locator("del")).to_have_text("capital of France?")
    expect(diff.locator("ins")).to_have_text("Paris <b>is</b> the capital")  # as text, not markup
    expect(diff.locator("b")).to_have_count(0)
    page.locator("#comment").fill("answer, do not echo")
    editor.press("Control+Enter")
    expect(page.locator("#review-message")).to_contain_text("Edited")
    wait_for(lambda: Run.objects.get(pk=item.run_id).status == "succeeded", timeout=20)
    assert Run.objects.get(pk=item.run_id).output == "[swift-mini] Paris <b>is</b> the capital"
    assert ReviewItem.objects.get(pk=item.pk).comment == "answer, do not echo"
    assert dialogs == []


def test_an_item_someone_else_claimed_says_who_holds_it(browser_server, browser_context, reviewer, gated):
    item = paused_run("capital of France?")
    page = log_in(browser_context, browser_server, "rita", "reviewer-password-1")
    page.goto(f"{browser_server.url}/reviews/{item.id}/")
    expect(page.locator("#connection")).to_have_text("live")
    claim_review(item_id=item.id, reviewer=Reviewer(user=another_reviewer("bob")))
    expect(page.locator('[data-field="assignee"]')).to_have_text("bob")  # live, no reload
    expect(page.locator("#approve")).to_be_disabled()
    page.locator("#claim").click()
    expect(page.locator("#review-message")).to_have_text("Claimed by bob.")


def test_bulk_approve_from_the_queue(browser_server, browser_context, reviewer, gated):
    items = [paused_run(f"question {n}") for n in range(3)]
    page = log_in(browser_context, browser_server, "rita", "reviewer-password-1")
    page.goto(f"{browser_server.url}/reviews/")
    for item in items:
        expect(queue_row(page, item)).to_be_visible()
    queue_row(page, items[0]).locator("input.select").check()
    page.keyboard.press("j")
    page.keyboard.press("j")  # the second item
    page.keyboard.press("x")
    expect(page.locator("#bulk-approve")).to_have_text("Approve selected (2)")
    page.locator("#bulk-approve").click()
    expect(page.locator("#queue-message")).to_have_text("Approved 2.")
    expect(queue_row(page, items[0])).to_have_count(0)
    expect(queue_row(page, items[1])).to_have_count(0)
    expect(queue_row(page, items[2])).to_be_visible()
    for item in items[:2]:
        wait_for(lambda: Run.objects.get(pk=item.run_id).status == "succeeded", timeout=20)
    assert Run.objects.get(pk=items[2].run_id).status == "awaiting_review"

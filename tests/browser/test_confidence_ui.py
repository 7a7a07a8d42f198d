"""Confidence in the control room: the models page's reliability diagrams and the review page's "how sure,
measured how". The page tests drive Debian's Chromium; the context tests need no browser."""
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from orchestration.models import Calibrator, ConfidenceLabel, LLMModel
from tests.browser.conftest import log_in
from tests.reviewhelpers import open_item

# Ten bins of a calibrator fitted on 120 answers: three empty (nothing was predicted there), seven drawn.
BINS = [{"lo": i / 10, "hi": (i + 1) / 10, "predicted": None, "observed": None, "count": 0} for i in range(3)] + [
    {"lo": i / 10, "hi": (i + 1) / 10, "predicted": i / 10 + 0.05, "observed": observed, "count": count}
    for i, observed, count in ((3, 0.3, 6), (4, 0.5, 10), (5, 0.52, 14), (6, 0.7, 20), (7, 0.71, 25), (8, 0.86, 30),
                               (9, 0.97, 15))]
DRAWN_BINS = sum(1 for b in BINS if b["count"])
HOSTILE_LABEL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def calibrated(demo_registry):
    """swift-mini (mock: logprobs) calibrated; atlas-pro waiting on 7 reviews; titan-ultra on its prior."""
    Calibrator.objects.create(model_alias="swift-mini", method="logprobs", mapping={"kind": "platt", "a": 1.2, "b": 0.1},
                              samples=120, ece_raw=0.142, ece=0.031, brier_raw=0.21, brier=0.17, bins=BINS,
                              bins_raw=BINS, fitted_at=timezone.now())
    for index in range(7):
        ConfidenceLabel.objects.create(model_alias="atlas-pro", method="logprobs", raw=0.5 + index / 20,
                                       correct=index % 2 == 0)
    LLMModel.objects.filter(alias="titan-ultra").update(confidence_method="prior")


def card(page, alias):
    return page.locator(f'.calibration-card[data-model="{alias}"]')


@pytest.mark.browser
def test_the_models_page_draws_a_reliability_diagram_for_a_calibrated_model(
        browser_server, browser_context, admin_user, calibrated, dialogs):
    page = log_in(browser_context, browser_server, "admin", "admin-password-1")
    page.goto(f"{browser_server.url}/models/")

    swift = card(page, "swift-mini")
    expect(swift.locator('[data-field="method"]')).to_have_text("logprobs")
    expect(swift.locator('[data-field="samples"]')).to_have_text("120")
    expect(swift.locator('[data-field="ece"]')).to_have_text("0.142 raw → 0.031 calibrated")
    diagram = swift.locator(".reliability-diagram svg")
    expect(diagram.locator("circle.bin")).to_have_count(DRAWN_BINS)  # one dot per non-empty bin
    expect(diagram.locator("line.diagonal")).to_have_count(1)  # perfect calibration, to compare against
    box = diagram.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    # The dots sit where the bins say: the highest-predicted bin is right of and above the lowest drawn one.
    dots = diagram.locator("circle.bin")
    low, high = dots.first.bounding_box(), dots.last.bounding_box()
    assert high["x"] > low["x"] + 50 and high["y"] < low["y"] - 50
    assert "observed 0.97" in dots.last.locator("title").text_content()

    atlas = card(page, "atlas-pro")
    expect(atlas.locator(".not-calibrated")).to_have_text("not calibrated yet: 7 reviewed answers")
    expect(atlas.locator("svg")).to_have_count(0)
    expect(atlas.locator('[data-field="ece"]')).to_have_text("–")

    titan = card(page, "titan-ultra")
    expect(titan.locator('[data-field="method"]')).to_have_text("prior — not measured")
    expect(titan.locator("svg")).to_have_count(0)
    assert dialogs == []


@pytest.mark.browser
def test_the_review_page_says_how_sure_and_the_gates_rule(browser_server, browser_context, admin_user, demo_registry,
                                                         dialogs):
    candidates = [
        {"model": "swift-mini", "output": "Paris.", "confidence": 0.93, "cost_usd": 0.0001,
         "confidence_method": "logprobs", "confidence_raw": 0.88, "calibrated": True, "calibration_labels": 240,
         "how_sure": "93% likely right, measured by the model's token probabilities (raw 0.88), calibrated on 240 "
                     "reviewed answers"},
        {"model": "atlas-pro", "output": "Lyon.", "confidence": 0.7, "cost_usd": 0.002},  # an item from before
    ]
    item = open_item(candidates=candidates, request={
        "input": "capital of France?", "max_error_rate": 0.02, "threshold": None, "confidence": 0.93,
        "why": f"calibrated P(wrong) 0.070 > target 0.02 {HOSTILE_LABEL}"})
    page = log_in(browser_context, browser_server, "admin", "admin-password-1")  # team-less items: a superuser
    page.goto(f"{browser_server.url}/reviews/{item.id}/")

    expect(page.locator('[data-field="gate-rule"]')).to_have_text("target: at most 2 % wrong")
    expect(page.locator('[data-field="why"]')).to_have_text(f"calibrated P(wrong) 0.070 > target 0.02 {HOSTILE_LABEL}")
    swift, atlas = page.locator("article.candidate .how-sure").all()
    expect(swift).to_have_text(candidates[0]["how_sure"])
    expect(swift).to_have_attribute("data-method", "logprobs")
    expect(atlas).to_contain_text("Not measured: the model's prior")
    assert dialogs == []


# --- what the views hand the templates, without a browser ----------------------------------------------------

def test_the_models_view_passes_each_models_calibration_and_only_calibrated_bins_to_the_script(
        client, admin_user, calibrated):
    client.force_login(admin_user)
    response = client.get("/models/")
    assert response.status_code == 200
    cards = {row["alias"]: row["calibration"] for row in response.context["models"]}
    assert (cards["swift-mini"]["calibrated"], cards["swift-mini"]["reviewed"]) == (True, 120)
    assert (cards["atlas-pro"]["calibrated"], cards["atlas-pro"]["reviewed"]) == (False, 7)
    assert (cards["titan-ultra"]["method"], cards["titan-ultra"]["measured"]) == ("prior", False)
    assert response.context["reliability_diagrams"] == {"swift-mini": BINS}
    assert b'id="reliability-data"' in response.content  # the bins travel as JSON, not as an inline script


def test_a_gate_with_a_threshold_shows_it_and_old_candidates_get_a_sentence(client, admin_user, demo_registry):
    item = open_item(request={"input": "x", "threshold": 0.8, "why": "confidence 0.55 < threshold 0.8"},
                     candidates=[{"model": "swift-mini", "output": "y", "confidence": 0.55, "cost_usd": 0,
                                  "confidence_method": "self_consistency", "confidence_raw": 0.55}])
    client.force_login(admin_user)
    response = client.get(f"/reviews/{item.id}/")
    assert response.context["gate_rule"] == "threshold 0.80"
    assert response.context["candidates"][0]["how_sure"] == (
        "Measured by agreement among samples: raw 0.55, not yet calibrated (too few reviewed answers)")
    assert response.content.decode().count("confidence 0.55 &lt; threshold 0.8") == 1  # once, in the summary

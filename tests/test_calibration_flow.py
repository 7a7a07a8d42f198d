"""End to end: a gated workflow on an OpenAI-compatible upstream (the fake, on loopback) escalates the
answers whose measured confidence is low and passes the sure ones, through /api/runs/ on a live server;
reviewers' decisions become labels; the periodic refit turns them into a calibrator that
/api/models/{alias}/calibration/ reports, and a target-risk gate then decides on calibrated confidence.
"""
from __future__ import annotations

import httpx
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from orchestration.calibration.fitting import recalibrate
from orchestration.calibration.store import forget
from orchestration.models import APIKey, Calibrator, ConfidenceLabel, ReviewItem, Run, Step
from orchestration.workflows import save_workflow
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

SURE, UNSURE, HESITANT = "[confident]", "[diffuse]", "[logprob=-0.3]"  # per-token p 0.98, 0.20, 0.74


def api(server, key, method, path, **kwargs):
    return httpx.request(method, f"{server.url}{path}", headers={"authorization": f"Bearer {key}"}, timeout=15,
                         **kwargs)


def start(server, key, workflow, text) -> str:
    response = api(server, key, "POST", "/api/runs/", json={"workflow": workflow, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def status_of(run_id) -> str:
    wait_for(lambda: Run.objects.get(pk=run_id).status not in ("queued", "running"), timeout=30)
    return Run.objects.get(pk=run_id).status


def gated(slug: str, **rule) -> None:
    save_workflow(slug=slug, spec={"root": {
        "type": "gate", "id": "check", "on_reject": "fail", **rule,
        "node": {"type": "call", "id": "draft", "model": "fake-gpt", "prompt": "{{input}}"}}})


def test_a_gate_on_measured_confidence_learns_from_its_reviews(podium_server, upstream_model, reviewer):
    _, runner = APIKey.issue("runner", scopes=["runs"])
    _, reader = APIKey.issue("reader", scopes=["runs:read"])
    _, chat_only = APIKey.issue("chat", scopes=["chat"])
    gated("answers", threshold=0.9)

    texts = [f"{SURE} q{i}" for i in range(3)] + [f"{HESITANT} q{i}" for i in range(4)] + \
            [f"{UNSURE} q{i}" for i in range(4)]
    runs = {text: start(podium_server, runner, "answers", text) for text in texts}
    outcome = {text: status_of(run_id) for text, run_id in runs.items()}
    assert {outcome[t] for t in texts[:3]} == {"succeeded"}
    assert {outcome[t] for t in texts[3:]} == {"awaiting_review"}
    step = Step.objects.get(run_id=runs[texts[0]], key="draft")
    assert step.confidence_method == "logprobs" and step.confidence > 0.95

    # The review shows how sure and how that was measured; reviewers approve the hesitant answers (they were
    # right) and reject the diffuse ones, through the review API.
    items = {text: ReviewItem.objects.get(run_id=runs[text]) for text in texts[3:]}
    first = items[texts[3]]
    assert first.candidates[0]["confidence_method"] == "logprobs"
    assert first.request["why"].startswith("confidence 0.74 < threshold 0.9")
    assert "token probabilities" in first.candidates[0]["how_sure"]
    reviewer_client = APIClient()
    reviewer_client.force_login(reviewer)
    for text, item in items.items():
        action = "approve" if text.startswith(HESITANT) else "reject"
        assert reviewer_client.post(f"/api/reviews/{item.id}/{action}/", {}, format="json").status_code == 200
    labels = ConfidenceLabel.objects.order_by("raw")
    assert labels.count() == 8 and {label.scope for label in labels} == {"answers/draft"}
    assert [label.correct for label in labels] == [False] * 4 + [True] * 4

    # Before the refit: the API says there is nothing fitted yet, but counts the labels.
    report = api(podium_server, reader, "GET", "/api/models/fake-gpt/calibration/").json()
    assert report["method"] == "logprobs" and report["labels"] == 8 and report["samples"] == 0
    assert report["calibrated"] is False and report["bins"] == []

    with override_settings(PODIUM_CALIBRATION_MIN_LABELS=6):
        assert recalibrate() == 2  # the model as a whole, and the step "answers/draft" (8 labels each)
    report = api(podium_server, reader, "GET", "/api/models/fake-gpt/calibration/").json()
    assert report["samples"] == 8 and report["calibrated"] is True and report["mapping"] == "platt"
    assert sum(b["count"] for b in report["bins"]) == 8 and len(report["bins"]) == 10
    assert {b["lo"] for b in report["bins"]} >= {0.0, 0.9} and report["ece_raw"] is not None
    hesitant_bin = next(b for b in report["bins_raw"] if b["lo"] == pytest.approx(0.7))
    assert hesitant_bin["count"] == 4 and hesitant_bin["observed"] == 1.0
    step_report = api(podium_server, reader, "GET",
                      "/api/models/fake-gpt/calibration/?scope=answers/draft").json()
    assert step_report["scope"] == "answers/draft" and step_report["samples"] == 8
    assert api(podium_server, chat_only, "GET", "/api/models/fake-gpt/calibration/").status_code == 403
    assert api(podium_server, reader, "GET", "/api/models/nope/calibration/").status_code == 404
    assert api(podium_server, reader, "GET", "/api/models/fake-gpt/calibration/?method=vibes").status_code == 400
    assert Calibrator.objects.filter(model_alias="fake-gpt").count() == 2

    # A target-risk gate now passes what reviews taught is right and holds what they taught is wrong.
    forget()
    gated("answers", max_error_rate=0.1)
    sure, unsure = start(podium_server, runner, "answers", f"{HESITANT} again"), \
        start(podium_server, runner, "answers", f"{UNSURE} again")
    assert status_of(sure) == "succeeded" and status_of(unsure) == "awaiting_review"
    passed = Step.objects.get(run_id=sure, key="draft")
    assert passed.confidence_raw == pytest.approx(0.7408, abs=1e-3) and passed.confidence > 0.9
    assert passed.attributes["calibration"]["fitted_for"] == "answers/draft"
    held = ReviewItem.objects.get(run_id=unsure)
    assert held.request["calibrated"] is True and "calibrated P(wrong)" in held.request["why"]


def test_an_empty_calibration_snapshot_is_not_reloaded_for_every_call(db, monkeypatch):
    """An empty snapshot is falsy; the hot path must still take it from memory (it once reloaded per request)."""
    import asyncio

    from orchestration.calibration import store

    loads = []
    real_load = store.load_calibrations
    monkeypatch.setattr(store, "load_calibrations", lambda: loads.append(1) or real_load())
    forget()
    for _ in range(5):
        assert not asyncio.run(store.current_calibrations())
    assert len(loads) == 1

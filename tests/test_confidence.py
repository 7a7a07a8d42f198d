"""Measured confidence on workflow steps, against real upstream dialects on loopback and the built-in mock.

The fake upstream (podium/fake_upstream.py) returns token logprobs when asked: about 0.98 per token for a
prompt marked [confident], 0.20 for [diffuse]. Steps record their confidence, its method and raw signal.
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from orchestration.engine.calibration import from_rows
from orchestration.engine.confidence import ConfidenceSpec, agreement, parse_verdict, VerdictUnreadable
from orchestration.engine.events import ListSink
from orchestration.engine.executor import AwaitingReview, RunContext, StepFailed
from orchestration.engine.registry import Registry
from orchestration.engine.spec import SpecInvalid, compile_spec
from orchestration.engine.types import ModelSpec, ProviderSpec
from orchestration.engine.workflow import run_workflow
from tests.enginehelpers import fake_model, quick_engine, run

pytestmark = pytest.mark.timeout(60)


def mock(alias: str, *, method: str = "auto", quality: float = 0.6, **options) -> ModelSpec:
    provider = ProviderSpec(name=f"mock-{alias}", kind="mock", base_url="", is_local=True,
                            options={"latency_ms": 1, **options})
    return ModelSpec(alias=alias, upstream_name=alias, provider=provider, quality_prior=quality,
                     confidence=ConfidenceSpec(method=method))


def execute(spec: dict, *models: ModelSpec, input="hello", calibrations=None, decisions=None, workflow="wf"):
    sink = ListSink()
    ctx = RunContext(run_id="run-1", registry=Registry(models={m.alias: m for m in models}), sink=sink,
                     calibrations=calibrations, meta={"workflow": workflow, "decisions": decisions or {}})

    async def body():
        return await run_workflow(quick_engine(retries=0), ctx, spec, input)
    result = run(body)
    return result, {e["key"]: e for e in sink.events if e["type"] == "step.finished"}


def call(model: str, **fields) -> dict:
    return {"root": {"type": "call", "id": "draft", "model": model, "prompt": "{{input}}", **fields}}


def gate(node: dict, **rule) -> dict:
    return {"root": {"type": "gate", "id": "check", "on_reject": "fail", **rule, "node": node}}


# --- logprobs, OpenAI-compatible and Ollama, streamed and not ----------------------------------------------

@pytest.mark.parametrize("kind", ["openai_compatible", "ollama"])
def test_a_step_s_confidence_follows_the_upstream_s_logprobs(fake_upstream, kind):
    model = fake_model(fake_upstream, "up", kind=kind)
    sure, sure_steps = execute(call("up"), model, input="[confident] capital of France?")
    unsure, unsure_steps = execute(call("up"), model, input="[diffuse] capital of Atlantis?")
    assert sure.confidence > 0.95 and unsure.confidence < 0.3
    for steps, result in ((sure_steps, sure), (unsure_steps, unsure)):
        step = steps["draft"]
        assert step["confidence_method"] == "logprobs" and step["confidence"] == pytest.approx(result.confidence)
        assert step["confidence_raw"] == pytest.approx(result.confidence)  # no calibrator yet: raw as is
        assert step["attributes"]["confidence_signals"]["statistic"] == "geometric_mean_token_probability"
    assert unsure_steps["draft"]["attributes"]["confidence_signals"]["min_token_prob"] == pytest.approx(
        math.exp(-1.6), abs=1e-4)
    # Podium asked for them itself, and the answer does not carry them to the client.
    bodies = [r["body"] for r in fake_upstream.requests]
    assert all(body.get("logprobs") is True for body in bodies)
    assert "logprobs" not in str((sure.raw or {}).get("choices", ""))


@pytest.mark.parametrize("kind", ["openai_compatible", "ollama"])
def test_a_streamed_final_step_is_measured_from_its_logprobs_too(fake_upstream, kind):
    model = fake_model(fake_upstream, "up", kind=kind)
    for text, high in (("[confident] name a colour", True), ("[diffuse] name a colour", False)):
        deltas = []
        sink = ListSink()
        ctx = RunContext(run_id="run-s", registry=Registry(models={"up": model}), sink=sink, meta={"workflow": "wf"})

        async def collect(delta):
            deltas.append(delta)

        async def body():
            return await run_workflow(quick_engine(retries=0), ctx, call("up"), text, final_stream=collect)
        result = run(body)
        step = next(e for e in sink.events if e["type"] == "step.finished" and e["key"] == "draft")
        assert step["attributes"]["stream"] is True and step["confidence_method"] == "logprobs"
        assert (step["confidence"] > 0.95) if high else (step["confidence"] < 0.3)
        assert result.confidence == pytest.approx(step["confidence"])
        assert deltas and all(delta.logprobs is None for delta in deltas)  # not the client's: stripped


def test_a_model_whose_method_is_prior_is_not_asked_for_logprobs(fake_upstream):
    model = dataclasses.replace(fake_model(fake_upstream, "up", quality_prior=0.66),
                                confidence=ConfidenceSpec(method="prior"))
    result, steps = execute(call("up"), model, input="[confident] hi")
    assert result.confidence == 0.66 and steps["draft"]["confidence_method"] == "prior"
    assert "logprobs" not in fake_upstream.requests[-1]["body"]


# --- self-consistency -------------------------------------------------------------------------------------

def test_self_consistency_samples_in_parallel_and_keeps_the_majority_answer():
    sampler = mock("sampler", reply=["Paris", "Paris.", "paris", "Lyon", "Marseille"], seed=3)
    result, steps = execute(call("sampler", confidence={"method": "self_consistency", "samples": 5,
                                                        "temperature": 0.9}), sampler)
    samples = [steps[f"draft/sample@{i}"] for i in range(5)]
    answers = [s["output"] for s in samples]
    assert len(set(answers)) > 1, "the mock answers differently per sample"
    votes = max(sum(1 for a in answers if a.lower().strip(".") == word) for word in ("paris", "lyon", "marseille"))
    measured = steps["draft"]
    assert measured["node_type"] == "measure" and measured["confidence_method"] == "self_consistency"
    assert measured["confidence_raw"] == pytest.approx(votes / 5)
    assert result.confidence == pytest.approx(votes / 5)
    assert measured["attributes"]["confidence_signals"]["samples"] == 5
    majority = max(("paris", "lyon", "marseille"),
                   key=lambda w: sum(1 for a in answers if a.lower().strip(".") == w))
    assert result.output.lower().strip(".") == majority
    assert all(s["confidence_method"] == "prior" for s in samples)  # each sample alone measures nothing
    assert result.cost_usd == pytest.approx(sum(s["cost_usd"] for s in samples))


def test_agreement_counts_paraphrases_as_the_same_answer():
    index, share, signals = agreement(["The capital is Paris", "Paris is the capital", "It is Rome"])
    assert index in (0, 1) and share == pytest.approx(2 / 3) and signals["distinct_answers"] == 3
    assert agreement(["a", "b", "c", "d"])[1] == pytest.approx(0.25)


# --- verifier ---------------------------------------------------------------------------------------------

def test_a_verifier_s_score_is_the_step_s_confidence():
    worker = mock("worker", reply="Paris")
    judge = mock("judge", reply="Score: 0.85")
    result, steps = execute(call("worker", confidence={"method": "verifier", "verifier": "judge"}), worker, judge)
    assert result.output == "Paris" and result.confidence == pytest.approx(0.85)
    assert steps["draft"]["confidence_method"] == "verifier" and steps["draft"]["confidence_raw"] == 0.85
    verify = steps["draft/verify"]
    assert "Paris" in verify["prompt"][0]["content"] and "hello" in verify["prompt"][0]["content"]
    assert steps["draft/answer"]["output"] == "Paris"


def test_a_malformed_verdict_is_recorded_and_the_answer_keeps_its_prior():
    worker = mock("worker", reply="Paris", quality=0.55)
    judge = mock("judge", reply="I would say it looks fine to me")
    result, steps = execute(call("worker", confidence={"method": "verifier", "verifier": "judge"}), worker, judge)
    assert result.output == "Paris" and result.confidence == 0.55
    assert steps["draft"]["confidence_method"] == "prior"
    assert "no score between 0 and 1" in steps["draft"]["attributes"]["confidence_error"]


@pytest.mark.parametrize("text, score", [("0.9", 0.9), ("Score: 85%", 0.85), ("8/10", 0.8), (".3", 0.3),
                                         ("confidence 1", 1.0), ("I rate it 7 out of 10 -> 0.7", 0.7)])
def test_verdicts_are_read_robustly(text, score):
    assert parse_verdict(text) == pytest.approx(score)


@pytest.mark.parametrize("text", ["", "looks good", "42", "-0.5 is not allowed", "12/7"])
def test_unreadable_verdicts_are_refused(text):
    with pytest.raises(VerdictUnreadable):
        parse_verdict(text)


# --- Anthropic: no logprobs, so a measured method ----------------------------------------------------------

def test_an_anthropic_step_under_a_gate_is_measured_by_self_consistency(fake_upstream):
    claude = fake_model(fake_upstream, "claude", kind="anthropic", quality_prior=0.9)
    result, steps = execute(gate({"type": "call", "id": "draft", "model": "claude", "prompt": "{{input}}"},
                                 threshold=0.5), claude, input="capital of France?")
    assert steps["draft"]["confidence_method"] == "self_consistency"
    assert len([key for key in steps if key.startswith("draft/sample@")]) == 3
    assert result.confidence == 1.0  # the fake answers the same every time: full agreement
    # Outside a gate or cascade, auto does not pay for samples: the prior, shown as such.
    _, plain = execute(call("claude"), claude, input="capital of France?")
    assert plain["draft"]["confidence_method"] == "prior" and plain["draft"]["confidence"] == 0.9


# --- calibration, gates and cascades -----------------------------------------------------------------------

def calibrations_for(alias: str, method: str = "logprobs", scope: str = "",
                     x=(0.0, 0.5, 0.9, 1.0), y=(0.05, 0.1, 0.99, 0.995)):
    """A calibrator that says (by default): a raw signal of 0.5 is right 10 % of the time, of 0.9 right 99 %."""
    return from_rows([{"model_alias": alias, "scope": scope, "method": method, "samples": 400, "ece_raw": 0.2,
                       "ece": 0.02, "brier_raw": 0.2, "brier": 0.1,
                       "mapping": {"kind": "isotonic", "x": list(x), "y": list(y)}}])


def test_a_target_risk_gate_sends_every_answer_to_a_person_until_it_is_calibrated(fake_upstream):
    model = fake_model(fake_upstream, "up")
    node = {"type": "call", "id": "draft", "model": "up", "prompt": "{{input}}"}
    with pytest.raises(AwaitingReview) as raised:
        execute(gate(node, max_error_rate=0.02), model, input="[confident] hi")
    request = raised.value.request
    assert request["max_error_rate"] == 0.02 and request["confidence_method"] == "logprobs"
    assert request["calibrated"] is False and "no calibrated probability" in request["why"]


def test_a_target_risk_gate_passes_calibrated_sure_answers_and_holds_unsure_ones(fake_upstream):
    model = fake_model(fake_upstream, "up")
    node = {"type": "call", "id": "draft", "model": "up", "prompt": "{{input}}"}
    calibrations = calibrations_for("up", scope="wf/draft")
    result, steps = execute(gate(node, max_error_rate=0.02), model, input="[confident] hi",
                            calibrations=calibrations)
    assert steps["draft"]["confidence_raw"] > 0.95 and steps["draft"]["confidence"] > 0.98
    assert steps["draft"]["attributes"]["calibration"] == {
        "labels": 400, "fitted_for": "wf/draft", "lower_bound": pytest.approx(steps["draft"]["confidence"])}
    assert "P(wrong)" in steps["check"]["attributes"]["passed"] and result.output.startswith("echo:")
    with pytest.raises(AwaitingReview) as raised:
        execute(gate(node, max_error_rate=0.02), model, input="[logprob=-0.4] hi", calibrations=calibrations)
    request = raised.value.request
    raw = math.exp(-0.4)
    assert request["confidence_raw"] == pytest.approx(raw, abs=1e-4) and request["calibrated"] is True
    assert 1 - request["confidence"] > 0.02 and "calibrated P(wrong)" in request["why"]


def test_a_target_risk_gate_decides_on_the_calibrator_s_lower_bound_not_its_estimate(fake_upstream):
    model = fake_model(fake_upstream, "up")
    node = {"type": "call", "id": "draft", "model": "up", "prompt": "{{input}}"}
    hopeful = from_rows([{"model_alias": "up", "scope": "", "method": "logprobs", "samples": 60, "ece_raw": 0.1,
                          "ece": 0.05, "brier_raw": 0.2, "brier": 0.1,
                          "mapping": {"kind": "isotonic", "x": [0.0, 0.9, 1.0], "y": [0.1, 0.99, 0.99],
                                      "lower": {"x": [0.0, 1.0], "y": [0.05, 0.9], "level": 0.95}}}])
    with pytest.raises(AwaitingReview) as raised:
        execute(gate(node, max_error_rate=0.02), model, input="[confident] hi", calibrations=hopeful)
    request = raised.value.request
    assert request["confidence"] == pytest.approx(0.99) and request["confidence_low"] < 0.9
    assert "(95 % bound) > target 0.02" in request["why"]
    assert "likely right, measured by the model's token probabilities" in request["how_sure"]


def test_a_cascade_climbs_on_calibrated_confidence(fake_upstream):
    small, large = fake_model(fake_upstream, "small"), fake_model(fake_upstream, "large")
    spec = {"root": {"type": "cascade", "id": "tiers", "tiers": ["small", "large"], "threshold": 0.7,
                     "prompt": "{{input}}"}}
    # Raw 0.78 (logprob -0.25) clears 0.7; but reviews taught that small's 0.78 is right only ~30 % of the time.
    _, uncalibrated = execute(spec, small, large, input="hi")
    assert "tiers/tier@1" not in uncalibrated
    overconfident = calibrations_for("small", x=(0.0, 0.85, 0.95, 1.0), y=(0.05, 0.3, 0.95, 0.99))
    _, calibrated = execute(spec, small, large, input="hi", calibrations=overconfident)
    assert calibrated["tiers/tier@0"]["confidence"] < 0.7 < calibrated["tiers/tier@0"]["confidence_raw"]
    assert "tiers/tier@1" in calibrated
    tried = calibrated["tiers"]["attributes"]["tiers_tried"]
    assert tried[0]["outcome"] == "escalated" and tried[0]["calibrated"] is True


def test_an_expired_escalate_review_with_nowhere_to_escalate_asks_again_instead_of_failing():
    draft = mock("draft-model", confidence=0.3)
    spec = gate({"type": "call", "id": "draft", "model": "draft-model", "prompt": "{{input}}"}, threshold=0.8,
                default_action="escalate")
    with pytest.raises(AwaitingReview) as raised:
        execute(spec, draft, decisions={"check": {"action": "reject", "escalate": True, "reviewer": "system"}})
    assert raised.value.gate_key == "check#2"
    # A plain rejection still fails, as "on_reject": "fail" says.
    with pytest.raises(StepFailed, match="rejected by ann"):
        execute(spec, draft, decisions={"check": {"action": "reject", "reviewer": "ann"}})


def test_spec_checks_the_new_fields():
    with pytest.raises(SpecInvalid) as raised:
        compile_spec(gate({"type": "call", "model": "m", "confidence": {"method": "vibes", "samples": 99}},
                          threshold=0.5, max_error_rate=1.5))
    errors = "; ".join(raised.value.errors)
    assert "give either 'threshold' or 'max_error_rate'" in errors
    assert "max_error_rate: must be a number between 0 and 1" in errors
    assert "confidence.method: must be one of" in errors and "confidence.samples" in errors
    compiled = compile_spec(gate({"type": "call", "model": "m"}, max_error_rate=0.02))
    assert compiled["root"]["max_error_rate"] == 0.02 and compiled["root"]["threshold"] is None

"""The workflow engine alone (no database): every node type, combine mode and strategy over mock providers."""
from __future__ import annotations

import asyncio
import time

import pytest

from orchestration.engine.circuit_breaker import CircuitBreakers
from orchestration.engine.events import ListSink
from orchestration.engine.executor import (AwaitingReview, BudgetExceeded, DeadlineExceeded, Engine, RunContext,
                                           StepFailed)
from orchestration.engine.nodes import RunCancelled
from orchestration.engine.registry import Registry
from orchestration.engine.resilience import RetryPolicy
from orchestration.engine.types import ModelSpec, ProviderSpec
from orchestration.engine.workflow import run_workflow
from orchestration.providers.base import adapter_for

pytestmark = pytest.mark.timeout(60)


def provider(name: str, **options) -> ProviderSpec:
    return ProviderSpec(name=name, kind="mock", base_url="", is_local=True, options={"latency_ms": 1, **options})


def model(alias: str, prov: ProviderSpec, *, tier="medium", quality=0.7, price=1.0) -> ModelSpec:
    return ModelSpec(alias=alias, upstream_name=alias, provider=prov, tier=tier, quality_prior=quality,
                     price_in_per_m=price, price_out_per_m=price * 4)


def registry(*models: ModelSpec, routes: dict | None = None) -> Registry:
    return Registry(models={m.alias: m for m in models}, routes=routes or {})


class CountingAdapters:
    """The real adapters, counting calls per model alias."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def __call__(self, kind):
        inner = adapter_for(kind)
        calls = self.calls

        class Counting:
            async def chat(self, spec, request):
                calls[spec.alias] = calls.get(spec.alias, 0) + 1
                return await inner.chat(spec, request)
        return Counting()


def engine(adapters=None) -> Engine:
    return Engine(adapters or adapter_for, retry=RetryPolicy(max_retries=0), breakers=CircuitBreakers())


def run(spec, reg, input="hello", *, eng=None, **ctx_fields):
    sink = ListSink()
    ctx = RunContext(run_id="run-1", registry=reg, sink=sink, **ctx_fields)
    result = asyncio.run(run_workflow(eng or engine(), ctx, spec, input))
    return result, finished(sink)


def finished(sink: ListSink) -> dict[str, dict]:
    return {e["key"]: e for e in sink.events if e["type"] == "step.finished"}


# Three tiers whose replies and confidences are fixed per model.
CHEAP = provider("cheap", confidence=0.4)
MID = provider("mid", confidence=0.8)
TOP = provider("top", confidence=0.95)
TIERS = registry(model("small", CHEAP, tier="fast", quality=0.5, price=0.1),
                 model("medium", MID, tier="medium", quality=0.75, price=1.0),
                 model("large", TOP, tier="large", quality=0.95, price=5.0))


def test_a_call_renders_its_templates_and_is_one_step_keyed_by_its_node_id():
    result, steps = run({"root": {"type": "call", "id": "hi", "model": "small", "system": "Sys {{input}}",
                                  "prompt": "Say {{input}}"}}, TIERS)
    assert result.output == "[small] Say hello"
    assert list(steps) == ["hi"]
    assert steps["hi"]["node_type"] == "call" and steps["hi"]["parent_id"] is None


def test_a_sequence_feeds_each_output_to_the_next_and_steps_can_be_referenced():
    spec = {"root": {"type": "sequence", "id": "seq", "steps": [
        {"type": "call", "id": "a", "model": "small", "prompt": "A({{input}})"},
        {"type": "call", "id": "b", "model": "medium", "prompt": "B({{previous}})"},
        {"type": "call", "id": "c", "model": "small", "prompt": "C({{steps.a.output}})"},
    ]}}
    result, steps = run(spec, TIERS)
    assert steps["b"]["output"] == "[medium] B([small] A(hello))"
    assert result.output == "[small] C([small] A(hello))"
    assert {steps[k]["parent_id"] for k in "abc"} == {steps["seq"]["step_id"]}
    assert steps["seq"]["node_type"] == "sequence"
    assert steps["seq"]["tokens_in"] == sum(steps[k]["tokens_in"] for k in "abc")
    assert steps["seq"]["cost_usd"] == pytest.approx(sum(steps[k]["cost_usd"] for k in "abc"))


def test_a_cascade_escalates_while_confidence_is_below_the_threshold_and_says_why():
    result, steps = run({"root": {"type": "cascade", "id": "ask", "tiers": ["small", "medium", "large"],
                                  "threshold": 0.75}}, TIERS)
    assert result.model == "medium" and result.confidence == 0.8
    assert "ask/tier@2" not in steps  # the large tier was never needed
    tried = steps["ask"]["attributes"]["tiers_tried"]
    assert [(t["model"], t["outcome"]) for t in tried] == [("small", "escalated"), ("medium", "accepted")]
    assert steps["ask/tier@1"]["attributes"]["tier_reason"] == "tier 0 (small) confidence 0.40 < 0.75"


def test_a_failing_tier_escalates_and_the_last_tier_is_accepted_even_below_threshold():
    reg = registry(model("broken", provider("down", failure_rate=1.0)), model("small", CHEAP))
    result, steps = run({"root": {"type": "cascade", "id": "c", "tiers": ["broken", "small"], "threshold": 0.9}}, reg)
    assert result.model == "small"
    outcomes = [t["outcome"] for t in steps["c"]["attributes"]["tiers_tried"]]
    assert outcomes == ["failed", "accepted (last tier)"]


def agreeing_registry():
    says = lambda text, conf: provider(f"p-{text}-{conf}", reply=text, confidence=conf)  # noqa: E731
    return registry(model("a", says("Paris.", 0.6), quality=0.6), model("b", says("paris", 0.7), quality=0.6),
                    model("c", says("Lyon", 0.99), quality=0.99), model("judge", provider("j", reply_rules=[
                        {"contains": "Score the candidate answers", "reply": '{"best": 3, "score": 0.82}'}])),
                    model("writer", provider("w", reply_rules=[
                        {"contains": "Score the candidate answers",
                         "reply": '{"best": 1, "score": 0.9, "answer": "Paris, France"}'},
                        {"contains": "Merge the candidate answers", "reply": "Paris (or Lyon?)"}])))


def parallel(strategy, **combine):
    return {"root": {"type": "parallel", "id": "vote", "branches": ["a", "b", "c"],
                     "prompt": "Capital of France?", "combine": {"strategy": strategy, **combine}}}


def test_majority_compares_normalised_answers_and_its_confidence_is_the_agreement_share():
    result, steps = run(parallel("majority"), agreeing_registry())
    assert result.output.lower().startswith("paris")
    assert result.confidence == pytest.approx(2 / 3)
    assert steps["vote"]["attributes"]["votes"][0] == {"answer": "paris", "count": 2}
    assert {steps[f"vote-{i}"]["attributes"]["branch"] for i in range(3)} == {0, 1, 2}


def test_weighted_voting_lets_one_confident_high_quality_answer_outweigh_two_weak_ones():
    result, _ = run(parallel("weighted"), agreeing_registry())
    assert result.output == "Lyon"
    weights = {"paris": 0.6 * 0.6 + 0.7 * 0.6, "lyon": 0.99 * 0.99}
    assert result.confidence == pytest.approx(weights["lyon"] / sum(weights.values()))


def test_a_judge_picks_a_candidate_and_its_score_is_the_confidence():
    result, steps = run(parallel("judge", model="judge"), agreeing_registry())
    assert (result.output, result.confidence) == ("Lyon", 0.82)
    assert steps["vote/judge"]["parent_id"] == steps["vote"]["step_id"]
    assert steps["vote"]["attributes"]["best"] == 3 and steps["vote/judge"]["attributes"]["role"] == "judge"


def test_a_judge_may_write_the_answer_itself():
    result, _ = run(parallel("judge", model="writer"), agreeing_registry())
    assert (result.output, result.confidence) == ("Paris, France", 0.9)


def test_an_unreadable_verdict_falls_back_to_weighted_voting():
    result, steps = run(parallel("judge", model="a"), agreeing_registry())
    assert steps["vote"]["attributes"]["judge_unparsed"] is True and result.output == "Lyon"


def test_merge_asks_a_model_to_merge_and_averages_the_branch_confidences():
    result, _ = run(parallel("merge", model="writer"), agreeing_registry())
    assert result.output == "Paris (or Lyon?)"
    assert result.confidence == pytest.approx((0.6 + 0.7 + 0.99) / 3)


def test_parallel_branches_run_concurrently():
    # The issue asks for it: 4 branches of 1 s each finish in under 1.3 s (loose; bench/ measures it).
    slow = provider("slow", latency_ms=1000)
    reg = registry(*[model(f"m{i}", slow) for i in range(4)])
    started = time.perf_counter()
    result, steps = run({"root": {"type": "parallel", "id": "p", "branches": ["m0", "m1", "m2", "m3"],
                                  "combine": {"strategy": "majority"}}}, reg)
    assert time.perf_counter() - started < 1.3
    assert steps["p"]["attributes"]["succeeded"] == 4


def test_a_failed_branch_is_left_out_unless_too_few_remain():
    reg = registry(model("ok", CHEAP), model("broken", provider("down", failure_rate=1.0)))
    spec = {"root": {"type": "parallel", "id": "p", "branches": ["ok", "broken"], "combine": {"strategy": "majority"}}}
    result, steps = run(spec, reg)
    assert result.model == "ok" and steps["p"]["attributes"]["failed_branches"][0]["node_id"] == "p-1"
    spec["root"]["combine"]["min_success"] = 2
    with pytest.raises(StepFailed, match="1 of 2 branches succeeded, 2 needed"):
        run(spec, reg)


def critic_registry(scores):
    rules = [{"contains": "Critique the answer", "reply": [f'{{"score": {s}}}' for s in scores]}]
    return registry(model("writer", provider("w")), model("critic", provider("c", reply_rules=rules, seed=0)))


def test_refine_improves_until_the_critic_scores_above_the_threshold():
    reg = critic_registry([0.95])
    result, steps = run({"root": {"type": "refine", "id": "r", "model": "writer", "critic": "critic",
                                  "threshold": 0.9, "max_iterations": 3}}, reg)
    assert result.confidence == 0.95
    assert set(steps) == {"r/generate#1", "r/critique#1", "r"}
    assert steps["r"]["attributes"]["stopped"] == "score reached threshold"


def test_refine_stops_after_max_iterations_with_the_last_score():
    result, steps = run({"root": {"type": "refine", "id": "r", "model": "writer", "critic": "critic",
                                  "threshold": 0.99, "max_iterations": 3}}, critic_registry([0.5]))
    assert [k for k in steps if k != "r"] == ["r/generate#1", "r/critique#1", "r/improve#2", "r/critique#2",
                                              "r/improve#3", "r/critique#3"]
    assert steps["r"]["attributes"]["scores"] == [0.5, 0.5, 0.5] and result.confidence == 0.5
    assert result.output.startswith("[writer] Improve the answer")


def supervisor_registry(plans):
    rules = [{"contains": "Return the subtasks as JSON", "reply": plans}]
    return registry(model("boss", provider("b", reply_rules=rules)), model("worker", provider("w", latency_ms=300)))


SUPERVISOR = {"root": {"type": "supervisor", "id": "s", "planner": "boss", "workers": "worker",
                       "prompt": "Report on {{input}}"}}


def test_a_supervisor_plans_runs_workers_in_parallel_and_synthesizes():
    started = time.perf_counter()
    result, steps = run(SUPERVISOR, supervisor_registry('{"subtasks": ["intro", "body", "end"]}'))
    assert time.perf_counter() - started < 0.9  # three 300 ms workers at once, not one after the other
    assert steps["s"]["attributes"]["subtasks"] == ["intro", "body", "end"]
    assert "Your subtask:\nbody" in steps["s/worker@1"]["output"]
    assert result.output.startswith("[boss] Compose the final answer") and "Subtask: end" in result.output


def test_an_invalid_plan_is_retried_once():
    reg = supervisor_registry("not json")
    reg.models["boss"].provider.options["reply_rules"].insert(
        0, {"contains": "That was not valid JSON", "reply": '["only task"]'})
    result, steps = run(SUPERVISOR, reg)
    assert steps["s"]["attributes"]["plan_attempts"] == 2 and steps["s"]["attributes"]["subtasks"] == ["only task"]


def test_a_plan_invalid_twice_fails_the_node_clearly():
    with pytest.raises(StepFailed, match="did not return valid JSON subtasks after 2 attempts"):
        run(SUPERVISOR, supervisor_registry("sure! here are some subtasks"))


GATE = {"root": {"type": "gate", "id": "g", "threshold": 0.9, "on_reject": {"escalate": "large"},
                 "node": {"type": "call", "id": "draft", "model": "small", "prompt": "Reply to {{input}}"}}}


def test_a_confident_answer_passes_the_gate():
    result, steps = run({**GATE, "root": {**GATE["root"], "threshold": 0.3}}, TIERS)
    assert result.output == "[small] Reply to hello" and steps["g"]["attributes"]["passed"]


def test_an_unsure_answer_pauses_the_run_for_review():
    with pytest.raises(AwaitingReview) as raised:
        run(GATE, TIERS)
    pause = raised.value
    assert (pause.gate_key, pause.node_id, pause.reason) == ("g", "g", "low_confidence")
    assert pause.candidates == [{"model": "small", "output": "[small] Reply to hello", "confidence": 0.4,
                                 "cost_usd": pytest.approx(pause.candidates[0]["cost_usd"]),
                                 # the mock's configured confidence stands in for a provider's logprobs
                                 "confidence_method": "logprobs", "confidence_raw": 0.4, "calibrated": False,
                                 "confidence_low": None, "calibration_labels": 0, "confidence_scope": "",
                                 "how_sure": "Measured by the model's token probabilities: raw 0.40, not yet "
                                             "calibrated (too few reviewed answers)"}]
    assert pause.request["prompt"] == "Reply to hello" and pause.default_action == "reject"


@pytest.mark.parametrize("decision, output", [
    ({"action": "approve", "output": "", "reviewer": "ann"}, "[small] Reply to hello"),
    ({"action": "edit", "output": "Dear customer…", "reviewer": "ann"}, "Dear customer…"),
])
def test_an_approved_or_edited_decision_releases_the_output(decision, output):
    result, steps = run(GATE, TIERS, meta={"decisions": {"g": decision}})
    assert (result.output, result.confidence) == (output, 1.0)
    assert steps["g"]["attributes"]["decision"] == decision["action"]
    assert steps["g"]["attributes"]["reviewer"] == "ann"


def test_a_rejection_escalates_and_gates_again():
    result, steps = run(GATE, TIERS, meta={"decisions": {"g": {"action": "reject", "reviewer": "ann"}}})
    assert result.model == "large" and steps["g/escalate#1"]["model"] == "large"  # 0.95 >= 0.9: no second review
    gate = {**GATE, "root": {**GATE["root"], "threshold": 0.99}}
    with pytest.raises(AwaitingReview) as raised:
        run(gate, TIERS, meta={"decisions": {"g": {"action": "reject", "reviewer": "ann"}}})
    assert raised.value.gate_key == "g#2" and len(raised.value.candidates) == 2
    with pytest.raises(StepFailed, match="rejected by bob after escalation"):
        run(gate, TIERS, meta={"decisions": {"g": {"action": "reject"}, "g#2": {"action": "reject", "reviewer": "bob"}}})


def test_a_rejection_fails_a_gate_that_says_so():
    gate = {"root": {**GATE["root"], "on_reject": "fail"}}
    with pytest.raises(StepFailed, match="gate g: rejected by ann"):
        run(gate, TIERS, meta={"decisions": {"g": {"action": "reject", "reviewer": "ann"}}})


def test_finished_steps_are_reused_instead_of_calling_the_model_again():
    spec = {"root": {"type": "sequence", "id": "seq", "steps": [
        {"type": "call", "id": "a", "model": "small"}, {"type": "call", "id": "b", "model": "medium"}]}}
    adapters = CountingAdapters()
    stored = {"a": {"output": "stored A", "confidence": 0.5, "tokens_in": 3, "tokens_out": 4, "cost_usd": 0.01,
                    "model": "small"}}
    result, steps = run(spec, TIERS, eng=engine(adapters), meta={"completed_steps": stored})
    assert adapters.calls == {"medium": 1}
    assert steps["b"]["output"] == "[medium] stored A" and "a" not in steps
    assert steps["seq"]["cost_usd"] == pytest.approx(0.01 + steps["b"]["cost_usd"])


def test_a_reused_node_still_lends_its_inner_outputs_to_later_templates():
    spec = {"root": {"type": "sequence", "steps": [
        {"type": "parallel", "id": "p", "branches": [{"type": "call", "id": "x", "model": "small"}],
         "combine": {"strategy": "majority"}},
        {"type": "call", "id": "z", "model": "small", "prompt": "saw {{steps.x.output}}"}]}}
    stored = {key: {"output": f"stored {key}", "confidence": 0.5, "model": "small"} for key in ("p", "x")}
    result, _ = run(spec, TIERS, meta={"completed_steps": stored})
    assert result.output == "[small] saw stored x"


def test_a_budget_stops_the_run_before_the_call_that_would_pass_it():
    spec = {"root": {"type": "sequence", "steps": [{"type": "call", "id": "a", "model": "large"},
                                                   {"type": "call", "id": "b", "model": "large"}]}}
    with pytest.raises(BudgetExceeded):
        run(spec, TIERS, budget_usd=0.0001)


def test_a_deadline_interrupts_calls_in_flight():
    reg = registry(model("slow", provider("slow", latency_ms=3000)))
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        run({"root": {"type": "call", "model": "slow"}}, reg, deadline=time.monotonic() + 0.2)
    assert time.perf_counter() - started < 2


def test_a_cancel_request_stops_at_the_next_node():
    with pytest.raises(RunCancelled):
        run({"root": {"type": "call", "model": "small"}}, TIERS, meta={"cancel_requested": True})


def test_step_keys_are_unique_and_every_parent_is_a_step_of_the_run():
    spec = {"root": {"type": "sequence", "id": "all", "steps": [
        {"type": "cascade", "id": "c", "tiers": ["small", "medium"], "threshold": 0.9},
        {"type": "parallel", "id": "p", "branches": ["small", "medium"], "combine": {"strategy": "majority"}},
        {"type": "gate", "id": "g", "threshold": 0.1, "node": {"type": "route", "id": "r", "strategy": "cost",
                                                             "candidates": ["small", "large"]}},
    ]}}
    sink = ListSink()
    asyncio.run(run_workflow(engine(), RunContext(run_id="x", registry=TIERS, sink=sink), spec, "hi"))
    done = [e for e in sink.events if e["type"] == "step.finished"]
    assert len({e["key"] for e in done}) == len(done)
    ids = {e["step_id"] for e in done}
    assert all(e["parent_id"] in ids for e in done if e["key"] != "all")
    types = {e["key"]: e["node_type"] for e in done}
    assert types == {"c/tier@0": "call", "c/tier@1": "call", "c": "cascade", "p-0": "call", "p-1": "call",
                     "p": "parallel", "r/call": "call", "r": "route", "g": "gate", "all": "sequence"}

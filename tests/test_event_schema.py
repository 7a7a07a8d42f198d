"""Live events match their types (orchestration/engine/events.py); conftest checks every one the suite publishes."""
import typing

from orchestration import live
from orchestration.engine import events
from orchestration.engine.events import (EVENT_TYPES, model_health, review_created, review_decided, review_updated,
                                         run_updated, step_finished, step_started, with_team)
from orchestration.models import ReviewItem
from orchestration.models.runs import RunStatus, StepStatus
from tests.eventschema import event_problems

STEP = {"run_id": "r1", "step_id": "s1", "parent_id": None, "key": "call", "node_id": "call", "node_type": "call",
        "model": "atlas-pro", "provider": "mock"}
REVIEW = {"review_id": "v1", "run_id": "r1", "status": "pending", "reason": "low_confidence", "category": "",
          "node_id": "gate", "step_key": "gate", "assignee": None, "decided_by": None, "created_ts": 1, "due_ts": None,
          "claimed_ts": None, "decided_ts": None, "models": ["atlas-pro"], "best_model": "atlas-pro",
          "best_confidence": 0.4, "preview": "hello"}


def finished(**fields):
    return step_finished(**{"step": STEP, "ts": 2, "started_ts": 1, "status": "succeeded", "output": "hi",
                            "error": "", "confidence": 0.9, "tokens_in": 3, "tokens_out": 1, "cost_usd": 0.001,
                            "latency_ms": 1.5, "attributes": {}, **fields})


def test_every_builder_makes_an_event_that_matches_its_type():
    built = [
        step_started(step=STEP, ts=1, prompt=[{"role": "user", "content": "hi"}], attributes={"cached": True},
                     fallback_from="swift-mini"),
        finished(prompt=[], tokens_estimated=True, fallback_from="swift-mini"),
        with_team(finished(), 7), with_team(step_started(step=STEP, ts=1, prompt=[]), None),
        run_updated(run_id="r1", status=RunStatus.RUNNING, target="atlas-pro", kind="chat", api_key="pdm_ab",
                    team=7),
        run_updated(run_id="r1", status="succeeded", target="atlas-pro", kind="chat", api_key="", team=None, cost_usd=0.1,
                    tokens_in=3, tokens_out=1, latency_ms=12.0, confidence=0.8),
        review_created(review=REVIEW),
        review_updated(review=REVIEW, change="claim_lapsed", previous_assignee="rita"),
        review_decided(review=REVIEW, action="approve", output="ok", comment="", expired=True),
        model_health(model="atlas-pro", state="half_open", in_flight=1),
    ]
    assert {event["type"] for event in built} == set(EVENT_TYPES)
    assert [problem for event in built for problem in event_problems(event)] == []


def test_an_optional_field_left_at_none_is_left_out():
    event = run_updated(run_id="r1", status="running", target="atlas-pro", kind="chat", api_key="", team=None,
                        latency_ms=None)
    assert "latency_ms" not in event and "cost_usd" not in event
    assert "prompt" not in finished() and "expired" not in review_decided(review=REVIEW, action="reject", output="")


def test_the_validator_names_the_event_and_the_field_of_a_missing_or_mistyped_value():
    event = finished(tokens_in="3")
    del event["error"]
    problems = event_problems(event)
    assert len(problems) == 2
    assert all(p.startswith("step.finished (run_id=r1, step_id=s1, key=call, model=atlas-pro)") for p in problems)
    assert any("field 'error'" in p and "required" in p for p in problems)
    assert any("field 'tokens_in'" in p and "integer" in p and "'3'" in p for p in problems)


def test_the_validator_rejects_an_unknown_type_an_undeclared_field_and_a_value_outside_its_literal():
    assert "unknown event type 'metrics.tick'" in event_problems({"type": "metrics.tick", "ts": 1})[0]
    assert event_problems({"ts": 1})[0].startswith("None (): unknown event type None")
    [undeclared] = event_problems({**finished(), "cached": True})
    assert "field 'cached' is not declared by StepFinished" in undeclared
    [state] = event_problems({**model_health(model="m", state="open", in_flight=0), "state": "ajar"})
    assert "field 'state'" in state and "'ajar'" in state
    assert event_problems(["not", "a", "dict"]) == ["an event must be a dict, not list"]


def test_a_malformed_event_published_during_a_test_is_caught_by_the_suite_wide_check(event_checker):
    checked = event_checker.checked
    live.publish({"type": "step.finishd", "ts": 1, "run_id": "r1"})  # a type no observer acts on
    problems = event_checker.drain()  # taken here, so that this test is not failed for it
    assert event_checker.checked == checked + 1
    assert len(problems) == 1 and problems[0].startswith("step.finishd (run_id=r1): unknown event type 'step.finishd'")


def test_the_status_literals_are_the_models_choices():
    assert set(typing.get_args(events.RunStatus)) == set(RunStatus.values)
    assert set(typing.get_args(events.ReviewStatus)) == set(ReviewItem.Status.values)
    assert set(typing.get_args(events.FinishedStepStatus)) <= set(StepStatus.values) - {"running"}

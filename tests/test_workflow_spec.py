"""Workflow spec validation: every node type accepted, every mistake refused with the path of the bad field."""
import pytest

from orchestration.demo import DEMO_WORKFLOWS
from orchestration.engine.spec import SpecInvalid, compile_spec, validate_spec

EVERY_NODE_TYPE = {"root": {"type": "sequence", "id": "main", "steps": [
    {"type": "call", "id": "draft", "model": "small", "prompt": "Draft: {{input}}", "system": "Be brief."},
    {"type": "route", "id": "pick", "strategy": "balanced", "candidates": ["small", "big"],
     "prompt": "Improve: {{steps.draft.output}}"},
    {"type": "route", "id": "aliased", "route": "auto"},
    {"type": "cascade", "id": "escalate", "tiers": ["small", "big"], "threshold": 0.7},
    {"type": "parallel", "id": "vote", "branches": ["small", {"type": "call", "model": "big"}],
     "combine": {"strategy": "judge", "model": "big", "instructions": "Prefer {{steps.pick.output}}"}},
    {"type": "refine", "id": "polish", "model": "small", "critic": "big", "threshold": 0.9, "max_iterations": 2},
    {"type": "supervisor", "id": "report", "planner": "big", "workers": "small", "max_subtasks": 3},
    {"type": "gate", "id": "check", "threshold": 0.8, "on_reject": {"escalate": "big"},
     "node": {"type": "call", "model": "small", "prompt": "{{previous}}"}},
]}}


def errors_of(spec, **kwargs) -> list[str]:
    with pytest.raises(SpecInvalid) as raised:
        compile_spec(spec, **kwargs)
    return raised.value.errors


def test_a_spec_using_every_node_type_is_valid_and_normalised():
    compiled = compile_spec(EVERY_NODE_TYPE)
    steps = compiled["root"]["steps"]
    assert [s["type"] for s in steps] == ["call", "route", "route", "cascade", "parallel", "refine", "supervisor",
                                          "gate"]
    # shorthand branches become calls named after their parallel node; other nodes get generated ids
    assert steps[4]["branches"][0] == {"type": "call", "model": "small", "prompt": "{{previous}}", "id": "vote-0",
                                       "params": {}}
    assert steps[4]["branches"][1]["id"] == "call-1"
    assert steps[6]["workers"] == ["small"] and steps[6]["synthesizer"] == "big"
    assert steps[7]["prompt"] == "{{previous}}" and steps[7]["default_action"] == "reject"
    assert EVERY_NODE_TYPE["root"]["steps"][4]["branches"][0] == "small"  # the input is left as it was


def test_the_demo_workflows_are_valid():
    for spec in DEMO_WORKFLOWS.values():
        assert validate_spec(spec, known_targets={"swift-mini", "swift-code", "atlas-pro", "titan-ultra"}) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s["root"]["steps"][4]["combine"].update(strategy="vote"),
     "root.steps[4].combine.strategy: must be one of majority, weighted, judge, merge"),
    (lambda s: s["root"]["steps"][4]["combine"].pop("model"),
     "root.steps[4].combine.model: is required for the judge strategy"),
    (lambda s: s["root"]["steps"][3].update(threshold=1.5), "root.steps[3].threshold: must be a number between 0 and 1"),
    (lambda s: s["root"]["steps"][0].pop("model"), "root.steps[0].model: is required for a call node"),
    (lambda s: s["root"]["steps"][0].update(type="loop"), "root.steps[0].type: must be one of call, route"),
    (lambda s: s["root"]["steps"][0].update(temperature=0.2), "root.steps[0].temperature: unknown field for a call node"),
    (lambda s: s["root"]["steps"][1].update(strategy="fastest"), "root.steps[1].strategy: must be one of"),
    (lambda s: s["root"]["steps"][5].update(max_iterations=0),
     "root.steps[5].max_iterations: must be a whole number between 1 and 20"),
    (lambda s: s["root"]["steps"][7].update(on_reject="retry"), "root.steps[7].on_reject: must be \"fail\" or"),
    (lambda s: s["root"]["steps"][6].update(id="draft"), "root.steps[6].id: 'draft' is already the id of root.steps[0]"),
    (lambda s: s["root"]["steps"].append("not a node"), "root.steps[8]: must be an object with a 'type'"),
    (lambda s: s["root"].update(steps=[]), "root.steps: must be a non-empty list of nodes"),
])
def test_invalid_specs_are_refused_with_the_path_of_the_bad_field(mutate, expected):
    import copy

    spec = copy.deepcopy(EVERY_NODE_TYPE)
    mutate(spec)
    errors = errors_of(spec)
    assert any(error.startswith(expected) for error in errors), errors


def test_an_unknown_template_reference_is_a_validation_error_not_a_runtime_surprise():
    errors = errors_of({"root": {"type": "sequence", "steps": [
        {"type": "call", "id": "a", "model": "m", "prompt": "{{steps.b.output}} {{steps.nope.output}} {{user}}"},
        {"type": "call", "id": "b", "model": "m"},
    ]}})
    assert errors == [
        "root.steps[0].prompt: {{steps.b.output}} refers to step 'b', which has not finished at this point",
        "root.steps[0].prompt: {{steps.nope.output}} refers to an unknown step 'nope'",
        "root.steps[0].prompt: unknown placeholder {{user}}; use {{input}}, {{previous}} or {{steps.<id>.output}}",
    ]


def test_parallel_branches_may_not_read_each_other_but_the_next_step_may_read_them():
    spec = {"root": {"type": "sequence", "steps": [
        {"type": "parallel", "id": "p", "combine": {"strategy": "majority"}, "branches": [
            {"type": "call", "id": "x", "model": "m"},
            {"type": "call", "id": "y", "model": "m", "prompt": "{{steps.x.output}}"}]},
        {"type": "call", "id": "z", "model": "m", "prompt": "{{steps.x.output}} / {{steps.p.output}}"},
    ]}}
    assert errors_of(spec) == ["root.steps[0].branches[1].prompt: {{steps.x.output}} refers to step 'x', "
                               "which has not finished at this point"]


def test_known_targets_catch_a_misspelt_model():
    spec = {"root": {"type": "cascade", "tiers": ["small", "bgi"]}}
    assert errors_of(spec, known_targets={"small", "big"}) == ["root.tiers[1]: unknown model or route alias 'bgi'"]


def test_a_spec_must_be_an_object_with_a_root():
    assert validate_spec([]) == ["spec: must be a JSON object with a 'root' node"]
    assert validate_spec({"steps": []}) == ["steps: unknown field (a spec has 'root' and an optional 'description')",
                                            "root: is required"]


def test_a_route_node_names_a_route_alias_or_a_strategy_not_both():
    errors = errors_of({"root": {"type": "route", "route": "auto", "strategy": "cost", "candidates": ["a"]}})
    assert errors[0].startswith("root: a route node needs either 'route'")

"""Workflow spec validation: pure Python, every error names the path of the bad field.

A spec is `{"root": <node>}` (plus an optional "description"). `compile_spec` checks it
and returns a normalised copy the executor runs: every node gets an `id` (explicit ids
are kept; others become `<type>-<n>`), defaults are filled in, and parallel shorthand
branches (a bare model alias) become `call` nodes. docs/workflows.md ("Workflow specs")
documents each node type; the field tables below are the source of truth.

Templates may use `{{input}}`, `{{previous}}` and `{{steps.<id>.output}}`; a reference to a
step that does not exist, or has not run yet at that point of the tree, is an error here
rather than a surprise at run time.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable

from orchestration.confidence_options import check_options
from orchestration.engine.routing import STRATEGIES
from orchestration.engine.templates import references, step_reference

NODE_TYPES = ("call", "route", "cascade", "sequence", "parallel", "refine", "supervisor", "gate")
COMBINE_STRATEGIES = ("majority", "weighted", "judge", "merge")
GATE_ACTIONS = ("approve", "reject", "escalate")  # what an expired review does
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_NODES = 200
MAX_DEPTH = 20
MAX_DUE_S = 365 * 24 * 3600  # a review due later than a year is a typo (and 1e308 s overflows a datetime)

_TEMPLATE = "template"
# type -> {field: kind}; kinds: str, template, number, int, object, node, nodes, branches, combine,
# strings (non-empty list of str), workers (str or non-empty list of str), on_reject, due
FIELDS: dict[str, dict[str, str]] = {
    "call": {"model": "str", "prompt": _TEMPLATE, "system": _TEMPLATE, "params": "object",
             "confidence": "confidence"},
    "route": {"route": "str", "strategy": "str", "candidates": "strings", "options": "object",
              "prompt": _TEMPLATE, "system": _TEMPLATE, "params": "object", "confidence": "confidence"},
    "cascade": {"tiers": "strings", "threshold": "number", "prompt": _TEMPLATE, "system": _TEMPLATE,
                "params": "object", "confidence": "confidence"},
    "sequence": {"steps": "nodes"},
    "parallel": {"branches": "branches", "combine": "combine", "prompt": _TEMPLATE, "system": _TEMPLATE,
                 "params": "object"},
    "refine": {"model": "str", "critic": "str", "threshold": "number", "max_iterations": "int",
               "prompt": _TEMPLATE, "system": _TEMPLATE, "params": "object"},
    "supervisor": {"planner": "str", "workers": "workers", "synthesizer": "str", "max_subtasks": "int",
                   "prompt": _TEMPLATE, "system": _TEMPLATE, "params": "object"},
    "gate": {"node": "node", "threshold": "number", "max_error_rate": "rate", "on_reject": "on_reject",
             "prompt": _TEMPLATE, "due_in_s": "due", "default_action": "str"},
}
REQUIRED = {
    "call": ("model",), "cascade": ("tiers",), "sequence": ("steps",), "parallel": ("branches", "combine"),
    "refine": ("model",), "supervisor": ("planner", "workers"), "gate": ("node",),
}
DEFAULTS = {
    "call": {"prompt": "{{previous}}", "params": {}},
    "route": {"prompt": "{{previous}}", "params": {}, "options": {}},
    "cascade": {"prompt": "{{previous}}", "params": {}, "threshold": 0.7},
    "parallel": {"prompt": "{{previous}}", "params": {}},
    "refine": {"prompt": "{{previous}}", "params": {}, "threshold": 0.8, "max_iterations": 3},
    "supervisor": {"prompt": "{{previous}}", "params": {}, "max_subtasks": 5},
    "gate": {"threshold": 0.8, "on_reject": "fail", "due_in_s": None, "default_action": "reject"},
}
COMBINE_FIELDS = {"strategy": "str", "model": "str", "instructions": _TEMPLATE, "min_success": "int"}


class SpecInvalid(ValueError):
    """The spec has errors; `errors` lists them as 'path: message'."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def validate_spec(spec, *, known_targets: Iterable[str] | None = None) -> list[str]:
    """The spec's errors ('root.steps[2].combine.strategy: must be one of …'), empty when valid."""
    try:
        compile_spec(spec, known_targets=known_targets)
    except SpecInvalid as exc:
        return exc.errors
    return []


def compile_spec(spec, *, known_targets: Iterable[str] | None = None) -> dict:
    """A normalised copy of a valid spec, or SpecInvalid listing every error found.

    `known_targets` (model and route aliases), when given, also checks that every model a node names exists.
    """
    checker = _Checker(set(known_targets) if known_targets is not None else None)
    if not isinstance(spec, dict):
        raise SpecInvalid(["spec: must be a JSON object with a 'root' node"])
    for name in spec:
        if name not in ("root", "description"):
            checker.error(name, "unknown field (a spec has 'root' and an optional 'description')")
    if "description" in spec and not isinstance(spec["description"], str):
        checker.error("description", "must be a string")
    if "root" not in spec:
        checker.error("root", "is required")
        raise SpecInvalid(checker.errors)
    normalised = copy.deepcopy(spec)
    checker.collect_ids(normalised["root"], "root", 0)
    if not checker.errors:
        checker.assign_ids(normalised["root"])
        checker.all_ids = node_ids(normalised["root"])
        checker.check_node(normalised["root"], "root", available=set())
    if checker.errors:
        raise SpecInvalid(checker.errors)
    return normalised


def node_ids(node: dict) -> set[str]:
    """Ids of a normalised node and everything under it."""
    found = {node["id"]}
    for child in children(node):
        found |= node_ids(child)
    return found


def children(node: dict) -> list[dict]:
    kind = node.get("type")
    if kind == "sequence":
        found = node.get("steps")
    elif kind == "parallel":
        found = node.get("branches")
    elif kind == "gate":
        found = [node.get("node")]
    else:
        found = []
    return [child for child in found if isinstance(child, dict)] if isinstance(found, list) else []


class _Checker:
    def __init__(self, known_targets: set[str] | None):
        self.known_targets = known_targets
        self.errors: list[str] = []
        self.explicit_ids: dict[str, str] = {}
        self.count = 0
        self.counters: dict[str, int] = {}
        self.all_ids: set[str] = set()

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    # --- pass 1: shape, explicit ids, shorthand branches -------------------------------------------
    def collect_ids(self, node, path: str, depth: int) -> None:
        if not isinstance(node, dict):
            self.error(path, "must be an object with a 'type'")
            return
        self.count += 1
        if self.count == MAX_NODES + 1:
            self.error(path, f"a spec may have at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            self.error(path, f"nested deeper than {MAX_DEPTH} levels")
            return
        kind = node.get("type")
        if kind not in NODE_TYPES:
            self.error(f"{path}.type", f"must be one of {', '.join(NODE_TYPES)}")
            return
        if "id" in node:
            node_id = node["id"]
            if not isinstance(node_id, str) or not ID_RE.match(node_id):
                self.error(f"{path}.id", "must be 1-64 letters, digits, '-' or '_'")
            elif node_id in self.explicit_ids:
                self.error(f"{path}.id", f"'{node_id}' is already the id of {self.explicit_ids[node_id]}")
            else:
                self.explicit_ids[node_id] = path
        if kind == "parallel" and isinstance(node.get("branches"), list):
            # A bare alias is shorthand for a call with the parallel node's prompt, named after the parallel node.
            named = isinstance(node.get("id"), str) and ID_RE.match(node["id"]) and len(node["id"]) <= 60
            node["branches"] = [
                {"type": "call", "model": branch, "prompt": node.get("prompt", "{{previous}}"),
                 **({"id": f"{node['id']}-{index}"} if named else {}),
                 **({"system": node["system"]} if "system" in node else {}),
                 **({"params": node["params"]} if "params" in node else {})}
                if isinstance(branch, str) else branch
                for index, branch in enumerate(node["branches"])
            ]
        for field, kind_of in FIELDS[kind].items():
            value = node.get(field)
            if kind_of == "node" and field in node:
                self.collect_ids(value, f"{path}.{field}", depth + 1)
            elif kind_of in ("nodes", "branches") and isinstance(value, list):
                for index, child in enumerate(value):
                    self.collect_ids(child, f"{path}.{field}[{index}]", depth + 1)

    def assign_ids(self, node: dict) -> None:
        if "id" not in node:
            kind = node["type"]
            while True:
                self.counters[kind] = self.counters.get(kind, 0) + 1
                candidate = f"{kind}-{self.counters[kind]}"
                if candidate not in self.explicit_ids:
                    break
            node["id"] = candidate
        for child in children(node):
            self.assign_ids(child)

    # --- pass 2: fields, values, references -----------------------------------------------------
    def check_node(self, node: dict, path: str, available: set[str]) -> set[str]:
        """Check one node; returns the ids available to whatever runs after it."""
        kind = node["type"]
        allowed = FIELDS[kind]
        for field in node:
            if field not in allowed and field not in ("type", "id"):
                self.error(f"{path}.{field}", f"unknown field for a {kind} node (allowed: "
                           f"{', '.join(sorted(allowed))})")
        for field in REQUIRED.get(kind, ()):
            if field not in node:
                self.error(f"{path}.{field}", f"is required for a {kind} node")
        if kind == "gate" and "max_error_rate" in node:
            if "threshold" in node:
                self.error(f"{path}.max_error_rate", "give either 'threshold' or 'max_error_rate', not both")
            node["threshold"] = None  # the target risk decides, on calibrated confidence
        for field, value in DEFAULTS.get(kind, {}).items():
            node.setdefault(field, copy.deepcopy(value))

        for field, kind_of in allowed.items():
            if field in node and kind_of not in ("node", "nodes", "branches", "combine") \
                    and not (field == "threshold" and node[field] is None and "max_error_rate" in node):
                self.check_value(node[field], f"{path}.{field}", kind_of, available)
        check = getattr(self, f"check_{kind}", None)
        after = check(node, path, available) if check else set(available)
        return after | {node["id"]}

    def check_value(self, value, path: str, kind_of: str, available: set[str]) -> None:
        if kind_of == "str":
            if not isinstance(value, str) or not value:
                self.error(path, "must be a non-empty string")
        elif kind_of == _TEMPLATE:
            if not isinstance(value, str):
                self.error(path, "must be a string")
            else:
                self.check_template(value, path, available)
        elif kind_of == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                self.error(path, "must be a number between 0 and 1")
        elif kind_of == "rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                self.error(path, "must be a number between 0 and 1 (exclusive), e.g. 0.02 for 2 %")
        elif kind_of == "confidence":
            for message in check_options(value, path):
                self.errors.append(message)
            if isinstance(value, dict) and isinstance(value.get("verifier"), str) and value.get("verifier"):
                self.check_target(value["verifier"], f"{path}.verifier")
        elif kind_of == "int":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 20:
                self.error(path, "must be a whole number between 1 and 20")
        elif kind_of == "object":
            if not isinstance(value, dict):
                self.error(path, "must be an object")
        elif kind_of == "strings":
            if (not isinstance(value, list) or not value
                    or not all(isinstance(item, str) and item for item in value)):
                self.error(path, "must be a non-empty list of model aliases")
            else:
                for index, item in enumerate(value):
                    self.check_target(item, f"{path}[{index}]")
        elif kind_of == "workers":
            if isinstance(value, str) and value:
                self.check_target(value, path)
            else:
                self.check_value(value, path, "strings", available)
        elif kind_of == "due":
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value <= MAX_DUE_S):
                self.error(path, f"must be a positive number of seconds up to {MAX_DUE_S}, or null")
        elif kind_of == "on_reject":
            if value == "fail":
                return
            if not isinstance(value, dict) or set(value) != {"escalate"} or not isinstance(value["escalate"], str) \
                    or not value["escalate"]:
                self.error(path, "must be \"fail\" or {\"escalate\": \"<model or route alias>\"}")
            else:
                self.check_target(value["escalate"], f"{path}.escalate")

    def check_target(self, alias: str, path: str) -> None:
        if self.known_targets is not None and alias not in self.known_targets:
            self.error(path, f"unknown model or route alias '{alias}'")

    def check_template(self, template: str, path: str, available: set[str]) -> None:
        for name in references(template):
            if name in ("input", "previous"):
                continue
            node_id = step_reference(name)
            if node_id is None:
                self.error(path, f"unknown placeholder {{{{{name}}}}}; use {{{{input}}}}, {{{{previous}}}} "
                           f"or {{{{steps.<id>.output}}}}")
            elif node_id not in self.all_ids:
                self.error(path, f"{{{{{name}}}}} refers to an unknown step '{node_id}'")
            elif node_id not in available:
                self.error(path, f"{{{{{name}}}}} refers to step '{node_id}', which has not finished at this point")

    # --- per type --------------------------------------------------------------------------
    def check_call(self, node, path, available):
        if isinstance(node.get("model"), str):
            self.check_target(node["model"], f"{path}.model")
        return set(available)

    def check_route(self, node, path, available):
        if ("route" in node) == ("strategy" in node):
            self.error(path, "a route node needs either 'route' (a route alias) or 'strategy' (with 'candidates')")
        if "route" in node:
            if isinstance(node["route"], str):
                self.check_target(node["route"], f"{path}.route")
            for field in ("candidates",):
                if field in node:
                    self.error(f"{path}.{field}", "comes from the route alias; leave it out or use 'strategy'")
        elif "strategy" in node:
            if node["strategy"] not in STRATEGIES:
                self.error(f"{path}.strategy", f"must be one of {', '.join(sorted(STRATEGIES))}")
            if node["strategy"] != "classifier" and "candidates" not in node:
                self.error(f"{path}.candidates", f"is required for the {node['strategy']} strategy")
        return set(available)

    def check_cascade(self, node, path, available):
        return set(available)

    def check_sequence(self, node, path, available):
        steps = node.get("steps")
        if not isinstance(steps, list) or not steps:
            self.error(f"{path}.steps", "must be a non-empty list of nodes")
            return set(available)
        current = set(available)
        for index, step in enumerate(steps):
            current = self.check_node(step, f"{path}.steps[{index}]", current) | node_ids(step)
        return current

    def check_parallel(self, node, path, available):
        branches = node.get("branches")
        after = set(available)
        if not isinstance(branches, list) or not branches:
            self.error(f"{path}.branches", "must be a non-empty list of nodes or model aliases")
        else:
            for index, branch in enumerate(branches):
                # Branches run at once: none may read a sibling's output.
                self.check_node(branch, f"{path}.branches[{index}]", available)
                after |= node_ids(branch)
        combine = node.get("combine")
        if "combine" not in node:
            return after
        if not isinstance(combine, dict):
            self.error(f"{path}.combine", "must be an object with a 'strategy'")
            return after
        for field in combine:
            if field not in COMBINE_FIELDS:
                self.error(f"{path}.combine.{field}", f"unknown field (allowed: {', '.join(sorted(COMBINE_FIELDS))})")
        strategy = combine.get("strategy")
        if strategy not in COMBINE_STRATEGIES:
            self.error(f"{path}.combine.strategy", f"must be one of {', '.join(COMBINE_STRATEGIES)}")
        if strategy in ("judge", "merge") and "model" not in combine:
            self.error(f"{path}.combine.model", f"is required for the {strategy} strategy")
        for field, kind_of in COMBINE_FIELDS.items():
            if field in combine and field != "strategy":
                self.check_value(combine[field], f"{path}.combine.{field}", kind_of, after)
        combine.setdefault("min_success", 1)
        if isinstance(branches, list) and isinstance(combine.get("min_success"), int) \
                and combine["min_success"] > len(branches):
            self.error(f"{path}.combine.min_success", f"cannot exceed the {len(branches)} branches")
        return after

    def check_refine(self, node, path, available):
        node.setdefault("critic", node.get("model"))
        for field in ("model", "critic"):
            if isinstance(node.get(field), str):
                self.check_target(node[field], f"{path}.{field}")
        return set(available)

    def check_supervisor(self, node, path, available):
        node.setdefault("synthesizer", node.get("planner"))
        for field in ("planner", "synthesizer"):
            if isinstance(node.get(field), str):
                self.check_target(node[field], f"{path}.{field}")
        if isinstance(node.get("workers"), str):
            node["workers"] = [node["workers"]]
        return set(available)

    def check_gate(self, node, path, available):
        child = node.get("node")
        after = set(available)
        if isinstance(child, dict):
            self.check_node(child, f"{path}.node", available)
            after |= node_ids(child)
            if "prompt" not in node:
                # Escalation re-asks what the gated node asked, when it has one prompt.
                node["prompt"] = child.get("prompt", "{{previous}}")
        if node.get("default_action") not in GATE_ACTIONS:
            self.error(f"{path}.default_action", f"must be one of {', '.join(GATE_ACTIONS)}")
        return after

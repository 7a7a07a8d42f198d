"""Prompt templates: `{{input}}`, `{{previous}}` and `{{steps.<id>.output}}`, nothing else.

Rendering is plain substitution (no expressions, no loops), so a template can only
read what the run already produced; spec validation refuses any other reference.
"""
from __future__ import annotations

import re

PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
STEP_REF_RE = re.compile(r"^steps\.([A-Za-z0-9_.:-]+?)\.output$")


def references(template: str) -> list[str]:
    """Every placeholder name in a template, in order (`input`, `previous`, `steps.x.output`, or junk)."""
    return PLACEHOLDER_RE.findall(template)


def step_reference(name: str) -> str | None:
    """The node id a `steps.<id>.output` placeholder reads, else None."""
    match = STEP_REF_RE.match(name)
    return match.group(1) if match else None


def render(template: str, *, input: str, previous: str, outputs: dict[str, str]) -> str:
    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name == "input":
            return input
        if name == "previous":
            return previous
        node_id = step_reference(name)
        if node_id is not None and node_id in outputs:
            return outputs[node_id]
        # Validation refuses unknown references; an old spec with one renders it verbatim, visibly.
        return match.group(0)

    return PLACEHOLDER_RE.sub(substitute, template)

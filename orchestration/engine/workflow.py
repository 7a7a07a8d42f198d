"""Running a workflow spec: the entry point of the engine for runs, and the pause a gate can cause.

`run_workflow(engine, ctx, spec, input)` validates and normalises the spec, then runs its root
node (see `orchestration.engine.nodes` for each node type and how its confidence is computed).
It returns the root's NodeResult or raises:

  AwaitingReview                      a gate wants a person's decision; the runner opens a review item
  BudgetExceeded / DeadlineExceeded   the run's limits (the deadline also interrupts calls in flight)
  StepFailed                          a node failed for good
  RunCancelled                        someone cancelled the run

With `final_stream` (an async callable taking a StreamDelta), the run's final model call streams: its
deltas are handed to `final_stream` as they arrive (with fallback while nothing was sent, see
`engine/streaming.py`). The final call is the root when it is a `call`, the model call of a root
`route`, or, for a `sequence`, that of its last stage (recursively). Any other root (parallel,
cascade, refine, supervisor, gate) has no final call: nothing streams and the caller sends the
finished output whole. Every other step runs as usual.

Re-running the same spec on the same run is idempotent: `ctx.meta["completed_steps"]` (step key ->
stored result) makes every finished node and call return its stored result instead of running
again, and `ctx.meta["decisions"]` (gate key -> reviewer decision) lets paused gates go on.
"""
from __future__ import annotations

import asyncio
import json

from orchestration.engine.executor import DeadlineExceeded, Engine, NodeResult, RunContext
from orchestration.engine.nodes import HANDLERS, MEASURERS, Execution, Scope
from orchestration.engine.spec import compile_spec
from orchestration.engine.types import messages_text


def input_text(value) -> str:
    """What `{{input}}` renders: a string as is, the last user message of a chat, else the JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):
            users = [m for m in value["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            return messages_text(users[-1:] or value["messages"][-1:])
        if "input" in value and len(value) == 1:
            return input_text(value["input"])
        for field in ("text", "prompt", "question"):
            if isinstance(value.get(field), str):
                return value[field]
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def final_call_key(node: dict) -> str | None:
    """The step key of the model call whose answer is the node's answer as is, if there is one."""
    if node["type"] == "call":
        return node["id"]
    if node["type"] == "route":
        return f"{node['id']}/call"
    if node["type"] == "sequence" and node.get("steps"):
        return final_call_key(node["steps"][-1])
    return None  # combined, judged, refined, gated or tiered answers exist only once the node finished


async def run_workflow(engine: Engine, ctx: RunContext, spec: dict, input, *, final_stream=None) -> NodeResult:
    compiled = compile_spec(spec)
    text = input_text(input)
    scope = Scope(input=text, previous=text, outputs={})
    ctx.check_limits()
    timeout = asyncio.timeout(ctx.seconds_left())
    try:
        async with timeout:
            execution = Execution(engine, ctx, HANDLERS, MEASURERS)
            if final_stream is not None:
                execution.stream_key, execution.final_stream = final_call_key(compiled["root"]), final_stream
            return await execution.run_node(compiled["root"], scope)
    except TimeoutError:
        if timeout.expired():
            raise DeadlineExceeded("the run's deadline passed while steps were in flight") from None
        raise

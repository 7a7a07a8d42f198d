"""One run's execution of a workflow tree: scopes, spans, model calls and reuse of finished steps."""
from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from orchestration.engine.confidence import calibration_marker, measurement_from_stored, resolve_method
from orchestration.engine.events import StepIdentity, now_ms, step_finished, step_started
from orchestration.engine.executor import Engine, NodeResult, RunContext, StepFailed
from orchestration.engine.policy import PolicyViolation
from orchestration.engine.route_choice import RouteRequest
from orchestration.engine.routing import choose, resolve_route
from orchestration.engine.spec import node_ids
from orchestration.engine.streaming import stream_model
from orchestration.engine.templates import render
from orchestration.engine.types import ChatRequest, ModelSpec, estimate_tokens, messages_text

STEP_NAMESPACE = uuid.UUID("5f0f1d1e-58a4-4d55-9d8e-7f3cfc0f3a11")


class RunCancelled(Exception):
    """Someone cancelled the run; raised at the next node boundary."""


def span_step_id(run_id: str, key: str) -> str:
    """Deterministic, so a re-executed node keeps its row and its children's parent pointers."""
    return str(uuid.uuid5(STEP_NAMESPACE, f"{run_id}:{key}"))


def total(output: str, confidence: float, parts: list[NodeResult], *, model: str = "",
          measured: NodeResult | None = None) -> NodeResult:
    """A composite node's result: its own output and confidence, its children's tokens and cost.
    `measured`: the child whose confidence this is, so its measurement (method, raw signal) goes up with it."""
    return NodeResult(output=output, confidence=max(0.0, min(1.0, float(confidence))),
                      tokens_in=sum(p.tokens_in for p in parts), tokens_out=sum(p.tokens_out for p in parts),
                      cost_usd=sum(p.cost_usd for p in parts), model=model,
                      tokens_estimated=any(p.tokens_estimated for p in parts),
                      measurement=measured.measurement if measured is not None else None)


def result_from_stored(stored: dict) -> NodeResult:
    return NodeResult(output=stored.get("output") or "", confidence=float(stored.get("confidence") or 0.0),
                      tokens_in=int(stored.get("tokens_in") or 0), tokens_out=int(stored.get("tokens_out") or 0),
                      cost_usd=float(stored.get("cost_usd") or 0.0), latency_ms=float(stored.get("latency_ms") or 0.0),
                      model=stored.get("model") or "", tokens_estimated=bool(stored.get("tokens_estimated")),
                      measurement=measurement_from_stored(stored.get("confidence_method") or "",
                                                          stored.get("confidence_raw"), stored.get("confidence"),
                                                          stored.get("attributes")))


@dataclass
class Scope:
    """What a node can read: the run's input, the previous stage's output, finished nodes' outputs."""

    input: str
    previous: str
    outputs: dict[str, str]
    parent_id: str | None = None
    attributes: dict = field(default_factory=dict)  # markers for the calls below (e.g. branch)
    decides: bool = False  # a gate above decides on the confidence of what runs in this scope

    def render(self, template: str) -> str:
        return render(template, input=self.input, previous=self.previous, outputs=self.outputs)

    def child(self, *, parent_id: str | None = None, previous: str | None = None, decides: bool | None = None,
              **attributes) -> "Scope":
        return Scope(input=self.input, previous=self.previous if previous is None else previous,
                     outputs=self.outputs, parent_id=self.parent_id if parent_id is None else parent_id,
                     attributes={**self.attributes, **attributes},
                     decides=self.decides if decides is None else decides)


@dataclass
class Span:
    step_id: str
    key: str
    attributes: dict = field(default_factory=dict)
    result: NodeResult | None = None  # the handler sets it before leaving the span


def messages_for(node: dict, scope: Scope, prompt: str | None = None) -> list[dict]:
    messages = []
    if node.get("system"):
        messages.append({"role": "system", "content": scope.render(node["system"])})
    messages.append({"role": "user", "content": prompt if prompt is not None else scope.render(node["prompt"])})
    return messages


class Execution:
    """Runs nodes for one RunContext. Handlers (nodes/*.py) call back into `run_node`, `call` and `span`."""

    def __init__(self, engine: Engine, ctx: RunContext, handlers: dict, measurers: dict | None = None):
        self.engine = engine
        self.ctx = ctx
        self.handlers = handlers  # node type -> handler (nodes.HANDLERS): handlers import this module
        self.measurers = measurers or {}  # confidence method -> measurer (nodes.MEASURERS), likewise
        self.completed: dict[str, dict] = ctx.meta.get("completed_steps") or {}
        # The final call's step key and where its deltas go, when the caller streams (see engine/workflow.py).
        self.stream_key: str | None = None
        self.final_stream = None

    # --- bookkeeping ------------------------------------------------------------------------------
    def reused(self, key: str) -> NodeResult | None:
        stored = self.completed.get(key)
        if stored is None:
            # A call that a fallback answered finished under `<key>.fallback<n>` (see Engine.call_model).
            stored = next((value for name, value in self.completed.items()
                           if name.startswith(f"{key}.fallback") and name[len(key) + 9:].isdigit()), None)
        return result_from_stored(stored) if stored is not None else None

    def check(self, next_cost_usd: float = 0.0) -> None:
        if self.ctx.meta.get("cancel_requested"):
            raise RunCancelled("the run was cancelled")
        self.ctx.check_limits(next_cost_usd)

    async def run_node(self, node: dict, scope: Scope) -> NodeResult:
        result = self.reused(node["id"])
        if result is None:
            self.check()
            result = await self.handlers[node["type"]](self, node, scope)
        else:
            # Later templates may read any node under this one: their stored outputs stand in too.
            for node_id in node_ids(node):
                if node_id in self.completed:
                    scope.outputs[node_id] = self.completed[node_id].get("output") or ""
        scope.outputs[node["id"]] = result.output
        return result

    @asynccontextmanager
    async def span(self, node: dict, scope: Scope, key: str | None = None):
        """Started/finished events around a composite node; a failure is recorded, a pause is not."""
        key = key or node["id"]
        span = Span(step_id=span_step_id(self.ctx.run_id, key), key=key, attributes=dict(scope.attributes))
        step: StepIdentity = {"run_id": self.ctx.run_id, "step_id": span.step_id, "parent_id": scope.parent_id,
                              "key": key, "node_id": node["id"], "node_type": node["type"], "model": "", "provider": ""}
        started_ms = now_ms()
        self.ctx.sink.emit(step_started(step=step, ts=started_ms, prompt=[]))
        started = time.perf_counter()
        try:
            yield span
        except StepFailed as exc:
            self.ctx.sink.emit(step_finished(step=step, ts=now_ms(), started_ts=started_ms, status="failed",
                                             error=str(exc), output="", confidence=None,
                                             latency_ms=(time.perf_counter() - started) * 1000, tokens_in=0,
                                             tokens_out=0, cost_usd=0.0, attributes=span.attributes))
            raise
        result = span.result
        result.latency_ms = (time.perf_counter() - started) * 1000
        measurement = result.measurement
        if measurement is not None:
            span.attributes.update(calibration_marker(measurement))
        self.ctx.sink.emit(step_finished(step={**step, "model": result.model}, ts=now_ms(), started_ts=started_ms,
                                         status="succeeded", error="", output=result.output,
                                         confidence=result.confidence, latency_ms=result.latency_ms,
                                         tokens_in=result.tokens_in, tokens_out=result.tokens_out,
                                         tokens_estimated=result.tokens_estimated, cost_usd=result.cost_usd,
                                         attributes=span.attributes,
                                         confidence_method=measurement.method if measurement else None,
                                         confidence_raw=measurement.raw if measurement else None))

    # --- model calls ----------------------------------------------------------------------------
    async def resolve(self, target: str, text: str, *, key: str, node_id: str,
                      parent_id: str | None) -> tuple[ModelSpec, dict]:
        """A model alias as is, or a route alias through its strategy."""
        registry = self.ctx.registry
        if target in registry.models:
            return registry.models[target], {}
        route = registry.routes.get(target)
        if route is None:
            raise StepFailed(f"unknown model or route alias '{target}'")
        try:
            return await resolve_route(route, registry, text=text, stats=self.ctx.meta.get("model_stats") or {},
                                       classify=self.classifier(key=key, node_id=node_id, parent_id=parent_id),
                                       data_class=self.ctx.data_class)
        except PolicyViolation as exc:  # no candidate may receive the run's data class: the step fails, saying so
            raise StepFailed(str(exc)) from exc

    def classifier(self, *, key: str, node_id: str, parent_id: str | None):
        async def classify(alias: str, prompt: str) -> NodeResult:
            return await self.call(alias, [{"role": "user", "content": prompt}], key=f"{key}/classify",
                                   node_id=node_id, parent_id=parent_id, attributes={"role": "classifier"})
        return classify

    def calibration_scope(self, node_id: str) -> str:
        """The step's name for calibration: "<workflow>/<node id>" (labels and calibrators use it)."""
        workflow = self.ctx.meta.get("workflow") or ""
        return f"{workflow}/{node_id}" if workflow else ""

    async def call(self, target: str | ModelSpec, messages: list[dict], *, key: str, node_id: str,
                   parent_id: str | None, params: dict | None = None, attributes: dict | None = None,
                   confidence: dict | None = None, decides: bool = False) -> NodeResult:
        """One model call as one step, or the stored result of a step this run already finished.

        `target` is a model alias, a route alias (resolved by its strategy) or an already chosen ModelSpec.
        Its confidence is measured as the model's method says, or the node's `confidence` override
        (engine/confidence.py); `decides`: a gate or cascade decides on it (what `auto` needs to know).
        """
        reused = self.reused(key)
        if reused is not None:
            return reused
        self.check()
        if isinstance(target, ModelSpec):
            model, route_attributes = target, {}
        else:
            model, route_attributes = await self.resolve(target, messages_text(messages[-1:]), key=key,
                                                         node_id=node_id, parent_id=parent_id)
        # "Would exceed": the prompt alone must fit in what is left of the budget.
        self.check(model.cost_usd(estimate_tokens(messages_text(messages)), 0))
        spec = model.confidence.overridden(confidence)
        method = resolve_method(spec, model.provider.kind, decides=decides)
        request = ChatRequest(messages=messages, params=dict(params or {}), want_logprobs=method == "logprobs")
        attributes = {**route_attributes, **(attributes or {})}
        scope = self.calibration_scope(node_id)
        try:
            if key == self.stream_key and self.final_stream is not None:
                # A stream is one answer as it comes: only its logprobs can measure it.
                return await self.stream_call(model, replace(request, want_logprobs=method != "prior"), key=key,
                                              node_id=node_id, parent_id=parent_id, attributes=attributes,
                                              confidence_scope=scope)
            if method in self.measurers:
                return await self.measurers[method](self, model, request, spec, key=key, node_id=node_id,
                                               parent_id=parent_id, attributes=attributes, scope=scope)
            return await self.engine.call_model(self.ctx, model, request, key=key, node_id=node_id,
                                                parent_id=parent_id, attributes=attributes, confidence_scope=scope,
                                                confidence_method=method)
        except PolicyViolation as exc:  # refused before any call: for a workflow, a failed step like any other
            raise StepFailed(str(exc)) from exc

    async def stream_call(self, model: ModelSpec, request: ChatRequest, *, key: str, node_id: str,
                          parent_id: str | None, attributes: dict, confidence_scope: str = "") -> NodeResult:
        """The final call, streamed to `final_stream`: same step events as `call_model`, no retries or cache."""
        stream = stream_model(self.engine, self.ctx, model, request, key=key, node_id=node_id, parent_id=parent_id,
                              attributes=attributes, confidence_scope=confidence_scope)
        try:
            async for delta in stream:
                await self.final_stream(delta)
        finally:
            await stream.aclose()  # a cancelled run records the step `cancelled` now, with what had arrived
        return stream.result

    async def route_call(self, strategy: str, candidates: list[str], options: dict, messages: list[dict], *,
                         key: str, node_id: str, parent_id: str | None, params: dict | None,
                         attributes: dict) -> NodeResult:
        """Choose among `candidates` by `strategy`, then call the choice (the others as its fallbacks)."""
        registry = self.ctx.registry
        specs = [registry.models[alias] for alias in candidates if alias in registry.models]
        text = messages_text(messages[-1:])
        request = RouteRequest(text=text, options=dict(options), stats=self.ctx.meta.get("model_stats") or {},
                               models=registry.models,
                               classify=self.classifier(key=key, node_id=node_id, parent_id=parent_id))
        try:
            choice = await choose(strategy, specs, request)
        except LookupError as exc:
            raise StepFailed(f"route {node_id}: {exc}") from exc
        model = registry.models.get(choice.model)
        if model is None:
            raise StepFailed(f"route {node_id}: the chosen model '{choice.model}' does not exist or is disabled")
        fallbacks = tuple(alias for alias in candidates if alias != model.alias and alias in registry.models)
        attributes.update({"strategy": strategy, **choice.attributes(), "fallback_order": list(fallbacks)})
        # The other candidates, in the order given, are this call's fallback chain.
        return await self.call(replace(model, fallbacks=fallbacks or model.fallbacks), messages, key=key,
                               node_id=node_id, parent_id=parent_id, params=params, attributes=attributes)


async def gather_branches(coroutines: list) -> list:
    """Run branches at once; results or StepFailed per branch. A pause, a limit or a cancel stops the lot."""
    outcomes = await asyncio.gather(*coroutines, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, StepFailed):
            raise outcome
    return outcomes

"""Nodes that end in one model's answer: call, route, cascade."""
from __future__ import annotations

from orchestration.engine.executor import NodeResult, StepFailed
from orchestration.engine.nodes.execution import Execution, Scope, messages_for, total


async def run_call(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    # A call node is its model call: one step, keyed by the node id.
    return await ex.call(node["model"], messages_for(node, scope), key=node["id"], node_id=node["id"],
                         parent_id=scope.parent_id, params=node.get("params"), attributes=dict(scope.attributes),
                         confidence=node.get("confidence"), decides=scope.decides)


async def run_route(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    async with ex.span(node, scope) as span:
        messages = messages_for(node, scope)
        key = f"{node['id']}/call"
        if "route" in node:
            result = await ex.call(node["route"], messages, key=key, node_id=node["id"], parent_id=span.step_id,
                                   params=node.get("params"), attributes=dict(scope.attributes),
                                   confidence=node.get("confidence"), decides=scope.decides)
        else:
            result = await ex.route_call(node["strategy"], node.get("candidates") or [], node.get("options") or {},
                                         messages, key=key, node_id=node["id"], parent_id=span.step_id,
                                         params=node.get("params"), attributes=dict(scope.attributes))
        span.attributes["chosen"] = result.model
        span.result = total(result.output, result.confidence, [result], model=result.model, measured=result)
    return span.result


async def run_cascade(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    """Tiers cheapest first; the next tier is tried while the answer's confidence is below the threshold.
    A tier's confidence is calibrated when its model has a calibrator (engine/confidence.py)."""
    threshold = float(node["threshold"])
    tiers = node["tiers"]
    async with ex.span(node, scope) as span:
        messages = messages_for(node, scope)
        tried, parts = [], []
        reason = "first tier"
        accepted: NodeResult | None = None
        for index, alias in enumerate(tiers):
            last = index == len(tiers) - 1
            try:
                result = await ex.call(alias, messages, key=f"{node['id']}/tier@{index}", node_id=node["id"],
                                       parent_id=span.step_id, params=node.get("params"),
                                       attributes={**scope.attributes, "tier": index, "tier_reason": reason},
                                       confidence=node.get("confidence"), decides=True)
            except StepFailed as exc:
                tried.append({"model": alias, "outcome": "failed", "reason": reason, "error": str(exc)[:200]})
                if last:
                    span.attributes.update({"tiers_tried": tried, "threshold": threshold})
                    raise StepFailed(f"cascade {node['id']}: every tier failed; last: {exc}", error=exc.error) from exc
                reason = f"tier {index} ({alias}) failed"
                continue
            parts.append(result)
            accepted = result
            if result.confidence >= threshold:
                tried.append({"model": result.model, "confidence": result.confidence, "outcome": "accepted",
                              "reason": reason, **_how(result)})
                break
            if last:
                tried.append({"model": result.model, "confidence": result.confidence,
                              "outcome": "accepted (last tier)", "reason": reason, **_how(result)})
                break
            tried.append({"model": result.model, "confidence": result.confidence, "outcome": "escalated",
                          "reason": reason, **_how(result)})
            reason = f"tier {index} ({result.model}) confidence {result.confidence:.2f} < {threshold:g}"
        span.attributes.update({"tiers_tried": tried, "threshold": threshold, "accepted": accepted.model})
        span.result = total(accepted.output, accepted.confidence, parts, model=accepted.model, measured=accepted)
    return span.result


def _how(result: NodeResult) -> dict:
    """The method and calibration behind a tier's confidence, for the cascade's record."""
    measurement = result.measurement
    return {"method": measurement.method, "calibrated": measurement.calibrated} if measurement else {}

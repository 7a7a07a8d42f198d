"""The gate: below its confidence threshold, the run waits for a person's decision."""
from __future__ import annotations

from orchestration.engine.executor import AwaitingReview, NodeResult, StepFailed
from orchestration.engine.nodes.execution import Execution, Scope, messages_for, total

HUMAN_CONFIDENCE = 1.0  # a person approved or wrote the output


def candidate(result: NodeResult) -> dict:
    return {"model": result.model, "output": result.output, "confidence": result.confidence,
            "cost_usd": result.cost_usd}


async def run_gate(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    """Decision keys: the gate's id for the first review, `<id>#2` for the review after an escalation."""
    node_id, threshold = node["id"], float(node["threshold"])
    decisions = ex.ctx.meta.get("decisions") or {}
    on_reject = node["on_reject"]
    async with ex.span(node, scope) as span:
        result = await ex.run_node(node["node"], scope.child(parent_id=span.step_id))
        parts, candidates = [result], [candidate(result)]
        round_, gate_key = 1, node_id
        span.attributes["threshold"] = threshold
        while True:
            decision = decisions.get(gate_key)
            if decision is not None:
                action = decision.get("action")
                span.attributes.update({"decision": action, "reviewer": decision.get("reviewer", ""),
                                        "review_key": gate_key})
                if action in ("approve", "edit"):
                    output = decision.get("output") or result.output
                    span.result = total(output, HUMAN_CONFIDENCE, parts, model=result.model)
                    return span.result
                target = on_reject.get("escalate") if isinstance(on_reject, dict) else None
                if target is None or round_ > 1:
                    who = decision.get("reviewer") or "a reviewer"
                    raise StepFailed(f"gate {node_id}: rejected by {who}"
                                     + (" after escalation" if round_ > 1 else ""))
                result = await ex.call(target, messages_for(node, scope), key=f"{node_id}/escalate#{round_}",
                                       node_id=node_id, parent_id=span.step_id,
                                       attributes={**scope.attributes, "iteration": round_, "role": "escalation"})
                parts.append(result)
                candidates.append(candidate(result))
                round_ += 1
                gate_key = f"{node_id}#{round_}"
                span.attributes["escalated_to"] = result.model
                continue
            if result.confidence >= threshold:
                span.attributes["passed"] = f"confidence {result.confidence:.2f} >= {threshold:g}"
                span.result = total(result.output, result.confidence, parts, model=result.model)
                return span.result
            detail = f"confidence {result.confidence:.2f} < threshold {threshold:g}"
            raise AwaitingReview(
                gate_key, node_id, "low_confidence", candidates,
                {"prompt": scope.render(node["prompt"]), "input": scope.input, "node_id": node_id,
                 "threshold": threshold, "confidence": result.confidence, "why": detail,
                 "metadata": ex.ctx.meta.get("run_metadata") or {}},
                due_in_s=node.get("due_in_s"), default_action=node["default_action"], detail=detail)

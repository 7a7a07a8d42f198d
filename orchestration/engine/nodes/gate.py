"""The gate: an answer it cannot accept waits for a person's decision.

The rule is a plain `threshold` on the answer's confidence, or a target risk `max_error_rate`: accept only
when the calibrated probability that the answer is wrong is at most the target — by its 95 % upper bound,
so that a calibrator fitted on few labels errs towards review. An answer without a
calibrated probability (too few reviewed answers yet, or not measured at all) cannot meet a target risk,
so it goes to a person, whose decision becomes a label the next calibration learns from.
"""
from __future__ import annotations

from orchestration.engine.confidence import describe
from orchestration.engine.executor import AwaitingReview, NodeResult, StepFailed
from orchestration.engine.policy import needs_redaction, redact_json
from orchestration.engine.nodes.execution import Execution, Scope, messages_for, total

HUMAN_CONFIDENCE = 1.0  # a person approved or wrote the output


def candidate(result: NodeResult) -> dict:
    return {"model": result.model, "output": result.output, "confidence": result.confidence,
            "cost_usd": result.cost_usd, **measurement_fields(result)}


def measurement_fields(result: NodeResult) -> dict:
    """How the candidate's confidence was measured, as the review shows it and its label records it."""
    m = result.measurement
    if m is None:
        return {}
    return {"confidence_method": m.method, "confidence_raw": m.raw, "calibrated": m.calibrated,
            "confidence_low": m.confidence_low,
            "calibration_labels": m.labels, "confidence_scope": m.scope,
            "how_sure": describe(m.method, m.raw, m.confidence, m.calibrated, m.labels)}


def accepts(node: dict, result: NodeResult) -> tuple[bool, str]:
    """(whether the gate's rule accepts the answer, why, in words)."""
    target = node.get("max_error_rate")
    if target is None:
        threshold = float(node["threshold"])
        if result.confidence >= threshold:
            return True, f"confidence {result.confidence:.2f} >= {threshold:g}"
        return False, f"confidence {result.confidence:.2f} < threshold {threshold:g}"
    m = result.measurement
    if m is None or not m.calibrated:
        method = m.method if m else "none"
        return False, (f"no calibrated probability for {result.model or 'this answer'} (method {method}) "
                       f"to hold the error target {target:g}: a person decides")
    # The 95 % bound, not the estimate: a calibrator unsure of its top end sends answers to review.
    p_wrong = 1.0 - m.confidence
    bound = 1.0 - (m.confidence_low if m.confidence_low is not None else m.confidence)
    if bound <= target:
        return True, f"calibrated P(wrong) {p_wrong:.3f}, at most {bound:.3f} (95 % bound) <= target {target:g}"
    return False, f"calibrated P(wrong) {p_wrong:.3f}, up to {bound:.3f} (95 % bound) > target {target:g}"


async def run_gate(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    """Decision keys: the gate's id for the first review, `<id>#2` for the review after an escalation."""
    node_id = node["id"]
    decisions = ex.ctx.meta.get("decisions") or {}
    on_reject = node["on_reject"]
    async with ex.span(node, scope) as span:
        result = await ex.run_node(node["node"], scope.child(parent_id=span.step_id, decides=True))
        parts, candidates = [result], [candidate(result)]
        round_, gate_key = 1, node_id
        if node.get("max_error_rate") is not None:
            span.attributes["max_error_rate"] = node["max_error_rate"]
        else:
            span.attributes["threshold"] = float(node["threshold"])
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
                if round_ > 1:
                    who = decision.get("reviewer") or "a reviewer"
                    raise StepFailed(f"gate {node_id}: rejected by {who} after escalation")
                if target is None:
                    if decision.get("escalate"):
                        # Expired with default_action "escalate" and nowhere to escalate to: a second review
                        # (a fresh item, due again) rather than the reject a "fail" policy would apply.
                        round_ += 1
                        gate_key = f"{node_id}#{round_}"
                        span.attributes["escalated_to"] = "review"
                        continue
                    who = decision.get("reviewer") or "a reviewer"
                    raise StepFailed(f"gate {node_id}: rejected by {who}")
                result = await ex.call(target, messages_for(node, scope), key=f"{node_id}/escalate#{round_}",
                                       node_id=node_id, parent_id=span.step_id, decides=True,
                                       attributes={**scope.attributes, "iteration": round_, "role": "escalation"})
                parts.append(result)
                candidates.append(candidate(result))
                round_ += 1
                gate_key = f"{node_id}#{round_}"
                span.attributes["escalated_to"] = result.model
                continue
            passed, why = accepts(node, result)
            if passed:
                span.attributes["passed"] = why
                span.result = total(result.output, result.confidence, parts, model=result.model, measured=result)
                return span.result
            shown = {"prompt": scope.render(node["prompt"]), "input": scope.input}
            if not all(ex.ctx.registry.models.get(c["model"]) is not None
                       and not needs_redaction(ex.ctx.registry.models[c["model"]].provider) for c in candidates):
                shown = redact_json(shown, {})  # the review keeps the prompt as the (non-local) models saw it
            raise AwaitingReview(
                gate_key, node_id, "low_confidence", candidates,
                {**shown, "node_id": node_id,
                 "threshold": node.get("threshold"), "max_error_rate": node.get("max_error_rate"),
                 "confidence": result.confidence, "why": why, **measurement_fields(result),
                 "metadata": ex.ctx.meta.get("run_metadata") or {}},
                due_in_s=node.get("due_in_s"), default_action=node["default_action"], detail=why)

"""Measured confidence that takes more than one call: self-consistency samples and a verifier's verdict.

Each is a span (node_type "measure") under the caller, keyed as the call would have been, so a finished
measurement is reused on resume like any step; its children are the model calls (`<key>/sample@<i>`,
`<key>/answer`, `<key>/verify`), each a step of its own with its cost. The span carries the answer, the
measured confidence, the method and the raw signal.
"""
from __future__ import annotations

from dataclasses import replace

from orchestration.engine.confidence import (ConfidenceSpec, VerdictUnreadable, agreement, calibrate, parse_verdict,
                                             verifier_prompt)
from orchestration.engine.executor import NodeResult, StepFailed
from orchestration.engine.nodes.execution import Execution, Scope, gather_branches, total
from orchestration.engine.types import ChatRequest, ModelSpec, messages_text


async def by_agreement(ex: Execution, model: ModelSpec, request: ChatRequest, spec: ConfidenceSpec, *, key: str,
                       node_id: str, parent_id: str | None, attributes: dict, scope: str) -> NodeResult:
    """k samples at once; the answer the others agree with most, and how much they agree."""
    sample_request = replace(request, params={**request.params, "temperature": spec.temperature},
                             want_logprobs=False)
    async with ex.span({"id": node_id, "type": "measure"}, _scope(parent_id, attributes), key=key) as span:
        async def sample(index: int) -> NodeResult:
            sample_key = f"{key}/sample@{index}"
            return ex.reused(sample_key) or await ex.engine.call_model(
                ex.ctx, model, sample_request, key=sample_key, node_id=node_id, parent_id=span.step_id,
                attributes={**attributes, "role": "sample", "sample": index}, cache=False, confidence_method="prior")

        outcomes = await gather_branches([sample(index) for index in range(spec.samples)])
        answered = [outcome for outcome in outcomes if isinstance(outcome, NodeResult)]
        if not answered:
            last = outcomes[-1]
            raise StepFailed(f"every one of {spec.samples} samples failed; last: {last}", error=last.error)
        chosen_index, share, signals = agreement([result.output for result in answered])
        signals["failed_samples"] = spec.samples - len(answered)
        chosen = answered[chosen_index]
        measurement = calibrate(ex.ctx.calibrations, model.alias, "self_consistency", scope, share)
        span.attributes.update(method="self_consistency", confidence_signals=signals, temperature=spec.temperature)
        result = total(chosen.output, measurement.confidence, answered, model=chosen.model)
        result.measurement, result.tool_calls, result.finish_reason = measurement, chosen.tool_calls, chosen.finish_reason
        span.result = result
    return span.result


async def by_verifier(ex: Execution, model: ModelSpec, request: ChatRequest, spec: ConfidenceSpec, *, key: str,
                      node_id: str, parent_id: str | None, attributes: dict, scope: str) -> NodeResult:
    """The answer, then a judge model's score for it with a fixed rubric. An unreadable or failed verdict is
    recorded on the span and the answer keeps the model's prior, shown as not measured."""
    async with ex.span({"id": node_id, "type": "measure"}, _scope(parent_id, attributes), key=key) as span:
        answer_key = f"{key}/answer"
        answer = ex.reused(answer_key) or await ex.engine.call_model(
            ex.ctx, model, replace(request, want_logprobs=False), key=answer_key, node_id=node_id,
            parent_id=span.step_id, attributes={**attributes, "role": "answer"}, confidence_method="prior")
        parts = [answer]
        span.attributes["method"] = "verifier"
        try:
            judge = ex.ctx.registry.models.get(spec.verifier)
            if judge is None:
                raise LookupError(f"the verifier model '{spec.verifier}' does not exist or is disabled")
            prompt = verifier_prompt(messages_text(request.messages), answer.output)
            verdict = await ex.call(judge, [{"role": "user", "content": prompt}], key=f"{key}/verify",
                                    node_id=node_id, parent_id=span.step_id, params={"temperature": 0},
                                    attributes={**attributes, "role": "verifier"}, confidence={"method": "prior"})
            parts.append(verdict)
            score = parse_verdict(verdict.output)
            measurement = calibrate(ex.ctx.calibrations, model.alias, "verifier", scope, score)
            span.attributes["confidence_signals"] = {"statistic": "verifier_score", "value": score,
                                                     "verifier": judge.alias}
        except (StepFailed, LookupError, VerdictUnreadable) as exc:
            measurement = calibrate(None, model.alias, "prior", scope, model.quality_prior)
            span.attributes["confidence_error"] = f"verifier: {exc}"[:500]
        result = total(answer.output, measurement.confidence, parts, model=answer.model)
        result.measurement, result.tool_calls, result.finish_reason = measurement, answer.tool_calls, answer.finish_reason
        span.result = result
    return span.result


def _scope(parent_id: str | None, attributes: dict) -> Scope:
    return Scope(input="", previous="", outputs={}, parent_id=parent_id, attributes=dict(attributes))


MEASURERS = {"self_consistency": by_agreement, "verifier": by_verifier}

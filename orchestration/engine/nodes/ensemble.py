"""Nodes over several children: sequence (in order) and parallel (at once, then combined)."""
from __future__ import annotations

import re
import unicodedata

from orchestration.engine.executor import NodeResult, StepFailed
from orchestration.engine.nodes.execution import Execution, Scope, gather_branches, total
from orchestration.engine.replies import parse_json_object, parse_score

JUDGE_MARKER = "Score the candidate answers"
MERGE_MARKER = "Merge the candidate answers"


async def run_sequence(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    async with ex.span(node, scope) as span:
        inner = scope.child(parent_id=span.step_id)
        parts: list[NodeResult] = []
        for step in node["steps"]:
            result = await ex.run_node(step, inner)
            parts.append(result)
            inner = inner.child(previous=result.output)
        last = parts[-1]
        span.result = total(last.output, last.confidence, parts, model=last.model, measured=last)
    return span.result


async def run_parallel(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    combine = node["combine"]
    async with ex.span(node, scope) as span:
        branches = node["branches"]
        outcomes = await gather_branches([
            ex.run_node(branch, scope.child(parent_id=span.step_id, branch=index))
            for index, branch in enumerate(branches)
        ])
        results = [o for o in outcomes if isinstance(o, NodeResult)]
        failed = [{"branch": index, "node_id": branches[index]["id"], "error": str(o)[:200]}
                  for index, o in enumerate(outcomes) if not isinstance(o, NodeResult)]
        span.attributes.update({"combine": combine["strategy"], "branches": len(branches),
                                "succeeded": len(results)})
        if failed:
            span.attributes["failed_branches"] = failed
        if len(results) < combine.get("min_success", 1):
            raise StepFailed(f"parallel {node['id']}: {len(results)} of {len(branches)} branches succeeded, "
                             f"{combine.get('min_success', 1)} needed; first error: {failed[0]['error']}")
        strategy = COMBINERS[combine["strategy"]]
        span.result = await strategy(ex, node, scope.child(parent_id=span.step_id), results, span.attributes)
    return span.result


def normalize_answer(text: str) -> str:
    """Case, accents, punctuation and spacing do not make two answers different."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


def _groups(results: list[NodeResult], weight) -> list[tuple[str, list[NodeResult], float]]:
    groups: dict[str, list[NodeResult]] = {}
    for result in results:
        groups.setdefault(normalize_answer(result.output), []).append(result)
    scored = [(answer, members, sum(weight(m) for m in members)) for answer, members in groups.items()]
    return sorted(scored, key=lambda g: (-g[2], -max(m.confidence for m in g[1])))


def _representative(members: list[NodeResult]) -> NodeResult:
    return max(members, key=lambda m: m.confidence)


async def combine_majority(ex, node, scope, results, attributes) -> NodeResult:
    groups = _groups(results, weight=lambda m: 1.0)
    answer, members, votes = groups[0]
    attributes.update({"votes": [{"answer": a[:80], "count": int(w)} for a, _, w in groups],
                       "agreement": votes / len(results)})
    winner = _representative(members)
    return total(winner.output, votes / len(results), results, model=winner.model)


async def combine_weighted(ex, node, scope, results, attributes) -> NodeResult:
    models = ex.ctx.registry.models

    def weight(m: NodeResult) -> float:
        quality = models[m.model].quality_prior if m.model in models else 1.0
        return m.confidence * quality

    groups = _groups(results, weight=weight)
    answer, members, best = groups[0]
    overall = sum(w for _, _, w in groups)
    attributes.update({"weights": [{"answer": a[:80], "weight": round(w, 4)} for a, _, w in groups]})
    winner = _representative(members)
    return total(winner.output, best / overall if overall else 0.0, results, model=winner.model)


def _numbered(results: list[NodeResult]) -> str:
    return "\n\n".join(f"Candidate {i}:\n{r.output}" for i, r in enumerate(results, start=1))


async def combine_judge(ex, node, scope, results, attributes) -> NodeResult:
    """A judge model scores the candidates and picks one (or writes a better answer)."""
    combine = node["combine"]
    task = scope.render(node["prompt"])
    prompt = (f"{JUDGE_MARKER} below for the task, pick the best one and score it from 0 to 1. Reply with JSON "
              f'only: {{"best": <candidate number>, "score": <0..1>, "answer": "<optional better answer>"}}.'
              f"\n\nTask:\n{task}\n\n{_numbered(results)}")
    if combine.get("instructions"):
        prompt += "\n\n" + scope.render(combine["instructions"])
    verdict = await ex.call(combine["model"], [{"role": "user", "content": prompt}], key=f"{node['id']}/judge",
                            node_id=node["id"], parent_id=scope.parent_id, attributes={"role": "judge"})
    reply = parse_json_object(verdict.output) or {}
    best = reply.get("best")
    if isinstance(best, str) and best.strip().isdigit():
        best = int(best)
    score = parse_score(verdict.output)
    parts = [*results, verdict]
    if not (isinstance(best, int) and 1 <= best <= len(results)):
        attributes["judge_unparsed"] = True
        fallback = await combine_weighted(ex, node, scope, results, attributes)
        return total(fallback.output, fallback.confidence, parts, model=fallback.model)
    chosen = results[best - 1]
    written = reply.get("answer")
    confidence = score if score is not None else verdict.confidence
    attributes.update({"judge": verdict.model, "best": best, "judge_score": confidence, "judged_model": chosen.model,
                       "judge_wrote_answer": bool(isinstance(written, str) and written.strip())})
    if isinstance(written, str) and written.strip():
        return total(written.strip(), confidence, parts, model=verdict.model)
    return total(chosen.output, confidence, parts, model=chosen.model)


async def combine_merge(ex, node, scope, results, attributes) -> NodeResult:
    """A model merges the unique points of every candidate into one answer."""
    combine = node["combine"]
    task = scope.render(node["prompt"])
    prompt = (f"{MERGE_MARKER} into one answer to the task that keeps every unique point and drops repetition. "
              f"Reply with the merged answer only.\n\nTask:\n{task}\n\n{_numbered(results)}")
    if combine.get("instructions"):
        prompt += "\n\n" + scope.render(combine["instructions"])
    merged = await ex.call(combine["model"], [{"role": "user", "content": prompt}], key=f"{node['id']}/merge",
                           node_id=node["id"], parent_id=scope.parent_id, attributes={"role": "merger"})
    confidence = sum(r.confidence for r in results) / len(results)
    attributes["merged_by"] = merged.model
    return total(merged.output, confidence, [*results, merged], model=merged.model)


COMBINERS = {
    "majority": combine_majority,
    "weighted": combine_weighted,
    "judge": combine_judge,
    "merge": combine_merge,
}

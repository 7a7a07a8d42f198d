"""Nodes that iterate or fan out dynamically: refine (generate, critique, improve) and supervisor."""
from __future__ import annotations

from orchestration.engine.executor import NodeResult, StepFailed
from orchestration.engine.nodes.execution import Execution, Scope, gather_branches, messages_for, total
from orchestration.engine.replies import parse_score, parse_subtasks

CRITIQUE_MARKER = "Critique the answer"
IMPROVE_MARKER = "Improve the answer"
PLAN_MARKER = "Return the subtasks as JSON"
SYNTHESIZE_MARKER = "Compose the final answer"


async def run_refine(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    """generate -> critique/score -> improve, until score >= threshold or max_iterations answers."""
    threshold, limit = float(node["threshold"]), int(node["max_iterations"])
    node_id = node["id"]
    async with ex.span(node, scope) as span:
        task = scope.render(node["prompt"])
        parts, scores = [], []
        answer = await ex.call(node["model"], messages_for(node, scope, task), key=f"{node_id}/generate#1",
                               node_id=node_id, parent_id=span.step_id, params=node.get("params"),
                               attributes={**scope.attributes, "iteration": 1, "role": "generate"})
        parts.append(answer)
        for iteration in range(1, limit + 1):
            critique = await ex.call(
                node["critic"],
                [{"role": "user", "content": f"{CRITIQUE_MARKER} to the task below, then score it from 0 to 1. "
                  f'Reply with JSON: {{"score": <0..1>, "critique": "<what to improve>"}}.'
                  f"\n\nTask:\n{task}\n\nAnswer:\n{answer.output}"}],
                key=f"{node_id}/critique#{iteration}", node_id=node_id, parent_id=span.step_id,
                attributes={**scope.attributes, "iteration": iteration, "role": "critic"})
            parts.append(critique)
            parsed = parse_score(critique.output)
            score = parsed if parsed is not None else critique.confidence
            scores.append(round(score, 4))
            if score >= threshold or iteration == limit:
                stopped = "score reached threshold" if score >= threshold else "max iterations reached"
                break
            answer = await ex.call(
                node["model"],
                messages_for(node, scope, f"{IMPROVE_MARKER} to the task using the critique. Reply with the "
                             f"improved answer only.\n\nTask:\n{task}\n\nAnswer:\n{answer.output}"
                             f"\n\nCritique:\n{critique.output}"),
                key=f"{node_id}/improve#{iteration + 1}", node_id=node_id, parent_id=span.step_id,
                params=node.get("params"), attributes={**scope.attributes, "iteration": iteration + 1,
                                                        "role": "improve"})
            parts.append(answer)
        span.attributes.update({"scores": scores, "iterations": len(scores), "threshold": threshold,
                                "stopped": stopped})
        span.result = total(answer.output, scores[-1], parts, model=answer.model)
    return span.result


def planner_prompt(task: str, limit: int) -> str:
    return (f"Split the task below into at most {limit} independent subtasks that workers can do in parallel. "
            f'{PLAN_MARKER}, and nothing else: {{"subtasks": ["...", "..."]}}.\n\nTask:\n{task}')


async def run_supervisor(ex: Execution, node: dict, scope: Scope) -> NodeResult:
    """A planner splits the task (JSON; one retry), workers run the subtasks at once, a synthesizer composes."""
    node_id, limit = node["id"], int(node["max_subtasks"])
    workers = node["workers"]
    async with ex.span(node, scope) as span:
        task = scope.render(node["prompt"])
        parts, subtasks = [], None
        messages = messages_for(node, scope, planner_prompt(task, limit))
        for attempt in (1, 2):
            plan = await ex.call(node["planner"], messages, key=f"{node_id}/plan#{attempt}", node_id=node_id,
                                 parent_id=span.step_id, params=node.get("params"),
                                 attributes={**scope.attributes, "iteration": attempt, "role": "planner"})
            parts.append(plan)
            subtasks = parse_subtasks(plan.output, limit)
            if subtasks:
                break
            messages = messages + [{"role": "assistant", "content": plan.output},
                                   {"role": "user", "content": f"That was not valid JSON. {PLAN_MARKER} exactly "
                                    f'like {{"subtasks": ["first subtask", "second subtask"]}}.'}]
        span.attributes["plan_attempts"] = attempt
        if not subtasks:
            raise StepFailed(f"supervisor {node_id}: the planner ({node['planner']}) did not return valid JSON "
                             f"subtasks after 2 attempts; last reply began: {plan.output[:120]!r}")
        span.attributes["subtasks"] = subtasks
        outcomes = await gather_branches([
            ex.call(workers[index % len(workers)],
                    messages_for(node, scope, f"You are one worker on a larger task.\n\nTask:\n{task}\n\n"
                                 f"Your subtask:\n{subtask}"),
                    key=f"{node_id}/worker@{index}", node_id=node_id, parent_id=span.step_id,
                    params=node.get("params"),
                    attributes={**scope.attributes, "branch": index, "role": "worker", "subtask": subtask[:200]})
            for index, subtask in enumerate(subtasks)
        ])
        done = [(subtasks[i], o) for i, o in enumerate(outcomes) if isinstance(o, NodeResult)]
        if not done:
            raise StepFailed(f"supervisor {node_id}: every worker failed; first error: {outcomes[0]}")
        if len(done) < len(subtasks):
            span.attributes["failed_workers"] = [i for i, o in enumerate(outcomes) if not isinstance(o, NodeResult)]
        parts.extend(result for _, result in done)
        results_text = "\n\n".join(f"Subtask: {subtask}\nResult:\n{result.output}" for subtask, result in done)
        final = await ex.call(
            node["synthesizer"],
            messages_for(node, scope, f"{SYNTHESIZE_MARKER} to the task from the workers' results.\n\n"
                         f"Task:\n{task}\n\n{results_text}"),
            key=f"{node_id}/synthesize", node_id=node_id, parent_id=span.step_id, params=node.get("params"),
            attributes={**scope.attributes, "role": "synthesizer"})
        parts.append(final)
        span.result = total(final.output, final.confidence, parts, model=final.model, measured=final)
    return span.result

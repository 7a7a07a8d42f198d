"""The one record of a /v1 call: its Run and Step rows to the batched writer, and its live `run.updated`.

No database write in the request path: the rows are plain values (recording.Row) the writer inserts later.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from orchestration import live
from orchestration.access.apikeys import KeyInfo
from orchestration.engine.events import now_ms, run_updated
from orchestration.engine.executor import StepFailed
from orchestration.engine.policy import PolicyViolation
from orchestration.errors import GatewayError
from orchestration.gateway.writer import writer
from orchestration.models import Run
from orchestration.models.runs import RunStatus
from orchestration.recording import Row, money, ms_to_datetime, step_row, steps_all_local, stored_input


def publish_call_started(*, run_id: str, started_ms: float, model_name: str, kind: str, key: KeyInfo) -> None:
    live.publish(run_updated(ts=started_ms, run_id=run_id, status=RunStatus.RUNNING, target=model_name, kind=kind,
                             api_key=key.prefix, team=key.team_id))


def record_call(*, run_id: str, kind: str, model_name: str, key: KeyInfo, status: str, input: dict, output: str,
                confidence: float | None, tokens_in: int, tokens_out: int, spent_usd: float, latency_ms: float,
                error: str, metadata: dict, started_ms: float, steps: list[dict], registry=None,
                finished_ms: float | None = None) -> None:
    """Hand a finished call's run and its finished steps (`step.finished` events) to the batched writer, then
    publish where the run ended. The input is stored redacted when the policy redacted what went upstream
    (recording.stored_input; metadata `input_redacted` has the counts per kind). Without the call's `registry`
    nothing says its models were local: the input is stored redacted."""
    input, redacted = stored_input(input, all_local=registry is not None and steps_all_local(steps, registry))
    if redacted:
        metadata = {**metadata, "input_redacted": redacted}
    finished_ms = now_ms() if finished_ms is None else finished_ms  # a call recorded after its answer: when it ended
    started_at = ms_to_datetime(started_ms)
    run = Row(Run, id=run_id, kind=kind, target=model_name, api_key_id=key.id, team_id=key.team_id, status=status,
              input=input, output=output, confidence=confidence, tokens_in=tokens_in, tokens_out=tokens_out,
              cost_usd=money(spent_usd), latency_ms=latency_ms, error=error, metadata=metadata,
              created_at=started_at, started_at=started_at, finished_at=ms_to_datetime(finished_ms))
    writer.add(run, [step_row(event) for event in steps])
    live.publish(run_updated(ts=finished_ms, run_id=run_id, status=status, target=model_name, kind=kind,
                             api_key=key.prefix, team=key.team_id, cost_usd=spent_usd, latency_ms=latency_ms,
                             tokens_in=tokens_in, tokens_out=tokens_out))


def record_later(record: Callable[[], None]) -> Callable[[], None]:
    """`record` (a `record_call`), to be called once, after the call's answer is sent (`ChatOutcome.answered`):
    until then the writer holds a promise for it, so that a flush (a test's, a shutdown's) includes every call
    already answered."""
    ticket = writer.expect()

    def record_now() -> None:
        try:
            record()
        finally:
            writer.fulfilled(ticket)
    return record_now


Result = TypeVar("Result")


async def attempt_call(call: Awaitable[Result]) -> tuple[Result | None, str, PolicyViolation | None]:
    """Await a model call: (its result, "", None), or (None, why it failed, the policy's refusal when it was one).
    Either way the caller records the call (`record_call`): a failure before it answers, a result at the latest
    once its answer is sent."""
    try:
        return await call, "", None
    except StepFailed as exc:
        return None, str(exc), None
    except PolicyViolation as exc:  # refused before any call
        return None, str(exc), exc


def failed_call_error(*, error: str, refused: PolicyViolation | None, run_id: str) -> GatewayError:
    """What a recorded call that produced no result answers: the policy's refusal, else the upstream's failure."""
    if refused is not None:
        return GatewayError(error, code=refused.code, type="permission_error", param="podium.data_class",
                            run_id=run_id)
    return GatewayError(f"The upstream model failed: {error}", code="upstream_error", type="api_error", run_id=run_id)

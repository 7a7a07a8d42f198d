"""Turning engine events into Run/Step rows: for the durable sink of workflow runs (runs/sink.py) and the
batched writer of the /v1 hot path (gateway/writer.py)."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from orchestration.engine.events import STEP_MARKERS, StepFinished
from orchestration.engine.policy import redact_json
from orchestration.models import Provider, Step


def ms_to_datetime(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def money(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.00000001"))


class Row(dict):
    """An unsaved row as plain values by attribute name (`Row(Run, id=..., api_key_id=...)`), readable like a
    model instance (`row.tokens_in`; a field left out reads as its default). The hot path hands these to the
    writer: building a Model instance costs about ten times more, and the writer only needs the values."""

    __slots__ = ("model",)

    def __init__(self, model, values=(), **fields):
        super().__init__(values, **fields)
        self.model = model

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            pass
        try:
            return self.model._meta.get_field(name).get_default()
        except Exception:
            raise AttributeError(name) from None


def step_values(event: StepFinished) -> dict:
    attributes = dict(event.get("attributes") or {})
    for name in STEP_MARKERS:  # those a step event carries at its top level (fallback_from, tokens_estimated)
        if event.get(name) not in (None, False, ""):
            attributes.setdefault(name, event[name])
    return dict(
        id=event["step_id"], run_id=event["run_id"], parent_id=event.get("parent_id"), key=event["key"],
        node_id=event.get("node_id", ""), node_type=event.get("node_type", "call"),
        model_alias=event.get("model") or "", provider=event.get("provider") or "",
        status=event["status"], prompt=event.get("prompt") or [], output=event.get("output") or "",
        confidence=event.get("confidence"), confidence_method=event.get("confidence_method") or "",
        confidence_raw=event.get("confidence_raw"), tokens_in=event.get("tokens_in", 0),
        tokens_out=event.get("tokens_out", 0), tokens_estimated=bool(event.get("tokens_estimated")),
        cost_usd=money(event.get("cost_usd", 0.0)), latency_ms=event.get("latency_ms"),
        error=event.get("error") or "", attributes=attributes,
        started_at=ms_to_datetime(event.get("started_ts", event["ts"])), finished_at=ms_to_datetime(event["ts"]),
    )


def step_from_event(event: StepFinished) -> Step:
    """A `step.finished` event as an unsaved Step row."""
    return Step(**step_values(event))


def step_row(event: StepFinished) -> Row:
    """A `step.finished` event as a Row for the batched writer (the hot path's `step_from_event`)."""
    return Row(Step, step_values(event))


# --- what a run stores of its input --------------------------------------------------------------------
def stored_input(run_input, *, all_local: bool) -> tuple[object, dict[str, int]]:
    """A run's input as it is stored: as written when every model the run called is on a local provider (the
    policy redacts nothing for those), else redacted as the policy redacts what goes upstream, so the stored
    prompt is the text a cloud provider saw. A run refused before any call counts as not local. Returns the
    input and the counts per kind (empty: nothing to redact)."""
    if all_local:
        return run_input, {}
    counts: dict[str, int] = {}
    redacted = redact_json(run_input, counts)
    return (redacted, counts) if counts else (run_input, counts)


def steps_all_local(steps: list[dict], registry) -> bool:
    """Whether a call's finished steps (`step.finished` events) all went to models on local providers."""
    models = [registry.models.get(step.get("model") or "") for step in steps]
    return bool(models) and all(model is not None and model.provider.is_local for model in models)


def workflow_steps_all_local(run_id) -> bool:
    """Whether every model call of a stored run went to a local provider (False for a run that made none)."""
    names = set(Step.objects.filter(run_id=run_id).exclude(provider="").values_list("provider", flat=True))
    return bool(names) and Provider.objects.filter(name__in=names, is_local=True).count() == len(names)

"""The calibrators as the engine reads them: a per-process snapshot, reloaded at most every RELOAD_S.

Calibrators change when the periodic job refits them (every few minutes); a process picks the new ones
up within RELOAD_S, and at once when the refit ran in it. Reading them costs one query per RELOAD_S,
never one per request."""
from __future__ import annotations

import logging
import time

from asgiref.sync import sync_to_async

from orchestration.engine.calibration import Calibrations, from_rows
from orchestration.models import Calibrator

logger = logging.getLogger(__name__)

RELOAD_S = 30.0
_state: dict = {"snapshot": None, "loaded_at": 0.0}

FIELDS = ("model_alias", "scope", "method", "mapping", "samples", "ece_raw", "ece", "brier_raw", "brier")


def load_calibrations() -> Calibrations:
    """Read every calibrator now (sync: call through sync_to_async from async code)."""
    try:
        rows = [dict(row) for row in Calibrator.objects.values(*FIELDS)]
        snapshot = from_rows(rows)
    except Exception:  # a database hiccup keeps the last snapshot: calibration refines, it must not fail calls
        logger.warning("calibrators could not be loaded", exc_info=True)
        snapshot = _state["snapshot"] or Calibrations()
    _state["snapshot"], _state["loaded_at"] = snapshot, time.monotonic()
    return snapshot


def cached_calibrations() -> Calibrations | None:
    """The snapshot if it is fresh enough to use without touching the database."""
    if _state["snapshot"] is not None and time.monotonic() - _state["loaded_at"] < RELOAD_S:
        return _state["snapshot"]
    return None


def forget() -> None:
    """Reload on next use (after a refit in this process)."""
    _state["loaded_at"] = 0.0


async def current_calibrations() -> Calibrations:
    """The snapshot, from memory while fresh (no database in a request path but once per RELOAD_S)."""
    snapshot = cached_calibrations()  # an empty snapshot is falsy: test for None, not truth
    return snapshot if snapshot is not None else await sync_to_async(load_calibrations)()

"""The periodic job that fits calibrators from review labels (`recalibrate`).

Per (model, method) over all its labels, and per (model, workflow step, method) where that step alone has
PODIUM_CALIBRATION_MIN_LABELS; the engine uses the step's calibrator first, else the model's. Only the
latest PODIUM_CALIBRATION_MAX_LABELS of a group count, so a model that changes is followed. scikit-learn is
imported here, in the job, never by a request (~0.6 s; bench/confidence_sim.py measures it).
"""
from __future__ import annotations

from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orchestration.calibration.store import forget
from orchestration.models import Calibrator, ConfidenceLabel


def recalibrate() -> int:
    """Refit every calibrator that has labels; the number written."""
    from orchestration.engine.calibration_fit import fit_calibrator  # scikit-learn: only when the job runs

    min_labels = settings.PODIUM_CALIBRATION_MIN_LABELS
    newest = settings.PODIUM_CALIBRATION_MAX_LABELS
    groups: dict[tuple[str, str, str], list[tuple[float, bool]]] = defaultdict(list)
    rows = (ConfidenceLabel.objects.filter(source=ConfidenceLabel.Source.REVIEW).order_by("-created_at")
            .values_list("model_alias", "scope", "method", "raw", "correct"))
    for alias, scope, method, raw, correct in rows.iterator():
        for key in ((alias, "", method), (alias, scope, method)) if scope else ((alias, "", method),):
            if len(groups[key]) < newest:
                groups[key].append((raw, correct))
    now = timezone.now()
    written = 0
    with transaction.atomic():
        for (alias, scope, method), labels in groups.items():
            if scope and len(labels) < min_labels:
                continue  # too few for the step alone: the model's calibrator serves it
            fitted = fit_calibrator([raw for raw, _ in labels], [correct for _, correct in labels],
                                    min_samples=min_labels)
            Calibrator.objects.update_or_create(
                model_alias=alias, scope=scope, method=method,
                defaults={"mapping": fitted["mapping"], "samples": fitted["samples"], "ece_raw": fitted["ece_raw"],
                          "ece": fitted["ece"], "brier_raw": fitted["brier_raw"], "brier": fitted["brier"],
                          "bins_raw": fitted["bins_raw"], "bins": fitted["bins"], "fitted_at": now})
            written += 1
    forget()
    return written

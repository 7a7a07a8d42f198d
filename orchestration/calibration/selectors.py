"""What the calibration API and the models page show: a model's calibrator and its reliability diagram."""
from __future__ import annotations

from django.db.models import Count

from orchestration.engine.confidence import ConfidenceSpec, resolve_method
from orchestration.models import Calibrator, ConfidenceLabel, LLMModel


def measured_method(model: LLMModel) -> str:
    """The method the model's answers are measured by where a gate decides (what its calibrator is for)."""
    spec = ConfidenceSpec.from_options(model.confidence_method, model.confidence_options)
    return resolve_method(spec, model.provider.kind, decides=True)


def calibration_report(alias: str, *, method: str | None = None, scope: str = "") -> dict | None:
    """The model's calibrator for `method` (default: its own) and `scope` ("" = all its steps); None when no
    enabled or disabled model has that alias. Without a calibrator yet, the figures are null and `labels`
    says how many reviewed answers there are so far."""
    model = LLMModel.objects.select_related("provider").filter(alias=alias).first()
    if model is None:
        return None
    method = method or measured_method(model)
    labels = ConfidenceLabel.objects.filter(model_alias=alias, method=method, source=ConfidenceLabel.Source.REVIEW)
    if scope:
        labels = labels.filter(scope=scope)
    calibrator = Calibrator.objects.filter(model_alias=alias, scope=scope, method=method).first()
    report = {"model": alias, "method": method, "scope": scope, "labels": labels.count(),
              "methods": sorted(set(Calibrator.objects.filter(model_alias=alias).values_list("method", flat=True))),
              "scopes": sorted(set(Calibrator.objects.filter(model_alias=alias, method=method)
                                   .values_list("scope", flat=True))),
              "samples": 0, "calibrated": False, "mapping": None, "ece_raw": None, "ece": None, "brier_raw": None,
              "brier": None, "bins": [], "bins_raw": [], "fitted_at": None}
    if calibrator is not None:
        kind = (calibrator.mapping or {}).get("kind", "identity")
        report.update(samples=calibrator.samples, calibrated=kind != "identity", mapping=kind,
                      ece_raw=calibrator.ece_raw, ece=calibrator.ece, brier_raw=calibrator.brier_raw,
                      brier=calibrator.brier, bins=calibrator.bins, bins_raw=calibrator.bins_raw,
                      fitted_at=calibrator.fitted_at.isoformat())
    return report


def calibration_overview() -> dict[str, dict]:
    """Per model alias, the model-wide calibrator of the method its answers are measured by (the models page):
    {method, measured (not the prior), samples, reviewed (labels so far: what an uncalibrated model waits on),
    calibrated, ece_raw, ece, bins}."""
    calibrators = {(c.model_alias, c.method): c for c in Calibrator.objects.filter(scope="")}
    reviewed = {(row["model_alias"], row["method"]): row["n"] for row in
                ConfidenceLabel.objects.filter(source=ConfidenceLabel.Source.REVIEW)
                .values("model_alias", "method").annotate(n=Count("id"))}
    overview = {}
    for model in LLMModel.objects.select_related("provider"):
        method = measured_method(model)
        calibrator = calibrators.get((model.alias, method))
        samples = calibrator.samples if calibrator else 0
        overview[model.alias] = {
            "method": method, "measured": method != "prior", "samples": samples,
            "reviewed": max(samples, reviewed.get((model.alias, method), 0)),
            "calibrated": bool(calibrator and (calibrator.mapping or {}).get("kind", "identity") != "identity"),
            "ece_raw": calibrator.ece_raw if calibrator else None, "ece": calibrator.ece if calibrator else None,
            "bins": calibrator.bins if calibrator else []}
    return overview

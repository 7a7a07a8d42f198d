"""Fitting a confidence calibrator on reviewed answers (numpy and scikit-learn: the periodic job and the benchmark
import this module, the hot path never does; it applies the result with orchestration/engine/calibration.py).

fit_calibrator(raw, correct) chooses by the number of labels:

    fewer than min_samples         identity: too little evidence to move the raw signal
    min_samples .. isotonic_from   Platt scaling, a logistic regression on logit(raw): two parameters, because
                                   isotonic regression overfits a small sample (steps, and ones at the ends)
    isotonic_from and more         isotonic regression, monotone and free-form, stored as its thresholds

Labels of one class only (every answer approved, or none) carry no information on what the signal's value means;
the mapping is then a constant, stored as a flat isotonic mapping: all wrong -> (0.5) / (n + 1), the Jeffreys
estimate; all right -> 1 - 3 / n, the rule of three's 95 % upper bound on the error rate, so that a gate does not
auto-accept on a handful of lucky answers. A Platt fit that would rank a higher signal lower (a <= 0) falls back to
the same kind of constant (the class share, smoothed): a confidence mapping never turns a signal upside down.

A fitted mapping also carries `lower`: a one-sided LOWER_LEVEL (95 %) bootstrap bound on the probability, on a grid
of raw values — BOOTSTRAP resamples of the labels, the same fitting rule on each, the 5th percentile of their curves
per grid point, made monotone and never above the estimate. Target-risk gates decide on it, so that the noise of a
calibrator fitted on few labels at the top (where a gate at 2 % accepts) errs towards review, not towards
accepting (bench/confidence_sim.py measured self-consistency gates missing their target without it).

The figures it returns say how well the raw signal and the mapping are calibrated. The mapping's are measured out of
fold: 5-fold cross-validation with a fixed seed (stratified when both classes have 5 members), the same fitting rule
on 4/5 of the labels, predictions on the held-out fifth, pooled; never on the labels the mapping was fitted on.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold

from .calibration import EPSILON, apply_mapping, brier_score, expected_calibration_error, reliability_bins

__all__ = ["fit_calibrator", "fit_mapping", "FOLDS", "SEED", "PLATT_C", "DIGITS", "BOOTSTRAP", "LOWER_LEVEL"]

FOLDS = 5
SEED = 0
PLATT_C = 100.0  # inverse regularisation strength: weak, it only keeps a separable sample finite
DIGITS = 12  # stored probabilities and Platt coefficients are rounded to this many decimals
BOOTSTRAP = 100  # resamples for the lower bound
LOWER_LEVEL = 0.95
LOWER_GRID = np.linspace(0.0, 1.0, 101)


def _constant(value: float) -> dict:
    value = round(float(value), DIGITS)
    return {"kind": "isotonic", "x": [0.0, 1.0], "y": [value, value]}


def _one_class(correct: np.ndarray) -> dict:
    n = len(correct)
    return _constant(1.0 - 3.0 / n if correct[0] else 0.5 / (n + 1))


def _platt(raw: np.ndarray, correct: np.ndarray) -> tuple[str, dict]:
    clipped = np.clip(raw, EPSILON, 1.0 - EPSILON)
    feature = np.log(clipped / (1.0 - clipped)).reshape(-1, 1)
    model = LogisticRegression(C=PLATT_C, solver="newton-cholesky", max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on nearly separable samples
        model.fit(feature, correct.astype(int))
    a, b = float(model.coef_[0][0]), float(model.intercept_[0])
    if not a > 0 or not np.isfinite(b):
        share = (correct.sum() + 0.5) / (len(correct) + 1.0)
        return "constant", _constant(share)
    return "platt", {"kind": "platt", "a": round(a, DIGITS), "b": round(b, DIGITS)}


def _isotonic(raw: np.ndarray, correct: np.ndarray) -> tuple[str, dict]:
    model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
    model.fit(raw, correct.astype(float))
    # The thresholds exactly (a float's repr survives JSON), so that apply_mapping predicts what sklearn does: a
    # rounded x changes the slope between two close thresholds. The y are probabilities, rounding them is harmless.
    return "isotonic", {"kind": "isotonic", "x": [float(v) for v in model.X_thresholds_],
            "y": [round(float(v), DIGITS) for v in model.y_thresholds_]}


def _fit(raw: np.ndarray, correct: np.ndarray, kind: str) -> tuple[str, dict]:
    if kind == "identity":
        return "identity", {"kind": "identity"}
    if correct.all() or not correct.any():
        return "constant", _one_class(correct)
    return _platt(raw, correct) if kind == "platt" else _isotonic(raw, correct)


def _lower_bound(raw: np.ndarray, correct: np.ndarray, kind: str, mapping: dict) -> dict:
    """The bootstrap lower bound of the mapping's probability on LOWER_GRID (see the module's docstring)."""
    rng = np.random.default_rng(SEED)
    n = len(raw)
    curves = np.empty((BOOTSTRAP, len(LOWER_GRID)))
    for row in range(BOOTSTRAP):
        sample = rng.integers(0, n, n)
        _, resampled = _fit(raw[sample], correct[sample], kind)
        curves[row] = [apply_mapping(resampled, x) for x in LOWER_GRID]
    low = np.quantile(curves, 1.0 - LOWER_LEVEL, axis=0)
    low = np.minimum(low, [apply_mapping(mapping, x) for x in LOWER_GRID])
    low = np.maximum.accumulate(low)  # a higher signal never has a lower bound below a lower signal's
    return {"x": [round(float(x), 6) for x in LOWER_GRID], "y": [round(float(y), DIGITS) for y in low],
            "level": LOWER_LEVEL}


def fit_mapping(raw: Sequence[float], correct: Sequence[bool], kind: str) -> dict:
    """The mapping of one kind ("identity", "platt" or "isotonic") fitted on these labels (a constant when they
    are of one class, or when Platt scaling finds no increasing relation), without figures."""
    return _fit(np.clip(np.asarray(raw, dtype=float).reshape(-1), 0.0, 1.0),
                np.asarray(correct, dtype=bool).reshape(-1), kind)[1]


def _out_of_fold(raw: np.ndarray, correct: np.ndarray, kind: str) -> list[float]:
    """Each label's prediction by a mapping fitted without it (FOLDS-fold cross-validation, seeded)."""
    smaller_class = min(int(correct.sum()), int((~correct).sum()))
    splitter = (StratifiedKFold(FOLDS, shuffle=True, random_state=SEED) if smaller_class >= FOLDS
                else KFold(FOLDS, shuffle=True, random_state=SEED))
    predicted = [0.0] * len(raw)
    for train, test in splitter.split(raw.reshape(-1, 1), correct):
        _, mapping = _fit(raw[train], correct[train], kind)
        for i in test:
            predicted[i] = apply_mapping(mapping, float(raw[i]))  # the hot path's own code
    return predicted


def fit_calibrator(raw: Sequence[float], correct: Sequence[bool], *, min_samples: int = 50,
                   isotonic_from: int = 300) -> dict:
    """Fit the mapping of a raw confidence signal to the probability of a right answer, with its figures:

    {"mapping": {...}, "samples": n, "fit": "identity" | "platt" | "isotonic" | "constant",
     "ece_raw", "brier_raw", "bins_raw": the raw signal taken as a probability, on all the labels,
     "ece", "brier", "bins": the calibrated probability, out of fold (the raw figures again for identity)}

    Raises ValueError when raw and correct differ in length or raw holds a value that is not a number."""
    values = np.asarray(raw, dtype=float).reshape(-1)
    labels = np.asarray(correct, dtype=bool).reshape(-1)
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} raw signals but {len(labels)} labels")
    if not np.isfinite(values).all():
        raise ValueError("raw signals must be finite numbers")
    values = np.clip(values, 0.0, 1.0)
    n = len(values)
    raw_list, label_list = values.tolist(), labels.tolist()
    figures_raw = {"ece_raw": expected_calibration_error(raw_list, label_list),
                   "brier_raw": brier_score(raw_list, label_list), "bins_raw": reliability_bins(raw_list, label_list)}
    kind = "identity" if n < min_samples else "platt" if n < isotonic_from else "isotonic"
    fit, mapping = _fit(values, labels, kind)
    if kind == "identity":
        return {"mapping": mapping, "samples": n, "fit": "identity", **figures_raw,
                "ece": figures_raw["ece_raw"], "brier": figures_raw["brier_raw"], "bins": figures_raw["bins_raw"]}
    mapping = {**mapping, "lower": _lower_bound(values, labels, kind, mapping)}
    predicted = _out_of_fold(values, labels, kind)
    return {"mapping": mapping, "samples": n, "fit": fit, **figures_raw,
            "ece": expected_calibration_error(predicted, label_list), "brier": brier_score(predicted, label_list),
            "bins": reliability_bins(predicted, label_list)}

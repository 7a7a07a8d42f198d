"""Calibrated confidence: the hot path's mapping and figures (orchestration/engine/calibration.py) and the periodic
job's fitting (orchestration/engine/calibration_fit.py)."""
from __future__ import annotations

import ast
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from orchestration.engine.calibration import (Calibrations, Calibrator, apply_mapping, brier_score,
                                              expected_calibration_error, from_rows, reliability_bins)
from orchestration.engine.calibration_fit import fit_calibrator, fit_mapping


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sample(n, seed, *, slope=1.0, shift=0.0):
    """Answers with a hidden probability of being right q; the raw signal sigmoid(slope * logit(q) + shift), so
    slope 1 and shift 0 is perfectly calibrated and a larger slope or shift over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(1.0, 1.5, n)
    correct = rng.random(n) < sigmoid(z)
    return sigmoid(slope * z + shift), correct


def row(model="m", scope="", method="logprobs", mapping=None, **figures):
    return {"model_alias": model, "scope": scope, "method": method, "mapping": mapping or {"kind": "identity"},
            "samples": 100, "ece_raw": 0.2, "ece": 0.03, "brier_raw": 0.2, "brier": 0.1, **figures}


# apply_mapping

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_isotonic_mapping_predicts_what_sklearn_predicts(seed):
    raw, correct = sample(1500, seed, slope=2.0, shift=1.0)
    result = fit_calibrator(raw, correct)
    mapping = json.loads(json.dumps(result["mapping"]))  # as stored
    assert mapping["kind"] == "isotonic" and result["fit"] == "isotonic"
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1, increasing=True).fit(raw, correct)
    rng = np.random.default_rng(seed + 10)
    probes = np.concatenate([rng.random(3000), raw, reference.X_thresholds_, [0.0, 1.0, -0.5, 1.5, 1e-9]])
    ours = np.array([apply_mapping(mapping, float(v)) for v in probes])
    assert np.abs(ours - reference.predict(np.clip(probes, 0, None))).max() < 1e-9


def test_an_isotonic_mapping_interpolates_and_clips_at_the_ends():
    mapping = {"kind": "isotonic", "x": [0.2, 0.6, 0.8], "y": [0.1, 0.5, 0.9]}
    assert apply_mapping(mapping, 0.0) == pytest.approx(0.1)
    assert apply_mapping(mapping, 0.4) == pytest.approx(0.3)
    assert apply_mapping(mapping, 0.7) == pytest.approx(0.7)
    assert apply_mapping(mapping, 1.0) == pytest.approx(0.9)
    assert apply_mapping({"kind": "isotonic", "x": [0.5], "y": [0.7]}, 0.1) == 0.7


def test_platt_mapping_is_the_logistic_of_the_logit_and_monotone():
    mapping = {"kind": "platt", "a": 0.5, "b": -0.3}
    assert apply_mapping(mapping, 0.8) == pytest.approx(1 / (1 + math.exp(-(0.5 * math.log(4) - 0.3))))
    values = [apply_mapping(mapping, i / 1000) for i in range(1001)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] > values[0]
    assert 0.0 < apply_mapping(mapping, 0.0) < apply_mapping(mapping, 1.0) < 1.0  # raw clipped, no infinity


def test_a_fitted_platt_mapping_is_monotone_and_tempers_an_overconfident_signal():
    raw, correct = sample(200, 3, slope=2.5, shift=1.5)
    result = fit_calibrator(raw, correct)
    assert result["fit"] == "platt" and result["mapping"]["kind"] == "platt"
    assert 0 < result["mapping"]["a"] < 1  # over-confident: the slope comes down
    probes = sorted(random.Random(3).random() for _ in range(500))
    values = [apply_mapping(result["mapping"], p) for p in probes]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert apply_mapping(result["mapping"], 0.99) < 0.99


def test_identity_and_none_pass_the_raw_value_clamped():
    assert apply_mapping(None, 0.42) == 0.42
    assert apply_mapping({"kind": "identity"}, 0.42) == 0.42
    assert apply_mapping(None, 1.7) == 1.0 and apply_mapping({"kind": "identity"}, -0.2) == 0.0
    assert apply_mapping(None, float("nan")) == 0.0


def test_an_unknown_mapping_is_refused():
    with pytest.raises(ValueError):
        apply_mapping({"kind": "spline"}, 0.5)
    with pytest.raises(ValueError):
        Calibrator("m", "", "logprobs", {"kind": "isotonic", "x": [0.1, 0.2], "y": [0.3]}, 1, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        Calibrator("m", "", "logprobs", {"kind": "platt", "a": float("inf"), "b": 0}, 1, 0, 0, 0, 0)


# figures

def test_reliability_bins_list_all_ten_with_counts_summing_to_n():
    rng = random.Random(5)
    predicted = [rng.random() ** 0.3 for _ in range(777)] + [0.0, 1.0, 0.1]
    correct = [rng.random() < p for p in predicted]
    bins = reliability_bins(predicted, correct)
    assert len(bins) == 10
    assert sum(b["count"] for b in bins) == len(predicted)
    assert [(b["lo"], b["hi"]) for b in bins] == [pytest.approx((i / 10, (i + 1) / 10)) for i in range(10)]
    assert bins[-1]["count"] >= 1 and bins[0]["count"] >= 1  # 1.0 in the last bin, 0.0 in the first
    for b in bins:
        assert b["lo"] <= b["predicted"] <= b["hi"] and 0 <= b["observed"] <= 1
    assert reliability_bins([0.95, 0.97], [True, False])[9] == {
        "lo": 0.9, "hi": 1.0, "predicted": pytest.approx(0.96), "observed": 0.5, "count": 2}
    empty = reliability_bins([0.95], [True])
    assert len(empty) == 10 and empty[0] == {"lo": 0.0, "hi": 0.1, "predicted": None, "observed": None, "count": 0}


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    raw, correct = sample(20000, 7)
    assert expected_calibration_error(raw.tolist(), correct.tolist()) < 0.02
    raw, correct = sample(20000, 7, slope=2.5, shift=2.0)
    assert expected_calibration_error(raw.tolist(), correct.tolist()) > 0.1


def test_ece_and_brier_by_hand():
    predicted, correct = [0.9, 0.9, 0.9, 0.9, 0.2], [True, True, True, False, False]
    # bin 9: mean 0.9, observed 0.75 -> 4/5 * 0.15; bin 2: 0.2 vs 0 -> 1/5 * 0.2
    assert expected_calibration_error(predicted, correct) == pytest.approx(0.8 * 0.15 + 0.2 * 0.2)
    assert brier_score(predicted, correct) == pytest.approx((3 * 0.01 + 0.81 + 0.04) / 5)
    assert expected_calibration_error([], []) == 0.0 and brier_score([], []) == 0.0
    with pytest.raises(ValueError):
        brier_score([0.5], [True, False])


# fit_calibrator

def test_the_calibrated_figures_are_measured_out_of_fold():
    # A pure-noise signal: isotonic regression memorises its training labels, so judged on them it looks perfectly
    # calibrated (ECE ~ 0); judged on labels it was not fitted on, it is not.
    rng = np.random.default_rng(11)
    raw, correct = rng.random(400), rng.random(400) < 0.6
    result = fit_calibrator(raw, correct, isotonic_from=300)
    in_sample = [apply_mapping(result["mapping"], v) for v in raw]
    assert result["fit"] == "isotonic"
    assert expected_calibration_error(in_sample, correct.tolist()) < 0.005
    assert result["ece"] > 0.02
    assert result["brier"] > brier_score(in_sample, correct.tolist())
    assert sum(b["count"] for b in result["bins"]) == 400 and sum(b["count"] for b in result["bins_raw"]) == 400


def test_calibration_lowers_the_out_of_fold_error_of_an_overconfident_signal():
    raw, correct = sample(2000, 12, slope=2.5, shift=2.0)
    result = fit_calibrator(raw, correct)
    assert result["samples"] == 2000
    assert result["ece_raw"] > 0.1 and result["ece"] < 0.04
    assert result["brier"] < result["brier_raw"]
    assert result["ece_raw"] == pytest.approx(expected_calibration_error(raw.tolist(), correct.tolist()))


def test_too_few_labels_leave_the_signal_as_it_is():
    raw, correct = sample(49, 13, slope=3.0, shift=2.0)
    result = fit_calibrator(raw, correct)
    assert result["mapping"] == {"kind": "identity"} and result["fit"] == "identity" and result["samples"] == 49
    assert result["ece"] == result["ece_raw"] and result["brier"] == result["brier_raw"]
    assert result["bins"] == result["bins_raw"]
    assert fit_calibrator(*sample(50, 13))["fit"] == "platt"
    assert fit_calibrator([], [])["mapping"] == {"kind": "identity"}


@pytest.mark.parametrize("n", [60, 500])
def test_labels_of_one_class_give_a_cautious_constant(n):
    raw = np.random.default_rng(n).random(n)
    right = fit_calibrator(raw, [True] * n)
    assert right["fit"] == "constant"
    assert apply_mapping(right["mapping"], 0.1) == apply_mapping(right["mapping"], 0.99) == pytest.approx(1 - 3 / n)
    wrong = fit_calibrator(raw, [False] * n)
    assert wrong["fit"] == "constant" and apply_mapping(wrong["mapping"], 0.99) == pytest.approx(0.5 / (n + 1))
    assert 0 <= wrong["ece"] <= 1 and 0 <= right["brier"] <= 1


def test_a_platt_fit_never_turns_the_signal_upside_down():
    rng = np.random.default_rng(21)
    raw = rng.random(200)
    correct = rng.random(200) < 1 - raw  # the higher the signal, the more often wrong
    mapping = fit_mapping(raw, correct, "platt")
    assert apply_mapping(mapping, 0.1) == apply_mapping(mapping, 0.9)


def test_fit_calibrator_refuses_bad_input():
    with pytest.raises(ValueError):
        fit_calibrator([0.5, 0.6], [True])
    with pytest.raises(ValueError):
        fit_calibrator([0.5, float("nan")], [True, False])


# Calibrator and Calibrations

def test_lookup_prefers_the_steps_own_calibrator_then_the_models():
    calibrations = from_rows([
        row(mapping={"kind": "platt", "a": 0.5, "b": 0.0}),
        row(scope="triage/classify", mapping={"kind": "platt", "a": 0.3, "b": 0.1}),
        row(method="verifier", mapping={"kind": "platt", "a": 0.7, "b": 0.0}),
        row(model="other", scope="triage/classify"),
    ])
    assert calibrations.lookup("m", "logprobs", "triage/classify").mapping["a"] == 0.3
    assert calibrations.lookup("m", "logprobs", "triage/answer").mapping["a"] == 0.5
    assert calibrations.lookup("m", "logprobs").mapping["a"] == 0.5
    assert calibrations.lookup("m", "verifier", "triage/classify").mapping["a"] == 0.7
    assert calibrations.lookup("m", "self_consistency", "triage/classify") is None
    assert calibrations.lookup("other", "logprobs") is None  # a step's calibrator is not the model's
    assert calibrations.lookup("other", "logprobs", "triage/classify").scope == "triage/classify"
    assert calibrations.lookup("unknown", "logprobs", "triage/classify") is None


def test_empty_calibrations_are_falsy_and_find_nothing():
    empty = Calibrations()
    assert not empty and len(empty) == 0
    assert empty.lookup("m", "logprobs", "a/b") is None
    assert from_rows([]) == empty
    assert from_rows([row()])


def test_from_rows_builds_calibrators_that_apply_their_mapping():
    calibrations = from_rows([{**row(mapping={"kind": "isotonic", "x": [0.0, 1.0], "y": [0.2, 0.6]}),
                               "id": 7, "scope": None, "fitted_at": None, "samples": "300"}])
    calibrator = calibrations.lookup("m", "logprobs")
    assert calibrator.samples == 300 and calibrator.scope == "" and calibrator.fitted_at == ""
    assert calibrator.probability(0.5) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        from_rows([{"model_alias": "m", "method": "logprobs"}])
    with pytest.raises(ValueError):
        from_rows([row(mapping={"kind": "spline"})])


def test_a_later_duplicate_wins():
    calibrations = from_rows([row(mapping={"kind": "platt", "a": 1.0, "b": 0.0}),
                              row(mapping={"kind": "platt", "a": 2.0, "b": 0.0})])
    assert calibrations.lookup("m", "logprobs").mapping["a"] == 2.0 and len(calibrations) == 1


def test_the_hot_path_module_imports_no_numpy_sklearn_or_django():
    source = Path(__file__).resolve().parent.parent / "orchestration" / "engine" / "calibration.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "math", "bisect", "collections", "dataclasses"}, imported

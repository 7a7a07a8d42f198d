"""Calibrated confidence: what a raw signal's value means as a probability of being right.

A step's raw confidence (token log-probabilities, self-consistency agreement, a verifier's score) is a score, not
a probability: a model whose log-probabilities say 0.97 may be right 80 % of the time. The periodic job fits a
mapping per (model, workflow step, signal method) on reviewed answers (orchestration/engine/calibration_fit.py, which
needs numpy and scikit-learn) and stores it as plain JSON; this module applies it on the hot path with nothing but
the standard library:

    {"kind": "isotonic", "x": [...], "y": [...]}   piecewise-linear between thresholds, constant beyond the ends
                                                   (scikit-learn's IsotonicRegression(out_of_bounds="clip").predict)
    {"kind": "platt", "a": a, "b": b}              1 / (1 + exp(-(a * logit(raw) + b)))
    {"kind": "identity"} or None                   the raw value itself

A fitted mapping may also carry `"lower": {"x": [...], "y": [...], "level": 0.95}`: a lower confidence bound on
the probability (bootstrap, calibration_fit.py), interpolated the same way by `apply_lower`. A gate stating
{"max_error_rate": 0.02} accepts an answer only when 1 - that bound <= 0.02: a calibrator fitted on few labels
near the top cannot talk a gate into accepting answers its estimate is merely hopeful about.

Also the figures that say how well a probability is calibrated: reliability bins, the expected calibration error
(ECE) and the Brier score.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

__all__ = ["apply_mapping", "apply_lower", "check_mapping", "reliability_bins", "expected_calibration_error", "brier_score",
           "Calibrator", "Calibrations", "from_rows", "METHODS", "EPSILON"]

METHODS = ("logprobs", "self_consistency", "verifier", "prior")  # what a raw signal can be computed from
EPSILON = 1e-6  # Platt scaling's logit clips its input to [EPSILON, 1 - EPSILON]
KINDS = ("isotonic", "platt", "identity")


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)  # no overflow for very negative z
    return e / (1.0 + e)


def logit(p: float) -> float:
    p = min(max(p, EPSILON), 1.0 - EPSILON)
    return math.log(p / (1.0 - p))


def apply_mapping(mapping: Mapping | None, raw: float) -> float:
    """The calibrated probability of a raw signal, in [0, 1].

    A raw value that is not a number (NaN) counts as no confidence at all (0.0): a gate then sends the answer to
    review instead of accepting it on a broken signal. An unknown kind raises ValueError (check_mapping refuses it
    when a Calibrator is built, so a stored mapping fails when loaded, not per answer)."""
    raw = float(raw)
    if raw != raw:  # NaN
        return 0.0
    if not mapping:
        return _clamp(raw)
    kind = mapping.get("kind", "identity")
    if kind == "isotonic":
        xs, ys = mapping["x"], mapping["y"]
        if len(xs) == 1:
            return _clamp(float(ys[0]))
        # As scipy's interp1d(kind="linear") after clipping to [x[0], x[-1]], which isotonic predict does: the
        # left neighbour by searchsorted(side="left"), kept inside 1 .. len - 1, so the arithmetic is the same.
        if raw <= xs[0]:
            return _clamp(float(ys[0]))
        if raw >= xs[-1]:
            raw = xs[-1]
        i = min(max(bisect_left(xs, raw), 1), len(xs) - 1)
        x_lo, x_hi, y_lo, y_hi = xs[i - 1], xs[i], ys[i - 1], ys[i]
        if x_hi == x_lo:  # thresholds that rounding made equal
            return _clamp(float(y_hi))
        slope = (y_hi - y_lo) / (x_hi - x_lo)
        return _clamp(slope * (raw - x_lo) + y_lo)
    if kind == "platt":
        return _clamp(_sigmoid(float(mapping["a"]) * logit(raw) + float(mapping["b"])))
    if kind == "identity":
        return _clamp(raw)
    raise ValueError(f"unknown calibration mapping kind {kind!r}")


def apply_lower(mapping: Mapping | None, raw: float) -> float:
    """A lower confidence bound on the calibrated probability of a raw signal: the mapping's `lower` curve, or
    the probability itself when the mapping has none (identity and hand-made mappings)."""
    lower = (mapping or {}).get("lower")
    if not lower:
        return apply_mapping(mapping, raw)
    return min(apply_mapping({"kind": "isotonic", "x": lower["x"], "y": lower["y"]}, raw),
               apply_mapping(mapping, raw))


def check_mapping(mapping: Mapping | None) -> None:
    """Raise ValueError unless apply_mapping can apply this mapping to any raw value."""
    if mapping is None:
        return
    if not isinstance(mapping, Mapping):
        raise ValueError(f"a calibration mapping is a dict, not {type(mapping).__name__}")
    kind = mapping.get("kind", "identity")
    if kind not in KINDS:
        raise ValueError(f"unknown calibration mapping kind {kind!r}")
    if kind == "isotonic":
        xs, ys = mapping.get("x"), mapping.get("y")
        if not isinstance(xs, list) or not isinstance(ys, list) or not xs or len(xs) != len(ys):
            raise ValueError("an isotonic mapping needs lists x and y of the same, non-zero length")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (*xs, *ys)):
            raise ValueError("an isotonic mapping's thresholds are finite numbers")
        if any(b < a for a, b in zip(xs, xs[1:])):
            raise ValueError("an isotonic mapping's x thresholds are sorted")
    elif kind == "platt":
        for key in ("a", "b"):
            value = mapping.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"a platt mapping needs a finite number {key!r}")
    if mapping.get("lower") is not None:
        lower = mapping["lower"]
        if not isinstance(lower, Mapping):
            raise ValueError("a mapping's lower bound is a dict with x and y")
        check_mapping({"kind": "isotonic", "x": lower.get("x"), "y": lower.get("y")})


def _pairs(predicted: Sequence[float], correct: Sequence[bool]) -> list[tuple[float, float]]:
    if len(predicted) != len(correct):
        raise ValueError(f"{len(predicted)} predictions but {len(correct)} labels")
    return [(_clamp(float(p)), 1.0 if c else 0.0) for p, c in zip(predicted, correct)]


def reliability_bins(predicted: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[dict]:
    """Equal-width bins over [0, 1] (a prediction of exactly 1.0 falls in the last), all of them listed: each with
    its bounds, the mean prediction and the share correct in it (None when empty) and its count."""
    sums = [[0.0, 0.0, 0] for _ in range(n_bins)]
    for p, c in _pairs(predicted, correct):
        entry = sums[min(int(p * n_bins), n_bins - 1)]
        entry[0] += p
        entry[1] += c
        entry[2] += 1
    return [{"lo": i / n_bins, "hi": (i + 1) / n_bins,
             "predicted": s / n if n else None, "observed": k / n if n else None, "count": n}
            for i, (s, k, n) in enumerate(sums)]


def expected_calibration_error(predicted: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """Sum over the bins of count / N * |share correct - mean prediction|; 0.0 for no predictions."""
    total = len(predicted)
    if not total:
        _pairs(predicted, correct)  # still refuse labels without predictions
        return 0.0
    return sum(b["count"] / total * abs(b["observed"] - b["predicted"])
               for b in reliability_bins(predicted, correct, n_bins) if b["count"])


def brier_score(predicted: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean squared difference between prediction and outcome (1 right, 0 wrong); 0.0 for no predictions."""
    pairs = _pairs(predicted, correct)
    return sum((p - c) ** 2 for p, c in pairs) / len(pairs) if pairs else 0.0


@dataclass(frozen=True)
class Calibrator:
    """One fitted mapping: for a model as a whole (scope "") or one workflow step ("<workflow slug>/<node id>"),
    for one raw signal's method, with the figures of its fit (the calibrated ones measured out of fold)."""
    model_alias: str
    scope: str
    method: str
    mapping: dict
    samples: int
    ece_raw: float
    ece: float
    brier_raw: float
    brier: float
    fitted_at: str = ""  # ISO 8601

    def __post_init__(self) -> None:
        check_mapping(self.mapping)

    def probability(self, raw: float) -> float:
        return apply_mapping(self.mapping, raw)

    def lower_bound(self, raw: float) -> float:
        return apply_lower(self.mapping, raw)


@dataclass(frozen=True)
class Calibrations:
    """The calibrators the engine knows, looked up by (model, method, scope). Empty is cheap and falsy."""
    calibrators: tuple[Calibrator, ...] = ()
    _index: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.calibrators, tuple):
            object.__setattr__(self, "calibrators", tuple(self.calibrators))
        for calibrator in self.calibrators:  # a later duplicate of the same key wins
            self._index[(calibrator.model_alias, calibrator.scope, calibrator.method)] = calibrator

    def __bool__(self) -> bool:
        return bool(self.calibrators)

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, model_alias: str, method: str, scope: str = "") -> Calibrator | None:
        """The step's own calibrator for this model and method, else the model-wide one, else None."""
        if not self._index:
            return None
        if scope:
            found = self._index.get((model_alias, scope, method))
            if found is not None:
                return found
        return self._index.get((model_alias, "", method))


_FIELDS = {f.name: f for f in fields(Calibrator)}
_CASTS = {"model_alias": str, "scope": str, "method": str, "samples": int, "ece_raw": float, "ece": float,
          "brier_raw": float, "brier": float, "fitted_at": str}


def from_rows(rows: Iterable[Mapping]) -> Calibrations:
    """Calibrations from plain dicts with the Calibrator's fields (other keys, an id say, are ignored; a missing
    scope is the model-wide one, a missing or null fitted_at empty). Raises ValueError on a row that is missing a
    field or whose mapping apply_mapping could not apply."""
    calibrators = []
    for row in rows:
        values = {}
        for name in _FIELDS:
            value = row.get(name)
            if value is None:
                if name in ("scope", "fitted_at"):
                    value = ""
                else:
                    raise ValueError(f"calibration row without {name!r}: {dict(row)!r}")
            if name == "fitted_at" and not isinstance(value, str):
                value = value.isoformat() if hasattr(value, "isoformat") else str(value)
            values[name] = value if name == "mapping" else _CASTS[name](value)
        calibrators.append(Calibrator(**values))
    return Calibrations(tuple(calibrators))

"""A measured confidence from an answer's token log-probabilities.

Pure Python: the provider adapters call it on what the upstream returned, and the signals go on
`ChatResult.confidence_signals` so the calibrator (and a person reading a step) sees what the
raw confidence was computed from.
"""
from __future__ import annotations

import math

STATISTIC = "geometric_mean_token_probability"
DIGITS = 6


def token_logprobs(payload) -> list[float]:
    """The answer tokens' log-probabilities from OpenAI's `{"content": [{"token", "logprob", ...}]}` shape.

    Tolerates None (no logprobs) and skips entries that are not dicts or whose logprob is not a finite number:
    an upstream's odd item must not cost the whole signal.
    """
    if not isinstance(payload, dict):
        return []
    content = payload.get("content")
    return numeric_logprobs(content if isinstance(content, list) else ())


def numeric_logprobs(items) -> list[float]:
    """The `logprob` of each `{"token", "logprob", ...}` item (Ollama sends this list bare, OpenAI under content)."""
    values = []
    for item in items or ():
        if not isinstance(item, dict):
            continue
        value = item.get("logprob")
        # bool is an int to Python; a `true` logprob is garbage, not 1.0
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    return values


def logprob_signals(values: list[float]) -> dict | None:
    """What a confidence is computed from: None when there are no tokens.

    The headline `value` is the geometric mean of the token probabilities, exp(mean logprob). It is
    length-normalised: a plain product of probabilities shrinks with every token, so a long, correct
    answer would look less sure than a one-word guess. It is not a probability of being right, and
    need not be: the calibrator maps it onto one from observed outcomes. The least likely token's
    probability is kept as a second signal because a mean hides a single unsure token, and in a
    short answer ("yes", "42", a label) that one token often is the answer.
    """
    if not values:
        return None
    mean = sum(values) / len(values)
    return {
        "statistic": STATISTIC,
        "value": round(_probability(mean), DIGITS),
        "mean_logprob": round(mean, DIGITS),
        "min_token_prob": round(_probability(min(values)), DIGITS),
        "tokens": len(values),
    }


def confidence_from_logprobs(values: list[float]) -> tuple[float | None, dict | None]:
    """(raw confidence, its signals), or (None, None) when there are no token log-probabilities."""
    signals = logprob_signals(values)
    return (signals["value"], signals) if signals else (None, None)


def _probability(logprob: float) -> float:
    # A logprob above 0 is a rounding artefact of the upstream (or a bug): never a probability above 1.
    return min(1.0, max(0.0, math.exp(min(logprob, 0.0))))

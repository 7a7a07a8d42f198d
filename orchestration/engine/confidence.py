"""How sure a step is, and how that was measured.

A step's confidence comes from one of four methods (chosen per model in the registry, overridable per
workflow node with `"confidence": {...}`):

  logprobs          the provider's token log-probabilities of the answer (geometric mean token probability,
                    orchestration/engine/logprobs.py); OpenAI-compatible and Ollama upstreams are asked for them
  self_consistency  k samples at a temperature, in parallel; the answer is the one the others agree with most,
                    the signal is how much they agree (`agreement`)
  verifier          a judge model scores the answer against the request with a fixed rubric (`VERIFIER_RUBRIC`)
  prior             the model's registry prior: not a measurement, and every view says so

`auto` (the default) is logprobs where the provider gives them, self-consistency for a provider that has
none (Anthropic) when a gate or cascade decides on the step, and the prior otherwise. The raw signal is
then mapped to the probability that the answer is right by the calibrator fitted from reviewed answers
(orchestration/engine/calibration.py); the prior is never calibrated.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from orchestration.confidence_options import METHODS, check_options  # noqa: F401 - re-exported for the engine

MEASURED = ("logprobs", "self_consistency", "verifier")
LOGPROB_PROVIDERS = ("openai_compatible", "ollama")

# Free-text answers that share most of their words say the same thing; exact matching would count two
# paraphrases of one fact as disagreement. Jaccard over normalised word sets is cheap and symmetric.
SAME_ANSWER_SIMILARITY = 0.6

VERIFIER_RUBRIC = (
    "You check another assistant's answer. Read the request and the answer, then judge whether the answer is "
    "correct, complete and responsive to the request.\n"
    "Reply with one number between 0 and 1 and nothing else: the probability that the answer is correct "
    "(1 = certainly correct, 0 = certainly wrong).\n\n"
    "Request:\n{request}\n\nAnswer:\n{answer}"
)


@dataclass(frozen=True)
class ConfidenceSpec:
    method: str = "auto"
    samples: int = 3  # self_consistency: k
    temperature: float = 0.7  # self_consistency: the samples' temperature
    verifier: str = ""  # verifier: the judge model's alias

    @classmethod
    def from_options(cls, method: str = "auto", options: dict | None = None) -> "ConfidenceSpec":
        options = options or {}
        return cls(method=method or "auto", samples=int(options.get("samples", 3)),
                   temperature=float(options.get("temperature", 0.7)), verifier=str(options.get("verifier", "")))

    def overridden(self, node_options: dict | None) -> "ConfidenceSpec":
        """A workflow node's `confidence` object over the model's own settings."""
        if not node_options:
            return self
        return ConfidenceSpec(method=node_options.get("method", self.method),
                              samples=int(node_options.get("samples", self.samples)),
                              temperature=float(node_options.get("temperature", self.temperature)),
                              verifier=str(node_options.get("verifier", self.verifier)))


def resolve_method(spec: ConfidenceSpec, provider_kind: str, *, decides: bool) -> str:
    """The method a call uses. `decides`: a gate or cascade decides on this step's confidence.

    A call made for logprobs whose upstream returned none is recorded as `prior`: the record says what
    was measured, not what was asked. (The mock provider's configured `confidence` stands in for logprobs.)
    """
    if spec.method != "auto":
        return spec.method
    if provider_kind in LOGPROB_PROVIDERS or provider_kind == "mock":
        return "logprobs"
    if decides and provider_kind == "anthropic":
        return "self_consistency"
    return "prior"


# --- self-consistency ---------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Case, accents, punctuation and spacing removed (the `majority` combine compares answers the same way)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def similarity(a: str, b: str) -> float:
    """1.0 for answers equal after normalisation, else the Jaccard similarity of their word sets."""
    if a == b:
        return 1.0
    words_a, words_b = set(a.split()), set(b.split())
    if not words_a or not words_b:
        return 0.0
    return len(words_a & words_b) / len(words_a | words_b)


def agreement(answers: list[str]) -> tuple[int, float, dict]:
    """(index of the chosen answer, agreement in [0, 1], signals).

    The chosen answer is the one the others agree with most (for short answers: the majority one). Its
    agreement is the share of samples that say the same thing, counting a sample as agreeing by its
    similarity when it is at least SAME_ANSWER_SIMILARITY: exact answers give the plain majority share.
    """
    normalised = [normalise(answer) for answer in answers]
    best_index, best_score = 0, -1.0
    for i, mine in enumerate(normalised):
        score = sum(s for j, other in enumerate(normalised)
                    if (s := 1.0 if i == j else similarity(mine, other)) >= SAME_ANSWER_SIMILARITY)
        if score > best_score:
            best_index, best_score = i, score
    share = best_score / len(answers) if answers else 0.0
    distinct = len(set(normalised))
    return best_index, share, {"statistic": "agreement_share", "value": round(share, 6), "samples": len(answers),
                               "distinct_answers": distinct}


# --- verifier -----------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?|\.\d+)\s*(%|/\s*(?:10|100)\b)?")


class VerdictUnreadable(ValueError):
    """The judge's reply holds no score in [0, 1] (nor a percentage or an x/10, x/100)."""


def parse_verdict(text: str) -> float:
    """The first score in the judge's reply: `0.83`, `83%`, `8/10`, `Score: 0.9`; anything else is unreadable."""
    for match in _NUMBER.finditer(text or ""):
        value, unit = float(match.group(1)), (match.group(2) or "").replace(" ", "")
        if unit == "%":
            value /= 100
        elif unit in ("/10", "/100"):
            value /= float(unit[1:])
        if 0.0 <= value <= 1.0 and math.isfinite(value):
            return value
    raise VerdictUnreadable(f"no score between 0 and 1 in the verdict {text[:120]!r}")


def verifier_prompt(request_text: str, answer: str) -> str:
    return VERIFIER_RUBRIC.format(request=request_text, answer=answer)


def describe(method: str, raw: float | None, confidence: float | None, calibrated: bool,
             samples: int | None = None) -> str:
    """"How sure, measured how", in words (the review page and podium_top say it this way)."""
    if method == "prior" or not method:
        return (f"Not measured: the model's prior quality {raw:.2f}, the same for every answer"
                if raw is not None else "Not measured")
    how = {"logprobs": "the model's token probabilities", "self_consistency": "agreement among samples",
           "verifier": "a verifier model's score"}.get(method, method)
    if calibrated and confidence is not None:
        return (f"{confidence:.0%} likely right, measured by {how} (raw {raw:.2f}), calibrated on "
                f"{samples or 0} reviewed answers")
    return f"Measured by {how}: raw {raw:.2f}, not yet calibrated (too few reviewed answers)"


# --- calibration --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    """How sure one answer is: the method, its raw signal and the probability of being right it maps to."""

    method: str
    raw: float
    confidence: float  # calibrated when `calibrated`, else the raw signal itself
    calibrated: bool = False
    labels: int = 0  # reviewed answers the calibrator was fitted on
    scope: str = ""  # the step's "<workflow>/<node>" ("" for a direct call): where its review's label goes
    fitted_for: str = ""  # the calibrator's scope: the step's own, or "" when the model's as a whole served
    confidence_low: float | None = None  # a 95 % lower bound on the calibrated probability (target-risk gates)


def calibrate(calibrations, model_alias: str, method: str, scope: str, raw: float) -> Measurement:
    """The measurement of `raw` through the calibrator for (model, step, method), else (model, method).

    The prior is never calibrated (it is one number for every answer); a calibrator that was fitted on
    too few labels maps nothing (kind "identity") and the answer counts as uncalibrated.
    """
    raw = max(0.0, min(1.0, float(raw)))
    if method in MEASURED and calibrations is not None:
        calibrator = calibrations.lookup(model_alias, method, scope)
        if calibrator is not None and (calibrator.mapping or {}).get("kind", "identity") != "identity":
            return Measurement(method, raw, calibrator.probability(raw), True, calibrator.samples, scope,
                               calibrator.scope, calibrator.lower_bound(raw))
    return Measurement(method, raw, raw, scope=scope)


def calibration_marker(measurement: Measurement) -> dict:
    """The step attribute a calibrated measurement leaves (so a stored step can be read back exactly)."""
    marker = {"calibration": {"labels": measurement.labels, "fitted_for": measurement.fitted_for,
                              "lower_bound": measurement.confidence_low}} if measurement.calibrated else {}
    return {**marker, "confidence_scope": measurement.scope} if measurement.scope else marker


def measurement_from_stored(method: str, raw: float | None, confidence: float | None,
                            attributes: dict | None) -> Measurement | None:
    """A finished step's measurement, as a resumed run reads it back."""
    if not method or raw is None or confidence is None:
        return None
    attributes = attributes or {}
    calibration = attributes.get("calibration") or {}
    return Measurement(method, raw, confidence, bool(calibration), int(calibration.get("labels") or 0),
                       str(attributes.get("confidence_scope") or ""), str(calibration.get("fitted_for") or ""),
                       calibration.get("lower_bound"))

"""Does calibrating a step's confidence make its gate decide well? A seeded simulation.

Three models (small, medium, large: cost 1, 5 and 25 per answer) answer questions of four workflow steps. Each
question has a hidden difficulty shared by the models; each model a hidden accuracy per step, so every answer has a
hidden probability q of being right, and it is right with that probability. The answer's raw confidence signals are
functions of q, each miscalibrated in its own way:

  logprobs          over-confident, squashed towards 1, the smaller the model the more (a per-model slope and shift
                    on the logit, plus noise)
  verifier          one verifier for all models, a little noisy and biased upwards on one step (support/code)
  self_consistency  k = 5 samples: the share that agree with the answer, in {0.2, 0.4, ..., 1.0}, noisy; wrong
                    answers are often consistently wrong

Calibrators are fitted per model (scope "", and per step where the step's labels allow) on labelled answers, as the
periodic job does, with orchestration.engine.calibration_fit.fit_calibrator, and applied with
orchestration.engine.calibration's apply_mapping through Calibrations.lookup: the code production uses. Measured on
a held-out test set (every model answers the same TEST questions):

  1. ECE of the raw and the calibrated signal after 200, 500 and 2,000 labels per model, per signal kind.
     Target: <= 0.05 after 500 labels for every signal whose raw ECE is >= 0.15.
  2. Gates at an accepted-answer error target of 2 %, calibrators fitted on 2,000 labels per model:
     (a) a fixed threshold of 0.8 on the raw signal, (b) max_error_rate 0.02 (accept iff 1 - the calibrated
         probability's 95 % lower bound <= 0.02, as engine/nodes/gate.py decides);
     the raw threshold that would reach (b)'s true error, and its review rate; the raw threshold that reviews as
     many as (b), and its error. Targets: (b)'s true error <= 2.5 %; (b) reviews >= 30 % fewer answers than a raw
     threshold needs for the same error, or (a) has at least twice (b)'s error at (b)'s review rate.
  3. A cascade small -> medium -> large that escalates while the calibrated confidence is below a threshold, against
     always the largest model: cost and accuracy.

Labels are a random sample of each model's answers (in production, reviewed answers are those the gates sent to
review, a biased sample; not simulated). Prints figures, asserts nothing.

    .venv/bin/python bench/confidence_sim.py [--seeds 1 2 3 4 5] [--test 5000] [--cascade-signal logprobs]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestration.engine.calibration import (Calibrations, apply_mapping, expected_calibration_error,  # noqa: E402
                                              from_rows)
from orchestration.engine.calibration_fit import fit_calibrator  # noqa: E402

MODELS = {"small": 1.0, "medium": 5.0, "large": 25.0}  # alias: cost per answer
STEPS = {"triage/extract": 0.30, "triage/summarize": 0.25, "support/code": 0.25, "support/reasoning": 0.20}
# The hidden accuracy of each model per step, for a question of average difficulty.
HIDDEN_ACCURACY = {
    "small":  {"triage/extract": 0.95, "triage/summarize": 0.92, "support/code": 0.80, "support/reasoning": 0.70},
    "medium": {"triage/extract": 0.97, "triage/summarize": 0.95, "support/code": 0.90, "support/reasoning": 0.85},
    "large":  {"triage/extract": 0.99, "triage/summarize": 0.97, "support/code": 0.95, "support/reasoning": 0.93},
}
DIFFICULTY_SD = 2.0  # spread of the questions' difficulty on the logit scale
# logprobs: raw = sigmoid(slope * (logit(q) + noise) + shift + step's shift): over-confident, the smaller the model
# the more, and more so on the steps where fluent answers are not right ones
LOGPROB_MISCALIBRATION = {"small": (2.5, 4.0), "medium": (2.0, 2.5), "large": (1.0, -0.5)}  # large: a bit timid
LOGPROB_STEP_SHIFT = {"support/code": 0.5, "support/reasoning": 1.5}
LOGPROB_NOISE = 0.4
VERIFIER_SLOPE, VERIFIER_NOISE, VERIFIER_SHIFT = 0.9, 0.7, -0.3
VERIFIER_BIAS = {"support/code": 2.5}  # the verifier overrates code answers
CONSISTENCY_K, CONSISTENCY_SLOPE, CONSISTENCY_SHIFT, CONSISTENCY_NOISE = 5, 1.5, 0.0, 0.8
KINDS = ("logprobs", "verifier", "self_consistency")
LABELS = (200, 500, 2000)
TARGET_ERROR = 0.02  # the gate's max_error_rate
RAW_THRESHOLD = 0.8
CASCADE_THRESHOLDS = (0.90, 0.95)
TARGETS = {"ece": 0.05, "ece_raw_from": 0.15, "gate_error": 0.025, "fewer_reviews": 0.30, "error_ratio": 2.0}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def logit(p):
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


@dataclass
class Answers:
    """n questions answered by every model: step per question; q, right and the raw signals per model."""
    step: np.ndarray
    q: dict
    right: dict
    signals: dict  # model -> kind -> raw values

    def __len__(self) -> int:
        return len(self.step)


def draw(rng: np.random.Generator, n: int) -> Answers:
    names = list(STEPS)
    step = rng.choice(len(names), size=n, p=list(STEPS.values()))
    difficulty = rng.normal(0.0, DIFFICULTY_SD, n)
    q, right, signals = {}, {}, {}
    for model in MODELS:
        base = np.array([logit(HIDDEN_ACCURACY[model][s]) for s in names])[step]
        q[model] = sigmoid(base - difficulty)
        right[model] = rng.random(n) < q[model]
        z = logit(q[model])
        slope, shift = LOGPROB_MISCALIBRATION[model]
        bias = np.array([VERIFIER_BIAS.get(s, 0.0) for s in names])[step]
        step_shift = np.array([LOGPROB_STEP_SHIFT.get(s, 0.0) for s in names])[step]
        agree = sigmoid(CONSISTENCY_SLOPE * z + CONSISTENCY_SHIFT + rng.normal(0, CONSISTENCY_NOISE, n))
        signals[model] = {
            "logprobs": sigmoid(slope * (z + rng.normal(0, LOGPROB_NOISE, n)) + shift + step_shift),
            "verifier": sigmoid(VERIFIER_SLOPE * (z + rng.normal(0, VERIFIER_NOISE, n)) + VERIFIER_SHIFT + bias),
            "self_consistency": (1 + rng.binomial(CONSISTENCY_K - 1, agree)) / CONSISTENCY_K,
        }
    return Answers(np.array(names)[step], q, right, signals)


def calibrations(labels: Answers, kind: str, n: int, *, per_step: bool) -> Calibrations:
    """What the periodic job would publish after n labels per model: a model-wide calibrator, and with per_step one
    per step whose labels fit something better than the identity."""
    rows = []
    for model in MODELS:
        raw, right = labels.signals[model][kind][:n], labels.right[model][:n]
        scopes = [("", np.ones(n, dtype=bool))]
        if per_step:
            scopes += [(step, labels.step[:n] == step) for step in STEPS]
        for scope, mask in scopes:
            fitted = fit_calibrator(raw[mask], right[mask])
            if scope and fitted["fit"] == "identity":
                continue  # too few labels in this step: the model-wide calibrator stands in
            rows.append({"model_alias": model, "scope": scope, "method": kind, **fitted})
    return from_rows(rows)


def calibrated(table: Calibrations, answers: Answers, model: str, kind: str) -> np.ndarray:
    raw = answers.signals[model][kind]
    return np.array([table.lookup(model, kind, step).probability(value) for value, step in zip(raw, answers.step)])


def calibrated_low(table: Calibrations, answers: Answers, model: str, kind: str) -> np.ndarray:
    """The 95 % lower bound on the calibrated probability: what a production target-risk gate decides on."""
    raw = answers.signals[model][kind]
    return np.array([table.lookup(model, kind, step).lower_bound(value) for value, step in zip(raw, answers.step)])


def pooled(answers: Answers, values: dict) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([values[m] for m in MODELS]), np.concatenate([answers.right[m] for m in MODELS]))


def gate(accept: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """(review rate, true error among the auto-accepted answers: nan when none is accepted)."""
    accepted = int(accept.sum())
    return 1 - accepted / len(accept), (float((~right[accept]).sum() / accepted) if accepted else float("nan"))


def raw_frontier(raw: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every raw threshold t (accept raw >= t): the answers it accepts and their error, from the strictest."""
    order = np.argsort(-raw, kind="stable")
    values, wrong = raw[order], np.cumsum(~right[order])
    ends = np.flatnonzero(np.r_[values[1:] != values[:-1], True])  # accept whole ties only
    accepted = ends + 1
    return values[ends], accepted, wrong[ends] / accepted


def ece(predicted, right) -> float:
    return expected_calibration_error(predicted.tolist(), right.tolist())


def simulate(seed: int, test: int, cascade_signal: str) -> dict:
    rng = np.random.default_rng(seed)
    labels, held_out = draw(rng, max(LABELS)), draw(rng, test)
    result = {"seed": seed, "ece": {}, "gate": {}, "cascade": {}}
    tables = {}
    for kind in KINDS:
        raw, right = pooled(held_out, {m: held_out.signals[m][kind] for m in MODELS})
        rows = {m: {"raw": ece(held_out.signals[m][kind], held_out.right[m])} for m in MODELS}
        for n in LABELS:
            table = calibrations(labels, kind, n, per_step=False)
            for m in MODELS:
                rows[m][n] = ece(calibrated(table, held_out, m, kind), held_out.right[m])
        tables[kind] = calibrations(labels, kind, max(LABELS), per_step=True)
        per_model = {m: calibrated(tables[kind], held_out, m, kind) for m in MODELS}
        for m in MODELS:
            rows[m]["steps"] = ece(per_model[m], held_out.right[m])
            result["ece"][(kind, m)] = rows[m]
        lower, _ = pooled(held_out, {m: calibrated_low(tables[kind], held_out, m, kind) for m in MODELS})
        # Gates, on the calibrators of 2,000 labels per model (per step where the step has labels enough); the
        # calibrated gate decides as production's does (engine/nodes/gate.py), on the 95 % lower bound.
        fixed = gate(raw >= RAW_THRESHOLD, right)
        ours = gate(1 - lower <= TARGET_ERROR, right)
        thresholds, accepted, error = raw_frontier(raw, right)
        reachable = np.flatnonzero(error <= ours[1]) if ours[1] == ours[1] else np.array([], dtype=int)
        best = reachable[np.argmax(accepted[reachable])] if len(reachable) else None
        same_error = ((1 - accepted[best] / len(raw), float(thresholds[best]), float(error[best]))
                      if best is not None else (1.0, float("nan"), float("nan")))
        at_review = np.flatnonzero(accepted <= round((1 - ours[0]) * len(raw)))
        same_review = (float(error[at_review[-1]]), float(thresholds[at_review[-1]])) if len(at_review) else (
            float("nan"), float("nan"))
        result["gate"][kind] = {"fixed": fixed, "calibrated": ours, "same_error": same_error,
                                "same_review": same_review}
    # The cascade, on one signal's calibrators.
    table = tables[cascade_signal]
    probability = {m: calibrated(table, held_out, m, cascade_signal) for m in MODELS}
    tiers = list(MODELS)
    for threshold in CASCADE_THRESHOLDS:
        cost = np.zeros(test)
        right = np.zeros(test, dtype=bool)
        open_ = np.ones(test, dtype=bool)
        for index, model in enumerate(tiers):
            cost[open_] += MODELS[model]
            right[open_] = held_out.right[model][open_]
            if index < len(tiers) - 1:
                open_ &= probability[model] < threshold
        result["cascade"][threshold] = {"cost": float(cost.mean()), "accuracy": float(right.mean()),
                                        "escalated": float((cost > MODELS[tiers[0]]).mean())}
    result["largest"] = {"cost": MODELS[tiers[-1]], "accuracy": float(held_out.right[tiers[-1]].mean())}
    result["accuracy"] = {m: float(held_out.right[m].mean()) for m in MODELS}
    return result


def verdicts(result: dict) -> dict:
    tested = [row[500] <= TARGETS["ece"] for row in result["ece"].values() if row["raw"] >= TARGETS["ece_raw_from"]]
    gate_error, reviews = {}, {}
    for kind, figures in result["gate"].items():
        review, error = figures["calibrated"]
        gate_error[kind] = error <= TARGETS["gate_error"] if error == error else None  # None: accepts nothing
        fewer = review <= (1 - TARGETS["fewer_reviews"]) * figures["same_error"][0]
        doubled = figures["same_review"][0] >= TARGETS["error_ratio"] * error
        reviews[kind] = bool(fewer or doubled)
    return {"ece": all(tested), "ece_tested": len(tested), "gate_error": gate_error, "reviews": reviews}


def import_cost(module: str, runs: int = 3) -> float:
    """Seconds to import a module in a fresh interpreter (the fastest of a few runs)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return min(float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                                     text=True).stdout) for _ in range(runs))


def percent(value: float) -> str:
    return "   -  " if value != value else f"{value:6.1%}"


def report(result: dict) -> None:
    print(f"seed {result['seed']}: test accuracy " + ", ".join(f"{m} {a:.3f}" for m, a in result["accuracy"].items()))
    print(f"  {'ECE':<24}{'raw':>7}{'200':>7}{'500':>7}{'2000':>7}{'+steps':>8}")
    for (kind, model), row in result["ece"].items():
        print(f"  {kind + ' ' + model:<24}{row['raw']:>7.3f}{row[200]:>7.3f}{row[500]:>7.3f}{row[2000]:>7.3f}"
              f"{row['steps']:>8.3f}")
    print(f"  {'gate (2 %)':<17}{'raw>=0.8 review/error':>23}{'calibrated':>17}{'raw, same error':>24}"
          f"{'raw, same review':>22}")
    for kind, g in result["gate"].items():
        (fr, fe), (cr, ce), (sr, st, se), (re_, rt) = g["fixed"], g["calibrated"], g["same_error"], g["same_review"]
        print(f"  {kind:<17}{percent(fr):>14} /{percent(fe)}  {percent(cr)} /{percent(ce)}"
              f"  t={st:.4f}: {percent(sr)} /{percent(se)}   t={rt:.4f}: error{percent(re_)}")
    largest = result["largest"]
    cascade = "; ".join(f"<{t:.2f}: cost {c['cost']:.2f}, accuracy {c['accuracy']:.3f}, escalated {c['escalated']:.0%}"
                        for t, c in result["cascade"].items())
    print(f"  cascade (escalate while calibrated {ARGS.cascade_signal} {cascade}); always large: cost "
          f"{largest['cost']:.0f}, accuracy {largest['accuracy']:.3f}")


def main() -> int:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--test", type=int, default=5000, help="held-out questions (every model answers each)")
    parser.add_argument("--cascade-signal", choices=KINDS, default="logprobs")
    ARGS = parser.parse_args()
    print(f"confidence simulation: seeds {ARGS.seeds}, {ARGS.test} held-out questions x {len(MODELS)} models, "
          f"labels per model {', '.join(map(str, LABELS))}; gate target {TARGET_ERROR:.0%} error")
    print("ECE per model on its test answers; '+steps' = 2,000 labels with per-step calibrators. Gate "
          "columns: review rate / true error among auto-accepted answers.")
    started = time.perf_counter()
    results = []
    for seed in ARGS.seeds:
        results.append(simulate(seed, ARGS.test, ARGS.cascade_signal))
        report(results[-1])
    checks = [verdicts(r) for r in results]
    print(f"simulated in {time.perf_counter() - started:.1f} s")
    ece_line = all(c["ece"] for c in checks)
    print(f"{'meets' if ece_line else 'MISSES'} calibrated ECE <= {TARGETS['ece']} after 500 labels where raw ECE >= "
          f"{TARGETS['ece_raw_from']} ({sum(c['ece_tested'] for c in checks)} (signal, model) pairs over "
          f"{len(checks)} seeds, {sum(c['ece'] for c in checks)}/{len(checks)} seeds all met)")
    for kind in KINDS:
        outcomes = [c["gate_error"][kind] for c in checks]
        ok = all(outcomes)
        none = f", accepts no answer at all in {outcomes.count(None)}" if None in outcomes else ""
        print(f"{'meets' if ok else 'MISSES'} {kind}: calibrated gate's true error <= {TARGETS['gate_error']:.1%} "
              f"({outcomes.count(True)}/{len(checks)} seeds{none})")
        ok = all(c["reviews"][kind] for c in checks)
        print(f"{'meets' if ok else 'MISSES'} {kind}: calibrated gate reviews >= {TARGETS['fewer_reviews']:.0%} fewer "
              f"than a raw threshold at its error, or the raw threshold errs >= {TARGETS['error_ratio']:g}x at its "
              f"review rate ({sum(c['reviews'][kind] for c in checks)}/{len(checks)} seeds)")
    hot, fit = import_cost("orchestration.engine.calibration"), import_cost("orchestration.engine.calibration_fit")
    print(f"import cost in a fresh interpreter: orchestration.engine.calibration {hot * 1000:.1f} ms (the hot path), "
          f"orchestration.engine.calibration_fit {fit * 1000:.0f} ms (numpy + scikit-learn, the periodic job only)")
    return 0


ARGS = argparse.Namespace(cascade_signal="logprobs")

if __name__ == "__main__":
    sys.exit(main())

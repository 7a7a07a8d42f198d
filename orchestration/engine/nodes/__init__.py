"""Workflow node handlers. Every node returns a NodeResult {output, confidence, tokens_in, tokens_out,
cost_usd, latency_ms} and reports itself as a step (node_type = its type; parent_id = the enclosing
node's step, so a run's steps form a span tree). Keys are unique per run: the node id, plus
`/<role>` for a node's own model calls, `#<n>` for an iteration and `@<n>` for a branch
(`fact/judge`, `polish/critique#2`, `report/worker@3`, `answer/tier@1`).

Confidence, in [0, 1], from the most direct evidence available:

  call        measured as the model's confidence method says (or the node's `confidence` override): token
              log-probabilities, self-consistency agreement or a verifier's score, mapped to the probability
              of being right by the calibrator fitted from reviews (engine/confidence.py); else the model's
              quality prior, recorded as method "prior" (the last resort everywhere below)
  route       the chosen model's call
  cascade     the accepted tier's call (the first whose calibrated confidence >= threshold, else the last tier)
  sequence    the last stage's
  parallel    majority: agreement share — the winning answer's votes / branches that answered
              (answers compared after normalising case, accents, punctuation and spacing)
              weighted: the winning answer's share of the total weight, weight = confidence x quality prior
              judge: the judge's score for the best candidate (the judge call's own confidence if it gave none)
              merge: the mean confidence of the merged branches
  refine      the critic's last score (the critic call's own confidence if it gave none)
  supervisor  the synthesizer's call
  gate        the gated node's (passes when >= threshold, or when 1 - calibrated <= max_error_rate);
              1.0 once a person approved or edited the output
"""
from orchestration.engine.nodes.ensemble import run_parallel, run_sequence
from orchestration.engine.nodes.execution import Execution, RunCancelled, Scope, span_step_id  # noqa: F401
from orchestration.engine.nodes.gate import run_gate
from orchestration.engine.nodes.loops import run_refine, run_supervisor
from orchestration.engine.nodes.measure import MEASURERS  # noqa: F401
from orchestration.engine.nodes.single import run_call, run_cascade, run_route

HANDLERS = {
    "call": run_call,
    "route": run_route,
    "cascade": run_cascade,
    "sequence": run_sequence,
    "parallel": run_parallel,
    "refine": run_refine,
    "supervisor": run_supervisor,
    "gate": run_gate,
}

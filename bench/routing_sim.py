"""Does the `learned` router learn from reviewers? A seeded simulation.

Four mock models with the demo registry's tiers, prices and quality priors, and a *hidden*
approval probability per request category that the router never sees. Requests arrive with a
category; the router (orchestration.engine.bandit.choose, the production strategy, through
route_choice.RouteRequest) picks a model; a simulated reviewer approves the answer with the hidden
probability of that model in that category. As in production, the router does not learn per
answer: the periodic learning job folds decisions into the statistics every FEEDBACK_EVERY
requests, and only REVIEW_RATE of the answers are reviewed at all.

Compared, on the same request sequence:
  oracle   knows the hidden table and always picks the most approved model for the category
  largest  always the largest model (titan-ultra): the cost baseline
  learned  Thompson sampling on the statistics it was fed
  cost, balanced   the static strategies (no statistics), for comparison

Quality is the hidden approval probability of the chosen model (its expectation, so the figures
do not depend on the reviewers' coin flips); cost is the request's USD cost at the model's prices.
Prints the learning curve per block and the final ratios over the last FINAL_WINDOW requests;
exits 1 if the learned router misses quality >= 90 % of the oracle's or cost <= 50 % of the
largest model's.

    .venv/bin/python bench/routing_sim.py [--seed 7] [--requests 4000] [--review-rate 0.5]
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestration.engine import bandit  # noqa: E402
from orchestration.engine.route_choice import RouteRequest  # noqa: E402
from orchestration.engine.routing import by_balance, by_cost
from orchestration.engine.types import ModelSpec, ProviderSpec  # noqa: E402

MOCK = ProviderSpec(name="sim", kind="mock", base_url="")
# alias, tier, $ in / 1M, $ out / 1M, quality prior (as in orchestration/demo.py)
MODELS = [
    ModelSpec("swift-mini", "swift-mini", MOCK, "fast", 0.15, 0.60, 0.62),
    ModelSpec("swift-code", "swift-code", MOCK, "fast", 0.20, 0.80, 0.66),
    ModelSpec("atlas-pro", "atlas-pro", MOCK, "medium", 1.00, 4.00, 0.80),
    ModelSpec("titan-ultra", "titan-ultra", MOCK, "large", 5.00, 20.00, 0.93),
]
LARGEST = "titan-ultra"
# category: (share of traffic, tokens in, tokens out)
CATEGORIES = {"chat": (0.30, 300, 200), "code": (0.25, 600, 500), "summarize": (0.25, 1500, 250),
              "reasoning": (0.20, 400, 600)}
# The hidden truth: probability that a reviewer approves each model's answer, per category. The code
# specialist beats the largest model at code, so the oracle is not simply "always the largest".
HIDDEN_QUALITY = {
    "chat":      {"swift-mini": 0.80, "swift-code": 0.70, "atlas-pro": 0.88, "titan-ultra": 0.92},
    "code":      {"swift-mini": 0.55, "swift-code": 0.94, "atlas-pro": 0.82, "titan-ultra": 0.93},
    "summarize": {"swift-mini": 0.85, "swift-code": 0.70, "atlas-pro": 0.90, "titan-ultra": 0.91},
    "reasoning": {"swift-mini": 0.35, "swift-code": 0.45, "atlas-pro": 0.75, "titan-ultra": 0.92},
}
FEEDBACK_EVERY = 50
REVIEW_RATE = 0.5
FINAL_WINDOW = 1000
BLOCK = 250
TARGET_QUALITY = 0.90
TARGET_COST = 0.50


@dataclass
class Totals:
    quality: float = 0.0
    cost: float = 0.0
    count: int = 0

    def add(self, quality: float, cost: float) -> None:
        self.quality += quality
        self.cost += cost
        self.count += 1


@dataclass
class SimResult:
    curve: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    overall: dict = field(default_factory=dict)
    picks: dict = field(default_factory=dict)
    static: dict = field(default_factory=dict)

    @property
    def meets_targets(self) -> bool:
        return self.final["quality_ratio"] >= TARGET_QUALITY and self.final["cost_ratio"] <= TARGET_COST


def request_cost(model: ModelSpec, category: str) -> float:
    _, tokens_in, tokens_out = CATEGORIES[category]
    return model.cost_usd(tokens_in, tokens_out)


def ratios(learned: Totals, oracle: Totals, largest: Totals) -> dict:
    return {"quality_ratio": learned.quality / oracle.quality, "cost_ratio": learned.cost / largest.cost,
            "learned_quality": learned.quality / learned.count, "oracle_quality": oracle.quality / oracle.count,
            "learned_cost_usd": learned.cost / learned.count, "largest_cost_usd": largest.cost / largest.count}


def simulate(seed: int = 7, requests: int = 4000, review_rate: float = REVIEW_RATE,
             feedback_every: int = FEEDBACK_EVERY, cost_weight: float = bandit.COST_WEIGHT) -> SimResult:
    world = random.Random(seed)  # traffic and reviewers
    bandit.reseed(seed + 1)  # the router's own draws
    by_alias = {m.alias: m for m in MODELS}
    names, shares = list(CATEGORIES), [share for share, _, _ in CATEGORIES.values()]
    oracle_pick = {c: max(MODELS, key=lambda m: (HIDDEN_QUALITY[c][m.alias], -m.price_out_per_m)).alias
                   for c in CATEGORIES}
    # What the learning job has published (stats the router reads) and what it has not folded in yet.
    published: dict[str, dict] = {}
    counts: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    static = {"cost": by_cost(MODELS, RouteRequest(text="")).model,
              "balanced": by_balance(MODELS, RouteRequest(text="")).model}
    totals = {name: Totals() for name in ("learned", "oracle", "largest", "cost", "balanced")}
    final = {name: Totals() for name in totals}
    block = {name: Totals() for name in totals}
    block_explored = 0
    picks: Counter = Counter()
    result = SimResult()
    for index in range(1, requests + 1):
        category = world.choices(names, shares)[0]
        choice = bandit.choose(MODELS, RouteRequest(text="", options={"category": category, "cost_weight": cost_weight},
                                                    stats=published))
        chosen = by_alias[choice.model]
        block_explored += "(exploring)" in choice.reason
        picks[(category, chosen.alias)] += 1
        approved = world.random() < HIDDEN_QUALITY[category][chosen.alias]
        if world.random() < review_rate:
            counts[(chosen.alias, category)][0] += approved
            counts[(chosen.alias, category)][1] += 1
        for name, alias in (("learned", chosen.alias), ("oracle", oracle_pick[category]), ("largest", LARGEST),
                            ("cost", static["cost"]), ("balanced", static["balanced"])):
            quality, cost = HIDDEN_QUALITY[category][alias], request_cost(by_alias[alias], category)
            totals[name].add(quality, cost)
            block[name].add(quality, cost)
            if index > requests - FINAL_WINDOW:
                final[name].add(quality, cost)
        if index % feedback_every == 0:
            published = publish(counts)
        if index % BLOCK == 0:
            result.curve.append({"requests": index, **ratios(block["learned"], block["oracle"], block["largest"]),
                                 "explored": block_explored / BLOCK})
            block = {name: Totals() for name in totals}
            block_explored = 0
    result.final = ratios(final["learned"], final["oracle"], final["largest"])
    result.overall = ratios(totals["learned"], totals["oracle"], totals["largest"])
    result.picks = dict(picks)
    result.static = {name: {"model": static[name], **ratios(final[name], final["oracle"], final["largest"])}
                     for name in static}
    return result


def publish(counts: dict[tuple[str, str], list[float]]) -> dict[str, dict]:
    """The statistics as orchestration.learning.routing_stats shapes them."""
    stats: dict[str, dict] = {}
    for (alias, category), (approvals, reviews) in counts.items():
        entry = stats.setdefault(alias, {"approvals": 0.0, "reviews": 0.0, "categories": {}})
        entry["approvals"] += approvals
        entry["reviews"] += reviews
        entry["categories"][category] = {"approvals": approvals, "reviews": reviews}
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--review-rate", type=float, default=REVIEW_RATE)
    parser.add_argument("--cost-weight", type=float, default=bandit.COST_WEIGHT)
    args = parser.parse_args()
    result = simulate(seed=args.seed, requests=args.requests, review_rate=args.review_rate,
                      cost_weight=args.cost_weight)
    print(f"routing simulation: seed {args.seed}, {args.requests} requests, review rate {args.review_rate:g}, "
          f"feedback every {FEEDBACK_EVERY}, cost weight {args.cost_weight:g}")
    print("learning curve (per block of %d requests; ratios against the oracle's quality and the largest "
          "model's cost on the same requests):" % BLOCK)
    print(f"  {'requests':>8}  {'quality/oracle':>14}  {'cost/largest':>12}  {'explored':>8}")
    for point in result.curve:
        print(f"  {point['requests']:>8}  {point['quality_ratio']:>14.3f}  {point['cost_ratio']:>12.3f}  "
              f"{point['explored']:>8.1%}")
    print("picks per category:")
    for category in CATEGORIES:
        row = ", ".join(f"{m.alias} {result.picks.get((category, m.alias), 0)}" for m in MODELS)
        print(f"  {category:<10} {row}")
    for label, figures in (("overall", result.overall), (f"last {FINAL_WINDOW}", result.final)):
        print(f"{label:>15}: quality {figures['learned_quality']:.3f} vs oracle {figures['oracle_quality']:.3f} "
              f"= {figures['quality_ratio']:.1%}; cost ${figures['learned_cost_usd'] * 1000:.4f} vs largest "
              f"${figures['largest_cost_usd'] * 1000:.4f} per 1k requests = {figures['cost_ratio']:.1%}")
    for name, figures in result.static.items():
        print(f"{'static ' + name:>15}: always {figures['model']}: quality {figures['quality_ratio']:.1%} of the "
              f"oracle's, cost {figures['cost_ratio']:.1%} of the largest's (last {FINAL_WINDOW})")
    verdict = "meets" if result.meets_targets else "MISSES"
    print(f"{verdict} the targets (quality >= {TARGET_QUALITY:.0%} of the oracle's, cost <= {TARGET_COST:.0%} of "
          f"the largest model's) over the last {FINAL_WINDOW} requests")
    return 0 if result.meets_targets else 1


if __name__ == "__main__":
    sys.exit(main())

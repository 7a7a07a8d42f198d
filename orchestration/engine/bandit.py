"""The `learned` routing strategy: Thompson sampling with models as the arms of a bandit.

Each (category, model) arm has a Beta posterior over p, the probability that a reviewer approves
the model's answer as it is:

    alpha = 1 + K * q0 + approvals
    beta  = 1 + K * (1 - q0) + (reviews - approvals)

q0 is the model's quality prior from the registry and K = PRIOR_WEIGHT pseudo-reviews, so an
unreviewed model starts near its prior rather than at a coin flip. `approvals` may be fractional:
a judged quality score s in [0, 1] (a judge model's verdict) counts as s approvals out of 1 review.

For each request, draw theta_m ~ Beta(alpha_m, beta_m) for every candidate m and pick the largest

    score_m = clip(theta_m, mean_m - Z * sd_m, mean_m + Z * sd_m) - LAMBDA * c_m / c_max

c_m is the model's blended price per 1M tokens and c_max the largest among the candidates, so the
reward the router maximises in expectation is   r = approval - LAMBDA * c / c_max   (LAMBDA = the
route option "cost_weight", default COST_WEIGHT: the share of approval probability worth paying
the most expensive candidate's price for).

Exploration is bounded twice:
  1. a draw is clipped to Z posterior standard deviations around the mean, so a lucky tail draw
     cannot pick an arm the evidence says is far worse;
  2. an arm is eliminated — not drawn at all — once its optimistic score (mean + Z*sd - cost) is
     below the best arm's pessimistic score (mean - Z*sd - cost). Statistics are rolling windows,
     so old evidence ages out and an eliminated arm becomes uncertain, and eligible, again.

No Django here: counts come in `RouteRequest.stats[alias]` as {"approvals", "reviews",
"categories": {category: {"approvals", "reviews"}}} (built from ModelStat by
orchestration.learning.routing_stats); the simulation in bench/routing_sim.py drives the same
`choose_arm` with counts it keeps itself.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from orchestration.engine.route_choice import RouteChoice, RouteRequest, blended_price, classify_by_rules
from orchestration.engine.types import ModelSpec

PRIOR_WEIGHT = 4.0
COST_WEIGHT = 0.15
Z = 2.0

_rng = random.Random()


def reseed(seed: int) -> None:
    """Make the strategy's draws reproducible (simulations, tests)."""
    _rng.seed(seed)


@dataclass(frozen=True)
class Arm:
    alias: str
    price: float  # blended USD per 1M tokens
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def sd(self) -> float:
        total = self.alpha + self.beta
        return math.sqrt(self.alpha * self.beta / (total * total * (total + 1)))


def arm(alias: str, price: float, quality_prior: float, approvals: float = 0.0, reviews: float = 0.0,
        prior_weight: float = PRIOR_WEIGHT) -> Arm:
    q0 = min(max(quality_prior, 0.0), 1.0)
    approvals = min(max(approvals, 0.0), max(reviews, 0.0))
    return Arm(alias=alias, price=price, alpha=1 + prior_weight * q0 + approvals,
               beta=1 + prior_weight * (1 - q0) + max(reviews, 0.0) - approvals)


def choose_arm(arms: list[Arm], *, cost_weight: float = COST_WEIGHT, z: float = Z,
               rng: random.Random | None = None) -> tuple[str, dict[str, float], bool]:
    """(chosen alias, sampled score per eligible arm, whether the choice differs from the greedy one)."""
    rng = rng or _rng
    c_max = max(a.price for a in arms) or 1.0
    cost = {a.alias: cost_weight * a.price / c_max for a in arms}
    greedy = max(arms, key=lambda a: (a.mean - cost[a.alias], -a.price))
    floor = max(a.mean - z * a.sd - cost[a.alias] for a in arms)
    eligible = [a for a in arms if a.mean + z * a.sd - cost[a.alias] >= floor] or [greedy]
    scores = {}
    for a in eligible:
        theta = rng.betavariate(a.alpha, a.beta)
        theta = min(max(theta, a.mean - z * a.sd), a.mean + z * a.sd)
        scores[a.alias] = theta - cost[a.alias]
    chosen = max(eligible, key=lambda a: (scores[a.alias], -a.price)).alias
    return chosen, scores, chosen != greedy.alias


def arm_counts(stats: Mapping[str, Mapping], alias: str, category: str) -> tuple[float, float]:
    """(approvals, reviews) of one model, in the category when it has reviews there, else overall."""
    entry = stats.get(alias) or {}
    if category:
        in_category = (entry.get("categories") or {}).get(category) or {}
        if in_category.get("reviews"):
            return float(in_category.get("approvals") or 0), float(in_category["reviews"])
        return 0.0, 0.0
    return float(entry.get("approvals") or 0), float(entry.get("reviews") or 0)


def request_category(request: RouteRequest) -> str:
    """The route's fixed category, or the one its keyword rules find in the request, or "" (all)."""
    options = request.options
    if options.get("category"):
        return str(options["category"])
    if options.get("rules"):
        category, _ = classify_by_rules(request.text, options["rules"])
        return category or ""
    return ""


def choose(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    """The `learned` strategy (registered in routing.STRATEGIES)."""
    options = request.options
    category = request_category(request)
    arms = [arm(m.alias, blended_price(m), m.quality_prior, *arm_counts(request.stats, m.alias, category),
                prior_weight=float(options.get("prior_weight", PRIOR_WEIGHT)))
            for m in candidates]
    rng = random.Random(options["seed"]) if "seed" in options else None
    chosen, scores, explored = choose_arm(arms, cost_weight=float(options.get("cost_weight", COST_WEIGHT)),
                                          z=float(options.get("z", Z)), rng=rng)
    picked = next(a for a in arms if a.alias == chosen)
    reason = (f"Thompson sample {'(exploring) ' if explored else ''}in category {category or 'all'}: "
              f"approval {picked.mean:.2f} ± {picked.sd:.2f} minus cost weight")
    return RouteChoice(model=chosen, reason=reason, scores=scores, category=category or None)

"""Routing strategies: pick one model among candidates for one request.

A strategy is `fn(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice` (or an
awaitable of one); `STRATEGIES` maps names to them, so a new strategy is one line:
`STRATEGIES["learned"] = bandit.choose`.

Observed statistics come in `RouteRequest.stats`, a mapping alias -> {"success_rate",
"latency_p50_ms", "calls", ...} (the Django side reads ModelStat); a model without stats
gets the priors below.

  cost      cheapest blended price; ties -> higher quality prior
  quality   highest quality prior; ties -> cheaper
  latency   lowest observed p50 latency (prior by tier); ties -> higher quality
  balanced  highest score, one formula over four signals, each in [0, 1]:

              score = 0.40 * q  +  0.20 * s  +  0.25 * (1 - c / c_max)  +  0.15 * (1 - l / l_max)

            q = quality prior, s = observed success rate (prior 0.99), c = blended price per 1M tokens
            ((in + out) / 2), l = observed p50 latency (prior by tier); c_max and l_max are the largest
            among the candidates (a term is 1 for everyone when all are 0). Weights can be overridden
            with options {"weights": {"quality": .., "success": .., "cost": .., "latency": ..}}.
  tier      the candidates of options["tier"] (fast | medium | large), best balanced score among them;
            with none in that tier, the next larger tier that has some
  classifier  specialist routing: the request is classified into one of options["categories"]
            ({category: model alias}) — by keyword rules (options["rules"]: {category: [keywords]}) or,
            when options["classifier_model"] is set, by asking that model — and goes to the
            category's model when the classifier's confidence >= options["threshold"] (default 0.6),
            else to options["general"] (default: the first candidate). Rule confidence is the
            category's share of all keyword hits (one category hit alone -> 1.0; none -> 0).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import replace

from orchestration.engine import bandit
from orchestration.engine.policy import allows, filter_candidates
from orchestration.engine.registry import Registry, RouteSpec, UnknownModel
from orchestration.engine.replies import parse_json_object, parse_score
from orchestration.engine.route_choice import RouteChoice, RouteRequest, blended_price, classify_by_rules
from orchestration.engine.types import ModelSpec

SUCCESS_PRIOR = 0.99
TIER_LATENCY_PRIOR_MS = {"fast": 400.0, "medium": 1000.0, "large": 2500.0}
TIER_ORDER = ("fast", "medium", "large")
BALANCED_WEIGHTS = {"quality": 0.40, "success": 0.20, "cost": 0.25, "latency": 0.15}
CLASSIFIER_THRESHOLD = 0.6
CLASSIFY_MARKER = "Classify the request into exactly one of these categories"
CLASSIFIER_MAX_TOKENS = 256  # a /v1 route's classification call answers at most this (its budget hold's bound)


def observed_latency(model: ModelSpec, stats: Mapping[str, Mapping]) -> float:
    value = (stats.get(model.alias) or {}).get("latency_p50_ms")
    return float(value) if value is not None else TIER_LATENCY_PRIOR_MS.get(model.tier, 1000.0)


def observed_success(model: ModelSpec, stats: Mapping[str, Mapping]) -> float:
    value = (stats.get(model.alias) or {}).get("success_rate")
    return float(value) if value is not None else SUCCESS_PRIOR


def _best(candidates: list[ModelSpec], key, reason: str, scores: dict[str, float] | None = None) -> RouteChoice:
    chosen = min(candidates, key=key)
    return RouteChoice(model=chosen.alias, reason=reason, scores=scores or {})


def by_cost(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    scores = {m.alias: blended_price(m) for m in candidates}
    return _best(candidates, lambda m: (blended_price(m), -m.quality_prior),
                 "cheapest blended price per 1M tokens", scores)


def by_quality(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    scores = {m.alias: m.quality_prior for m in candidates}
    return _best(candidates, lambda m: (-m.quality_prior, blended_price(m)), "highest quality prior", scores)


def by_latency(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    scores = {m.alias: observed_latency(m, request.stats) for m in candidates}
    return _best(candidates, lambda m: (scores[m.alias], -m.quality_prior), "lowest observed p50 latency", scores)


def balanced_scores(candidates: list[ModelSpec], request: RouteRequest) -> dict[str, float]:
    weights = {**BALANCED_WEIGHTS, **(request.options.get("weights") or {})}
    c_max = max(blended_price(m) for m in candidates)
    l_max = max(observed_latency(m, request.stats) for m in candidates)
    scores = {}
    for m in candidates:
        cost_term = 1 - blended_price(m) / c_max if c_max > 0 else 1.0
        latency_term = 1 - observed_latency(m, request.stats) / l_max if l_max > 0 else 1.0
        scores[m.alias] = (weights["quality"] * m.quality_prior + weights["success"] * observed_success(m, request.stats)
                           + weights["cost"] * cost_term + weights["latency"] * latency_term)
    return scores


def by_balance(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    scores = balanced_scores(candidates, request)
    return _best(candidates, lambda m: -scores[m.alias], "best balanced score (quality, success, cost, latency)",
                 scores)


def by_tier(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    wanted = request.options.get("tier", "fast")
    start = TIER_ORDER.index(wanted) if wanted in TIER_ORDER else 0
    for tier in TIER_ORDER[start:]:
        in_tier = [m for m in candidates if m.tier == tier]
        if in_tier:
            choice = by_balance(in_tier, request)
            choice.reason = (f"tier {tier}" if tier == wanted else f"no {wanted} candidate; next tier {tier}") \
                + ", best balanced score"
            return choice
    choice = by_balance(candidates, request)
    choice.reason = f"no candidate in tier {wanted} or above; best balanced score overall"
    return choice


def classifier_prompt(text: str, categories: list[str]) -> str:
    return (f"{CLASSIFY_MARKER}: {', '.join(categories)}. Reply with JSON only, like "
            f'{{"category": "{categories[0]}", "confidence": 0.9}}.\n\nRequest:\n{text}')


async def by_classifier(candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    options = request.options
    categories: dict = options.get("categories") or {}
    threshold = float(options.get("threshold", CLASSIFIER_THRESHOLD))
    general = options.get("general") or (candidates[0].alias if candidates else None)
    if general is None:
        raise UnknownModel("<classifier route without a general model>")
    category, confidence, how = None, 0.0, "rules"
    if options.get("classifier_model") and request.classify is not None and categories:
        how = options["classifier_model"]
        result = await request.classify(options["classifier_model"], classifier_prompt(request.text, list(categories)))
        reply = parse_json_object(result.output) or {}
        category = reply.get("category") if reply.get("category") in categories else None
        score = parse_score(result.output, "confidence")
        confidence = score if score is not None else result.confidence
    elif options.get("rules"):
        category, confidence = classify_by_rules(request.text, options["rules"])
    if category is not None and confidence >= threshold and categories.get(category) in request.models:
        return RouteChoice(model=categories[category], category=category, classifier_confidence=confidence,
                           reason=f"classified as {category} by {how} (confidence {confidence:.2f} >= {threshold:g})")
    why = ("no category matched" if category is None
           else f"classified as {category} by {how} but confidence {confidence:.2f} < {threshold:g}"
           if confidence < threshold else f"the {category} model is unavailable")
    return RouteChoice(model=general, category=category, classifier_confidence=confidence,
                       reason=f"{why}; general model")


STRATEGIES: dict[str, Callable] = {
    "cost": by_cost,
    "quality": by_quality,
    "latency": by_latency,
    "balanced": by_balance,
    "tier": by_tier,
    "classifier": by_classifier,
    "learned": bandit.choose,  # Thompson sampling on reviewers' approvals; formula in bandit.py
}


async def choose(strategy: str, candidates: list[ModelSpec], request: RouteRequest) -> RouteChoice:
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise LookupError(f"unknown routing strategy {strategy!r}") from None
    if not candidates and strategy != "classifier":
        raise UnknownModel("<a route with no enabled candidate>")
    choice = fn(candidates, request)
    return await choice if inspect.isawaitable(choice) else choice


async def resolve_route(route: RouteSpec, registry: Registry, *, text: str, stats: Mapping | None = None,
                        classify=None, data_class: str | None = None) -> tuple[ModelSpec, dict]:
    """The model a route alias picks, with the route's other candidates as its fallbacks, and attributes
    for the step (strategy, chosen, reason, scores, fallback order).

    With a `data_class`, only the candidates the policy lets receive it take part (engine/policy.py): sensitive
    work goes to a local candidate when the route has one; RouteRefused when it has none."""
    local_only = registry.local_only_data_classes
    enabled = [registry.models[alias] for alias in route.candidates if alias in registry.models]
    candidates = filter_candidates(route.name, enabled, data_class, local_only) if enabled else enabled
    allowed = {m.alias for m in candidates}
    # A strategy naming models beyond the candidates (the classifier's categories) sees only allowed ones.
    models = registry.models if data_class is None else {
        alias: spec for alias, spec in registry.models.items() if allows(spec, data_class, local_only)}
    options = dict(route.options)
    if data_class is not None and options.get("general") and options["general"] not in models:
        options["general"] = candidates[0].alias if candidates else None
    if data_class is not None and options.get("classifier_model") and options["classifier_model"] not in models:
        options.pop("classifier_model")  # the text may not go to that classifier: its keyword rules decide
    request = RouteRequest(text=text, options=options, stats=stats or {}, models=models, classify=classify)
    choice = await choose(route.strategy, candidates, request)
    model = registry.model(choice.model)
    fallbacks = tuple(alias for alias in route.candidates
                      if alias != model.alias and alias in registry.models and (data_class is None or alias in allowed))
    attributes = {"route": route.name, "strategy": route.strategy, **choice.attributes(),
                  "fallback_order": list(fallbacks)}
    if data_class is not None and len(candidates) < len(enabled):
        attributes["data_class_excluded"] = [m.alias for m in enabled if m.alias not in allowed]
    # The route's own order is the fallback chain for this call.
    return replace(model, fallbacks=fallbacks or model.fallbacks), attributes

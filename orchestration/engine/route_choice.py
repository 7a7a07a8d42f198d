"""What a routing strategy is given and what it answers, with the helpers strategies share (routing.py, bandit.py)."""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from orchestration.engine.types import ModelSpec


@dataclass
class RouteRequest:
    text: str  # the request's text (what a classifier reads)
    options: dict = field(default_factory=dict)
    stats: Mapping[str, Mapping] = field(default_factory=dict)
    models: Mapping[str, ModelSpec] = field(default_factory=dict)  # the registry, for strategies naming others
    # classify(model_alias, prompt) -> the model's NodeResult; given when a strategy may call a model
    classify: Callable[[str, str], Awaitable] | None = None


@dataclass
class RouteChoice:
    model: str
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    category: str | None = None
    classifier_confidence: float | None = None

    def attributes(self) -> dict:
        found = {"chosen": self.model, "reason": self.reason}
        if self.scores:
            found["scores"] = {alias: round(value, 4) for alias, value in self.scores.items()}
        if self.category is not None:
            found["category"] = self.category
        if self.classifier_confidence is not None:
            found["classifier_confidence"] = round(self.classifier_confidence, 4)
        return found


def blended_price(model: ModelSpec) -> float:
    return (model.price_in_per_m + model.price_out_per_m) / 2


def classify_by_rules(text: str, rules: Mapping[str, list[str]]) -> tuple[str | None, float]:
    lowered = text.lower()
    hits = {}
    for category, keywords in rules.items():
        count = sum(1 for word in keywords if re.search(r"\b" + re.escape(str(word).lower()) + r"\b", lowered))
        if count:
            hits[category] = count
    if not hits:
        return None, 0.0
    category = max(hits, key=hits.get)
    return category, hits[category] / sum(hits.values())

"""An immutable snapshot of the registry, as the engine sees it."""
from __future__ import annotations

from dataclasses import dataclass, field

from orchestration.engine.policy import DEFAULT_LOCAL_ONLY
from orchestration.engine.types import ModelSpec


@dataclass(frozen=True)
class RouteSpec:
    name: str
    strategy: str
    candidates: tuple[str, ...]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelSpec] = field(default_factory=dict)  # enabled models by alias
    routes: dict[str, RouteSpec] = field(default_factory=dict)
    version: str = ""
    # data classes that go only to local models or models that list them (PODIUM_LOCAL_ONLY_DATA_CLASSES)
    local_only_data_classes: frozenset[str] = DEFAULT_LOCAL_ONLY

    def model(self, alias: str) -> ModelSpec:
        try:
            return self.models[alias]
        except KeyError:
            raise UnknownModel(alias) from None


class UnknownModel(LookupError):
    def __init__(self, alias: str):
        super().__init__(f"The model '{alias}' does not exist or is disabled")
        self.alias = alias

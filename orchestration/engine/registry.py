"""An immutable snapshot of the registry, as the engine sees it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from orchestration.engine.policy import DEFAULT_LOCAL_ONLY
from orchestration.engine.types import ModelSpec


@dataclass(frozen=True)
class RouteSpec:
    name: str
    strategy: str
    candidates: tuple[str, ...]
    options: dict = field(default_factory=dict)


_within_cache: dict[tuple[str, frozenset[str]], tuple["Registry", "Registry"]] = {}


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelSpec] = field(default_factory=dict)  # enabled models by alias
    routes: dict[str, RouteSpec] = field(default_factory=dict)
    version: str = ""
    # data classes that go only to local models or models that list them (PODIUM_LOCAL_ONLY_DATA_CLASSES)
    local_only_data_classes: frozenset[str] = DEFAULT_LOCAL_ONLY

    def within(self, targets: frozenset[str] | None) -> "Registry":
        """The registry as a team that may call only `targets` (model and route aliases) sees it; None = all.

        A route alias the team may call brings its candidates (and its general and classifier models) with it;
        a model's fallbacks come only if the team may call them too. What is left out does not exist for the
        run: a workflow step naming it fails as an unknown model would. Cached per snapshot and target set."""
        if targets is None:
            return self
        cached = _within_cache.get((self.version, targets))
        if cached is not None and cached[0] is self:
            return cached[1]
        routes = {name: route for name, route in self.routes.items() if name in targets}
        aliases = set(targets)
        for route in routes.values():
            aliases.update(route.candidates)
            aliases.update(str(route.options[option]) for option in ("general", "classifier_model")
                           if route.options.get(option))
        narrowed = replace(self, models={alias: spec for alias, spec in self.models.items() if alias in aliases},
                           routes=routes)
        if len(_within_cache) > 256:  # one entry per team and snapshot: old snapshots' go
            _within_cache.clear()
        _within_cache[(self.version, targets)] = (self, narrowed)
        return narrowed

    def model(self, alias: str) -> ModelSpec:
        try:
            return self.models[alias]
        except KeyError:
            raise UnknownModel(alias) from None


class UnknownModel(LookupError):
    def __init__(self, alias: str):
        super().__init__(f"The model '{alias}' does not exist or is disabled")
        self.alias = alias

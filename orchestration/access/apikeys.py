"""API-key authentication from an in-process cache, cleared whenever the registry version moves."""
from __future__ import annotations

from dataclasses import dataclass

from orchestration import registry as registry_module
from orchestration.models import APIKey
from orchestration.models.keys import KEY_PREFIX, hash_key


@dataclass(frozen=True)
class TeamInfo:
    """What the hot path needs of a key's team, read once with the key."""
    id: int
    slug: str
    # Model and route aliases the team may call; None = every one.
    allowed_targets: frozenset[str] | None
    default_data_class: str
    budget_usd_per_day: float | None
    budget_usd_per_month: float | None
    tokens_per_minute: int | None

    def may_call(self, alias: str) -> bool:
        return self.allowed_targets is None or alias in self.allowed_targets

    @classmethod
    def of(cls, team) -> "TeamInfo":
        targets = set(team.allowed_models.values_list("alias", flat=True))
        targets |= set(team.allowed_route_aliases.values_list("name", flat=True))
        return cls(id=team.id, slug=team.slug, allowed_targets=frozenset(targets) if targets else None,
                   default_data_class=team.default_data_class,
                   budget_usd_per_day=money_or_none(team.budget_usd_per_day),
                   budget_usd_per_month=money_or_none(team.budget_usd_per_month),
                   tokens_per_minute=team.tokens_per_minute)


def money_or_none(value) -> float | None:
    return float(value) if value is not None else None


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    budget_usd: float | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    budget_usd_per_day: float | None = None
    budget_usd_per_month: float | None = None
    team: TeamInfo | None = None
    # The key's own default data class ("" = the team's default).
    data_class: str = ""

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def team_id(self) -> int | None:
        return self.team.id if self.team else None

    @property
    def default_data_class(self) -> str | None:
        """The data class of a request that names none: the key's, else its team's, else None."""
        return self.data_class or (self.team.default_data_class if self.team else "") or None

    def may_call(self, alias: str) -> bool:
        """Whether the key's team may call this model or route alias (a key with no team may call all)."""
        return self.team is None or self.team.may_call(alias)


_cache: dict[str, KeyInfo | None] = {}
_cache_version: list[str | None] = [None]


def cached_key(raw_key: str) -> tuple[bool, KeyInfo | None]:
    """(hit, info) without touching the database; a miss means call `load_key`."""
    if _cache_version[0] != registry_module._state["version"] or registry_module.cached_registry() is None:
        return False, None
    digest = hash_key(raw_key)
    if digest in _cache:
        return True, _cache[digest]
    return False, None


def key_info_of(row: APIKey) -> KeyInfo:
    """What the hot path keeps of an API key row (its team read with it: select_related("team"))."""
    return KeyInfo(
        id=row.id, name=row.name, prefix=row.prefix, scopes=frozenset(row.scopes or ()),
        budget_usd=money_or_none(row.budget_usd), requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute, budget_usd_per_day=money_or_none(row.budget_usd_per_day),
        budget_usd_per_month=money_or_none(row.budget_usd_per_month),
        team=TeamInfo.of(row.team) if row.team_id else None, data_class=row.data_class,
    )


def load_key(raw_key: str) -> KeyInfo | None:
    """Look a key up in the database (sync) and remember the answer, found or not."""
    registry_module.get_registry()  # refresh the version first so the cache is cleared when stale
    version = registry_module._state["version"]
    if _cache_version[0] != version:
        _cache.clear()
        _cache_version[0] = version
    if not raw_key.startswith(KEY_PREFIX):
        return None
    digest = hash_key(raw_key)
    row = APIKey.objects.filter(key_hash=digest, revoked_at__isnull=True).select_related("team").first()
    info = None if row is None else key_info_of(row)
    if len(_cache) > 10_000:  # bounded: random bad keys must not grow memory forever
        _cache.clear()
    _cache[digest] = info
    return info

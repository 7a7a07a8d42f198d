"""API-key authentication from an in-process cache, cleared whenever the registry version moves."""
from __future__ import annotations

from dataclasses import dataclass

from orchestration import registry as registry_module
from orchestration.models import APIKey
from orchestration.models.keys import KEY_PREFIX, hash_key


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    budget_usd: float | None
    requests_per_minute: int | None
    tokens_per_minute: int | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


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
    row = APIKey.objects.filter(key_hash=digest, revoked_at__isnull=True).first()
    info = None if row is None else KeyInfo(
        id=row.id, name=row.name, prefix=row.prefix, scopes=frozenset(row.scopes or ()),
        budget_usd=float(row.budget_usd) if row.budget_usd is not None else None,
        requests_per_minute=row.requests_per_minute, tokens_per_minute=row.tokens_per_minute,
    )
    if len(_cache) > 10_000:  # bounded: random bad keys must not grow memory forever
        _cache.clear()
    _cache[digest] = info
    return info

"""The registry snapshot served to the hot path, rebuilt only when an admin changes something.

A version stamp lives in Django's cache (Redis in production, so every process
sees an admin's save); each process re-reads the stamp at most once per
REGISTRY_CHECK_INTERVAL and rebuilds its snapshot when the stamp moved.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from django.conf import settings
from django.core.cache import cache

from orchestration.engine.confidence import ConfidenceSpec
from orchestration.engine.registry import Registry, RouteSpec
from orchestration.engine.types import ModelSpec, ProviderSpec
from orchestration.models import LLMModel, RouteAlias

logger = logging.getLogger(__name__)
VERSION_KEY = "podium:registry:version"
_lock = threading.Lock()
_state = {"registry": None, "version": None, "checked_at": 0.0}


def bump_version() -> None:
    """Mark every process's snapshot stale (called on admin saves)."""
    try:
        cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception:  # cache (Redis) down: this process still rebuilds; others catch up when it returns
        logger.warning("registry version not bumped: the cache is unavailable")
        _state["registry"] = None
    _state["checked_at"] = 0.0


def _current_version() -> str:
    version = cache.get(VERSION_KEY)
    if version is None:
        version = uuid.uuid4().hex
        cache.add(VERSION_KEY, version, timeout=None)
        version = cache.get(VERSION_KEY, version)
    return version


def build_registry(version: str = "") -> Registry:
    models = {}
    for row in LLMModel.objects.select_related("provider").filter(enabled=True, provider__enabled=True):
        p = row.provider
        provider = ProviderSpec(
            name=p.name, kind=p.kind, base_url=p.base_url,
            api_key=os.environ.get(p.api_key_env, "") if p.api_key_env else "",
            timeout_s=p.timeout_s, max_concurrency=p.max_concurrency, is_local=p.is_local,
            options=dict(p.mock_options or {}),
        )
        models[row.alias] = ModelSpec(
            alias=row.alias, upstream_name=row.upstream_name, provider=provider, tier=row.tier,
            price_in_per_m=float(row.price_in_per_m), price_out_per_m=float(row.price_out_per_m),
            quality_prior=row.quality_prior, context_window=row.context_window, tags=tuple(row.tags or ()),
            allowed_data_classes=tuple(row.allowed_data_classes or ()), fallbacks=tuple(row.fallbacks or ()),
            cache_ttl_s=row.cache_ttl_s,
            confidence=ConfidenceSpec.from_options(row.confidence_method, row.confidence_options),
        )
    routes = {
        r.name: RouteSpec(name=r.name, strategy=r.strategy, candidates=tuple(r.candidates), options=dict(r.options))
        for r in RouteAlias.objects.filter(enabled=True)
    }
    return Registry(models=models, routes=routes, version=version,
                    local_only_data_classes=frozenset(settings.PODIUM["LOCAL_ONLY_DATA_CLASSES"]))


def get_registry() -> Registry:
    """The current snapshot (sync; call through sync_to_async only on a miss — see `cached_registry`)."""
    now = time.monotonic()
    interval = settings.PODIUM["REGISTRY_CHECK_INTERVAL"]
    if _state["registry"] is not None and now - _state["checked_at"] < interval:
        return _state["registry"]
    with _lock:
        try:
            version = _current_version()
        except Exception:
            # Redis blinked: keep serving the snapshot we have (the hot path must not fail with it).
            logger.warning("registry version check failed: the cache is unavailable")
            version = _state["version"] if _state["registry"] is not None else "cache-unavailable"
        if _state["registry"] is None or version != _state["version"]:
            _state["registry"] = build_registry(version)
            _state["version"] = version
        _state["checked_at"] = time.monotonic()
        return _state["registry"]


def cached_registry() -> Registry | None:
    """The snapshot if it is fresh enough to serve without touching the cache or database."""
    if _state["registry"] is not None and time.monotonic() - _state["checked_at"] < settings.PODIUM["REGISTRY_CHECK_INTERVAL"]:
        return _state["registry"]
    return None

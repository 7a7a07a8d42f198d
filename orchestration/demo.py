"""The demo registry: mock providers imitating fast / medium / large tiers."""
from orchestration.models import LLMModel, Provider

DEMO_PROVIDERS = [
    # name, mock options (latency in ms, jitter, failure rate)
    ("mock-fast", {"seed": 1, "latency_ms": 120, "latency_jitter_ms": 60, "failure_rate": 0.01, "confidence": [0.45, 0.9]}),
    ("mock-medium", {"seed": 2, "latency_ms": 450, "latency_jitter_ms": 200, "failure_rate": 0.02, "confidence": [0.6, 0.95]}),
    ("mock-large", {"seed": 3, "latency_ms": 1200, "latency_jitter_ms": 400, "failure_rate": 0.01, "confidence": [0.75, 0.99]}),
]
DEMO_MODELS = [
    # alias, provider, upstream, tier, $ in / 1M, $ out / 1M, quality, context
    ("swift-mini", "mock-fast", "swift-mini-2026", "fast", "0.15", "0.60", 0.62, 128_000),
    ("swift-code", "mock-fast", "swift-code-2026", "fast", "0.20", "0.80", 0.66, 128_000),
    ("atlas-pro", "mock-medium", "atlas-pro-2026", "medium", "1.00", "4.00", 0.80, 200_000),
    ("titan-ultra", "mock-large", "titan-ultra-2026", "large", "5.00", "20.00", 0.93, 400_000),
]


def seed_demo_registry() -> None:
    """Create or refresh the demo providers and models (idempotent)."""
    providers = {}
    for name, options in DEMO_PROVIDERS:
        providers[name], _ = Provider.objects.update_or_create(
            name=name, defaults={"kind": Provider.Kind.MOCK, "mock_options": options, "is_local": True,
                                 "enabled": True, "max_concurrency": 256})
    for alias, provider, upstream, tier, price_in, price_out, quality, context in DEMO_MODELS:
        LLMModel.objects.update_or_create(
            alias=alias, defaults={"provider": providers[provider], "upstream_name": upstream, "tier": tier,
                                   "price_in_per_m": price_in, "price_out_per_m": price_out,
                                   "quality_prior": quality, "context_window": context,
                                   "allowed_data_classes": ["public", "internal", "sensitive"], "enabled": True})

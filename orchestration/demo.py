"""The demo registry: mock providers imitating fast / medium / large tiers, and three example workflows."""
from orchestration.models import LLMModel, Provider
from orchestration.workflows import save_workflow

# Mocks answer the engine's planner, judge, critic and classifier prompts with the JSON those expect.
DEMO_REPLY_RULES = [
    {"contains": "Return the subtasks as JSON",
     "reply": '{"subtasks": ["Background and context", "Key facts and figures", "Risks and open questions", '
              '"Recommendation"]}'},
    {"contains": "Score the candidate answers",
     "reply": ['{"best": 1, "score": 0.78}', '{"best": 2, "score": 0.86}', '{"best": 3, "score": 0.93}']},
    {"contains": "Critique the answer",
     "reply": ['{"score": 0.62, "critique": "Add one concrete example."}', '{"score": 0.88, "critique": "Good."}']},
    {"contains": "Classify the request", "reply": '{"category": "general", "confidence": 0.7}'},
]
DEMO_PROVIDERS = [
    # name, mock options (latency in ms, jitter, failure rate)
    ("mock-fast", {"seed": 1, "latency_ms": 120, "latency_jitter_ms": 60, "failure_rate": 0.01, "confidence": [0.45, 0.9],
                   "reply_rules": DEMO_REPLY_RULES}),
    ("mock-medium", {"seed": 2, "latency_ms": 450, "latency_jitter_ms": 200, "failure_rate": 0.02, "confidence": [0.6, 0.95],
                     "reply_rules": DEMO_REPLY_RULES}),
    ("mock-large", {"seed": 3, "latency_ms": 1200, "latency_jitter_ms": 400, "failure_rate": 0.01, "confidence": [0.75, 0.99],
                    "reply_rules": DEMO_REPLY_RULES}),
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


DEMO_WORKFLOWS = {
    "support-reply": {
        "description": "Support reply: the cheapest tier that is confident enough; a person when even that is unsure.",
        "root": {
            "type": "gate", "id": "review", "threshold": 0.8, "on_reject": {"escalate": "titan-ultra"},
            "default_action": "approve",
            "node": {"type": "cascade", "id": "answer", "tiers": ["swift-mini", "atlas-pro", "titan-ultra"],
                     "threshold": 0.75, "system": "You are a friendly support agent. Answer briefly and precisely.",
                     "prompt": "Customer message:\n{{input}}"},
        },
    },
    "fact-check": {
        "description": "Fact check: three models answer at once, a judge model picks the best-supported answer.",
        "root": {
            "type": "parallel", "id": "fact", "branches": ["swift-mini", "atlas-pro", "titan-ultra"],
            "prompt": "Is this claim true? Answer TRUE or FALSE, then one sentence of evidence.\n\nClaim: {{input}}",
            "combine": {"strategy": "judge", "model": "titan-ultra"},
        },
    },
    "report": {
        "description": "Report: a planner splits the topic, workers write the parts in parallel, a synthesizer composes.",
        "root": {
            "type": "supervisor", "id": "report", "planner": "atlas-pro", "workers": ["swift-mini", "swift-code"],
            "synthesizer": "titan-ultra", "max_subtasks": 4, "prompt": "Write a short report on: {{input}}",
        },
    },
}


DEMO_WORKFLOW_SLUGS = tuple(DEMO_WORKFLOWS)


def seed_demo_workflows() -> None:
    """Create the example workflows, or add a version where the spec changed (idempotent)."""
    for slug, spec in DEMO_WORKFLOWS.items():
        save_workflow(slug=slug, spec=spec, description=spec["description"], actor="system:demo")

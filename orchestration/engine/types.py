"""Plain data the engine works on: registry snapshots, requests, results, errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestration.engine.confidence import ConfidenceSpec


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    kind: str
    base_url: str
    api_key: str = field(default="", repr=False)  # resolved from the environment; never logged
    timeout_s: float = 60.0
    max_concurrency: int = 64
    is_local: bool = False
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    upstream_name: str
    provider: ProviderSpec
    tier: str = "medium"
    price_in_per_m: float = 0.0
    price_out_per_m: float = 0.0
    quality_prior: float = 0.5
    context_window: int = 8192
    tags: tuple[str, ...] = ()
    allowed_data_classes: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    cache_ttl_s: int = 0
    confidence: ConfidenceSpec = ConfidenceSpec()  # how its answers' confidence is measured (engine/confidence.py)

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in_per_m + tokens_out * self.price_out_per_m) / 1_000_000


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, tools, ...
    # Podium asks the upstream for token log-probabilities itself (a step needs a measured confidence);
    # the adapter strips them from the answer unless the client asked for them in `params`.
    want_logprobs: bool = False


@dataclass
class ChatResult:
    text: str
    tokens_in: int
    tokens_out: int
    tokens_estimated: bool = False
    finish_reason: str = "stop"
    tool_calls: list[dict] | None = None
    confidence: float | None = None  # the raw signal from log-probabilities when the provider returns them
    # What the raw signal was computed from (orchestration/engine/logprobs.py: statistic, mean_logprob, ...)
    confidence_signals: dict | None = None
    raw: dict | None = None


@dataclass
class StreamDelta:
    """One piece of a streamed answer, already translated from the provider's wire format."""

    text: str = ""
    tool_calls: list[dict] | None = None  # OpenAI-format tool-call deltas (index, id, function.name/arguments)
    finish_reason: str | None = None
    tokens_in: int | None = None  # usage, on the last delta when the provider reports it
    tokens_out: int | None = None
    tokens_estimated: bool = False  # the usage above was estimated, the provider reported none
    index: int = 0  # the choice this delta belongs to (requests with n > 1)
    logprobs: dict | None = None  # passed through as the provider sent them, only when the client asked
    token_logprobs: list[float] | None = None  # the answer tokens' log-probabilities, for Podium's own confidence


class ProviderError(Exception):
    """An upstream call failed. `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, kind: str = "upstream_error"):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind


def estimate_tokens(text: str) -> int:
    """Rough token count (about four characters a token) for providers that report none."""
    return max(1, (len(text) + 3) // 4) if text else 0


def messages_text(messages: list[dict]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # OpenAI content parts
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)

"""The built-in mock provider: deterministic from a seed, no network.

Options (Provider.mock_options, all optional):
  seed               int, default 0 — the same seed gives the same sequence of latencies, failures, replies
  latency_ms         mean latency, default 200
  latency_jitter_ms  uniform jitter either side of the mean, default 0
  failure_rate       probability a call fails with a retryable 503, default 0
  reply              "echo" (default), a canned text, or a list of canned texts; "{input}" is replaced
                     by the last user message
  confidence         a number, or [low, high] drawn uniformly: the stand-in for a provider's logprob signal;
                     default none (the step records the model's prior, method "prior")
  tokens_out         fixed output token count (default: counted from the reply)
  reply_rules        [{"contains": "...", "model": "alias", "reply": ..., "confidence": ...}]: the first rule
                     whose "contains" (case-insensitive, any message) and "model" (when given) match
                     overrides reply and confidence — lets a mock act as planner, judge or critic
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
import zlib
from collections.abc import AsyncIterator

from orchestration.engine.types import (ChatRequest, ChatResult, ModelSpec, ProviderError, StreamDelta,
                                        estimate_tokens, messages_text)
from orchestration.providers.pool import concurrency_limit


def matching_rule(rules, alias: str, messages: list[dict]) -> dict | None:
    text = messages_text(messages).lower()
    for rule in rules or ():
        if isinstance(rule, dict) and rule.get("model", alias) == alias \
                and str(rule.get("contains", "")).lower() in text:
            return rule
    return None


def last_user_message(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return messages_text([message])
    return messages_text(messages[-1:]) if messages else ""


class MockAdapter:
    def __init__(self) -> None:
        self._rngs: dict[tuple[str, int], random.Random] = {}

    def _rng(self, model: ModelSpec) -> random.Random:
        seed = int(model.provider.options.get("seed", 0))
        key = (model.alias, seed)
        rng = self._rngs.get(key)
        if rng is None:
            # A stable per-model stream: crc32 because hash() of str changes between processes.
            rng = self._rngs[key] = random.Random(seed * 1_000_003 + zlib.crc32(model.alias.encode()))
        return rng

    async def chat(self, model: ModelSpec, request: ChatRequest) -> ChatResult:
        opts = model.provider.options
        rng = self._rng(model)
        mean = float(opts.get("latency_ms", 200))
        jitter = float(opts.get("latency_jitter_ms", 0))
        latency = max(0.0, mean + rng.uniform(-jitter, jitter)) / 1000
        fails = rng.random() < float(opts.get("failure_rate", 0))
        draw = rng.random()
        if latency:
            async with concurrency_limit(model.provider):  # a mock honours max_concurrency like a real provider
                await asyncio.sleep(latency)
        if fails:
            raise ProviderError("mock provider: injected failure", status=503, retryable=True)

        user_text = last_user_message(request.messages)
        rule = matching_rule(opts.get("reply_rules"), model.alias, request.messages) or {}
        reply = rule.get("reply", opts.get("reply", "echo"))
        if isinstance(reply, list) and reply:
            reply = reply[int(draw * len(reply)) % len(reply)]
        text = f"[{model.alias}] {user_text}" if reply == "echo" else str(reply).replace("{input}", user_text)

        # A configured confidence stands in for a provider's logprob signal; without one the mock measures
        # nothing and the engine records the model's prior as such.
        confidence = rule.get("confidence", opts.get("confidence"))
        if isinstance(confidence, list) and len(confidence) == 2:
            confidence = confidence[0] + (confidence[1] - confidence[0]) * draw
        tokens_in = estimate_tokens(messages_text(request.messages))
        tokens_out = int(opts.get("tokens_out", estimate_tokens(text)))
        if confidence is None:
            return ChatResult(text=text, tokens_in=tokens_in, tokens_out=tokens_out)
        confidence = max(0.0, min(1.0, float(confidence)))
        return ChatResult(text=text, tokens_in=tokens_in, tokens_out=tokens_out, confidence=confidence,
                          confidence_signals={"statistic": "simulated by the mock provider", "value": confidence})

    async def stream(self, model: ModelSpec, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """The same reply as `chat`, as word deltas with the model's latency spread across them."""
        opts = model.provider.options
        instant = dataclasses.replace(model, provider=dataclasses.replace(
            model.provider, options={**opts, "latency_ms": 0, "latency_jitter_ms": 0}))
        jitter = float(opts.get("latency_jitter_ms", 0))
        latency = max(0.0, float(opts.get("latency_ms", 200)) + self._rng(model).uniform(-jitter, jitter)) / 1000
        try:
            result = await self.chat(instant, request)
        except ProviderError:
            await asyncio.sleep(latency / 2)
            raise
        words = result.text.split(" ")
        pause = latency / (len(words) + 1)
        for index, word in enumerate(words):
            await asyncio.sleep(pause)
            yield StreamDelta(text=word if index == 0 else " " + word)
        await asyncio.sleep(pause)
        yield StreamDelta(finish_reason=result.finish_reason, tokens_in=result.tokens_in, tokens_out=result.tokens_out)

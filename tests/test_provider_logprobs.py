"""Podium asks upstreams for token log-probabilities itself and turns them into a measured confidence.

Real loopback calls to the fake upstream (OpenAI-compatible and Ollama, JSON and streamed): the fake's
`[confident]` / `[diffuse]` markers set every answer token's logprob (podium/fake_dialects.py).
"""
import math

import pytest

from orchestration.engine.logprobs import (confidence_from_logprobs, logprob_signals, numeric_logprobs,
                                           token_logprobs)
from orchestration.engine.types import ChatRequest
from orchestration.providers.ollama import OllamaAdapter
from orchestration.providers.openai_compatible import OpenAICompatibleAdapter, deltas_from_chunk
from tests.enginehelpers import fake_model, run

CONFIDENT, DIFFUSE = "what is 2 + 2? [confident]", "name a colour [diffuse]"


def openai_model(upstream):
    return fake_model(upstream, "gpt", "fake-gpt-1")


def ollama_model(upstream):
    return fake_model(upstream, "llama", "llama3.2", provider="ollama-fake", kind="ollama", is_local=True)


ADAPTERS = {"openai_compatible": (OpenAICompatibleAdapter, openai_model), "ollama": (OllamaAdapter, ollama_model)}


def call(kind, upstream, text, *, want_logprobs=False, **params):
    adapter, model = ADAPTERS[kind]
    request = ChatRequest(messages=[{"role": "user", "content": text}], params=params, want_logprobs=want_logprobs)
    return run(lambda: adapter().chat(model(upstream), request))


def stream(kind, upstream, text, *, want_logprobs=False, **params):
    adapter, model = ADAPTERS[kind]
    request = ChatRequest(messages=[{"role": "user", "content": text}], params=params, want_logprobs=want_logprobs)

    async def collect():
        return [delta async for delta in adapter().stream(model(upstream), request)]
    return run(collect)


def streamed_confidence(deltas):
    """What Podium can compute from a stream: every delta's token logprobs, in order."""
    values = [value for delta in deltas for value in delta.token_logprobs or ()]
    return confidence_from_logprobs(values)[0], values


def sent_body(upstream):
    return upstream.requests[-1]["body"]


# --- the statistic ------------------------------------------------------------------------------------
def test_no_tokens_means_no_signal():
    assert logprob_signals([]) is None
    assert confidence_from_logprobs([]) == (None, None)


def test_signals_are_the_geometric_mean_and_the_least_likely_token():
    signals = logprob_signals([-0.1, -0.5, -2.0])
    mean = (-0.1 - 0.5 - 2.0) / 3
    assert signals == {"statistic": "geometric_mean_token_probability", "value": round(math.exp(mean), 6),
                       "mean_logprob": round(mean, 6), "min_token_prob": round(math.exp(-2.0), 6), "tokens": 3}
    assert confidence_from_logprobs([-0.1, -0.5, -2.0]) == (signals["value"], signals)


def test_the_mean_does_not_punish_a_long_answer_for_its_length():
    assert logprob_signals([-0.05] * 3)["value"] == logprob_signals([-0.05] * 300)["value"]


def test_the_value_stays_a_probability_whatever_the_upstream_sent():
    assert logprob_signals([0.3, 0.1])["value"] == 1.0  # a positive logprob (rounding upstream) is not > 1
    assert logprob_signals([0.3])["min_token_prob"] == 1.0
    assert logprob_signals([-1000.0])["value"] == 0.0


def test_token_logprobs_read_openais_shape_and_skip_what_is_not_a_number():
    payload = {"content": [{"token": "a", "logprob": -0.5}, "junk", {"token": "b"}, {"token": "c", "logprob": "x"},
                           {"token": "d", "logprob": True}, {"token": "e", "logprob": float("nan")},
                           {"token": "f", "logprob": -1}]}
    assert token_logprobs(payload) == [-0.5, -1.0]
    assert token_logprobs(None) == [] and token_logprobs({"content": None}) == [] and token_logprobs([]) == []
    assert numeric_logprobs([{"token": "x", "logprob": -0.2}, None]) == [-0.2]  # Ollama's bare list


# --- non-streamed -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ADAPTERS)
def test_podium_asks_for_logprobs_and_measures_a_confident_and_a_diffuse_answer(fake_upstream, kind):
    confident = call(kind, fake_upstream, CONFIDENT, want_logprobs=True)
    assert sent_body(fake_upstream)["logprobs"] is True
    diffuse = call(kind, fake_upstream, DIFFUSE, want_logprobs=True)
    assert confident.confidence > 0.9 and diffuse.confidence < 0.3
    assert confident.confidence_signals["statistic"] == "geometric_mean_token_probability"
    # one logprob a word of the echo: "echo:" plus the prompt's words
    assert confident.confidence_signals["tokens"] == len(("echo: " + CONFIDENT).split(" "))
    assert diffuse.confidence_signals["mean_logprob"] == pytest.approx(-1.6)
    assert confident.text == "echo: " + CONFIDENT


def test_openai_logprobs_podium_asked_for_are_stripped_from_every_choice(fake_upstream):
    result = call("openai_compatible", fake_upstream, CONFIDENT, want_logprobs=True, n=2)
    assert len(result.raw["choices"]) == 2
    assert all("logprobs" not in choice for choice in result.raw["choices"])
    assert result.raw["choices"][1]["message"]["content"] == "echo: " + CONFIDENT  # the rest of the choice stays


def test_ollama_logprobs_podium_asked_for_are_stripped_from_its_raw_answer(fake_upstream):
    result = call("ollama", fake_upstream, CONFIDENT, want_logprobs=True)
    assert "logprobs" not in result.raw and result.raw["message"]["content"] == "echo: " + CONFIDENT


@pytest.mark.parametrize("kind", ADAPTERS)
def test_logprobs_the_client_asked_for_are_kept_and_still_measured(fake_upstream, kind):
    result = call(kind, fake_upstream, DIFFUSE, logprobs=True)
    assert sent_body(fake_upstream)["logprobs"] is True
    assert result.confidence < 0.3
    kept = result.raw["choices"][0]["logprobs"]["content"] if kind == "openai_compatible" else result.raw["logprobs"]
    assert [item["logprob"] for item in kept] == [-1.6] * len(("echo: " + DIFFUSE).split(" "))


def test_the_clients_top_logprobs_reach_ollama_but_podiums_own_request_asks_for_none(fake_upstream):
    call("ollama", fake_upstream, CONFIDENT, logprobs=True, top_logprobs=3)
    assert sent_body(fake_upstream)["top_logprobs"] == 3
    call("ollama", fake_upstream, CONFIDENT, want_logprobs=True, top_logprobs=3)
    assert "top_logprobs" not in sent_body(fake_upstream)


@pytest.mark.parametrize("kind", ADAPTERS)
def test_nobody_asking_means_no_logprobs_and_no_confidence(fake_upstream, kind):
    result = call(kind, fake_upstream, CONFIDENT)
    assert "logprobs" not in sent_body(fake_upstream)
    assert result.confidence is None and result.confidence_signals is None


# --- streamed -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_stream_carries_token_logprobs_for_podium_and_strips_them_for_the_client(fake_upstream, kind):
    confident = stream(kind, fake_upstream, CONFIDENT, want_logprobs=True)
    assert sent_body(fake_upstream)["logprobs"] is True and sent_body(fake_upstream)["stream"] is True
    diffuse = stream(kind, fake_upstream, DIFFUSE, want_logprobs=True)
    (high, high_values), (low, _) = streamed_confidence(confident), streamed_confidence(diffuse)
    assert high > 0.9 and low < 0.3
    assert len(high_values) == len(("echo: " + CONFIDENT).split(" "))
    assert all(delta.logprobs is None for delta in confident + diffuse)
    assert "".join(delta.text for delta in confident) == "echo: " + CONFIDENT  # stripping took no text


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_stream_passes_logprobs_on_when_the_client_asked(fake_upstream, kind):
    deltas = stream(kind, fake_upstream, DIFFUSE, logprobs=True)
    with_text = [delta for delta in deltas if delta.text]
    assert with_text and all(delta.logprobs["content"][0]["logprob"] == -1.6 for delta in with_text)
    assert [item["token"] for delta in with_text for item in delta.logprobs["content"]] == [
        delta.text for delta in with_text]  # in OpenAI's shape for Ollama too, one token a piece here
    assert streamed_confidence(deltas)[0] < 0.3


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_stream_nobody_asked_logprobs_of_has_none(fake_upstream, kind):
    deltas = stream(kind, fake_upstream, CONFIDENT)
    assert "logprobs" not in sent_body(fake_upstream)
    assert all(delta.token_logprobs is None and delta.logprobs is None for delta in deltas)


def test_a_chunk_carrying_only_logprobs_still_gives_podium_its_tokens():
    chunk = {"choices": [{"index": 0, "delta": {}, "finish_reason": None,
                          "logprobs": {"content": [{"token": "", "logprob": -0.3}]}}]}
    (stripped,) = deltas_from_chunk(chunk, pass_logprobs=False)
    assert stripped.token_logprobs == [-0.3] and stripped.logprobs is None and stripped.text == ""
    (passed,) = deltas_from_chunk(chunk)
    assert passed.logprobs == chunk["choices"][0]["logprobs"]

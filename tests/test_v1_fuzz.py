"""Generated requests against /v1 on a live server: bodies (near-valid chats and embeddings with garbage
in every field, arbitrary JSON, raw bytes, deep nesting), headers and query strings.

No answer is a 5xx, and afterwards the batched writer has nothing left, every call that got a run id is
recorded, and the key's spend is the sum of its runs' costs. Hand-written strategies rather than an
OpenAPI schema: /v1 is OpenAI's wire format, and strategies built from Podium's own validation tables
reach every branch of it, with valid values often enough that calls go through to the models.
"""
import json
from collections import Counter
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from api.v1.wire import CHAT_PARAMS, CONTENT_PARTS, EMBEDDINGS_PARAMS, ROLES
from orchestration.demo import seed_demo_workflows
from orchestration.gateway.writer import writer
from orchestration.models import APIKey, Run
from tests.conftest import wait_for

MAX_EXAMPLES = 300
MODELS = ["swift-mini", "fake-gpt", "fake-gpt", "workflow/support-reply", "titan-ultra", "no-such-model"]
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
header_values = st.text(PRINTABLE, max_size=30).map(str.strip)  # h11 sends no edge whitespace

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=8)

# Values each known parameter accepts, drawn as often as garbage.
VALID_PARAMS = {
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "top_k": st.integers(0, 100),
    "n": st.integers(1, 3), "max_tokens": st.integers(1, 2**31 - 1), "max_completion_tokens": st.integers(1, 64),
    "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**63), 2**63 - 1), "logprobs": st.booleans(), "top_logprobs": st.integers(0, 20),
    "logit_bias": st.dictionaries(st.integers(0, 99999).map(str), st.floats(-100, 100), max_size=2),
    "stream": st.booleans(), "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "parallel_tool_calls": st.booleans(), "store": st.booleans(), "user": st.text(max_size=10),
    "stop": st.text(max_size=4) | st.lists(st.text(min_size=1, max_size=4), max_size=2),
    "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": st.from_regex(r"\A[a-z]{1,8}\Z")}, optional={"parameters": st.just({"type": "object"})})}),
        max_size=1),
    "tool_choice": st.sampled_from(["auto", "none"]),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "dimensions": st.integers(1, 8), "encoding_format": st.sampled_from(["float", "base64"]),
}
assert set(CHAT_PARAMS) | set(EMBEDDINGS_PARAMS) <= set(VALID_PARAMS)  # a new parameter gets fuzzed too


def json_bytes(value) -> bytes:
    return json.dumps(value).encode()  # not orjson: it refuses integers beyond 64 bits


text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30)})
image_part = st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
    {"url": st.sampled_from(["https://example.com/a.png", "data:image/png;base64,AAAA"])})})
valid_message = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=60)
                                       | st.lists(text_part | image_part, min_size=1, max_size=2)})
# A part of each type whose own field is arbitrary JSON (or no object at all).
any_part = st.sampled_from([*CONTENT_PARTS, "hologram"]).flatmap(lambda kind: st.fixed_dictionaries(
    {"type": st.just(kind), CONTENT_PARTS.get(kind, ("data",))[0]: json_values})) | json_values
tool_call = st.fixed_dictionaries({"id": st.text(max_size=6), "type": st.just("function"), "function":
                                   st.fixed_dictionaries({"name": st.text(max_size=6),
                                                          "arguments": st.just("{}") | json_values})})
any_message = st.fixed_dictionaries(
    {"role": st.sampled_from(sorted(ROLES)) | json_values,
     "content": st.text(max_size=20) | st.lists(any_part, max_size=2) | json_values},
    optional={"name": st.text(max_size=8) | json_values, "tool_call_id": st.text(max_size=8) | json_values,
              "tool_calls": st.lists(tool_call | json_values, max_size=2) | json_values})
podium_options = st.fixed_dictionaries({}, optional={
    "data_class": st.sampled_from(["public", "internal", "sensitive", "restricted"]), "cache": st.booleans()})


@st.composite
def bodies(draw, params: dict, required: dict):
    """A valid body with up to three valid parameters; half the time one field spoilt by arbitrary JSON."""
    body = {name: draw(strategy) for name, strategy in required.items()}
    for name in draw(st.lists(st.sampled_from(sorted(params)), max_size=3, unique=True)):
        body[name] = draw(VALID_PARAMS[name])
    if draw(st.booleans()):
        body["metadata"] = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2))
    if "messages" in required and draw(st.booleans()):
        body["podium"] = draw(podium_options)
    if draw(st.booleans()):
        spoilt = draw(st.sampled_from([*required, *params, "metadata", "podium", "vendor_field", "a message",
                                       "a content part"]))
        if spoilt == "a message":
            body.setdefault("messages", []).append(draw(any_message))
        elif spoilt == "a content part":
            body.setdefault("messages", []).append({"role": "user", "content": [draw(any_part)]})
        else:
            body[spoilt] = draw(json_values)
    return body


chat_bodies = bodies(CHAT_PARAMS, {"model": st.sampled_from(MODELS),
                                   "messages": st.lists(valid_message, min_size=1, max_size=2)})
embeddings_bodies = bodies(EMBEDDINGS_PARAMS, {
    "model": st.sampled_from(MODELS),
    "input": st.text(min_size=1, max_size=20) | st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=3)
    | st.lists(st.integers(0, 50_000), min_size=1, max_size=3)})
# Otherwise valid chats with deep metadata: {"a": {"a": … 1}} (json.dumps would not write 1,000 levels).
deep_json = st.sampled_from([63, 64, 256, 999, 1023, 1100]).map(lambda n: b'{"model": "swift-mini", "messages": [{"role": "user", '
                                      b'"content": "hi"}], "metadata": ' + b'{"a": ' * n + b"1" + b"}" * n + b"}")


@st.composite
def requests(draw, keys: dict):
    endpoint = draw(st.sampled_from(["chat", "chat", "chat", "embeddings", "models", "elsewhere"]))
    method, path, body = "POST", "/v1/chat/completions", b""
    if endpoint == "chat":
        body = draw(chat_bodies.map(json_bytes) | deep_json)
    elif endpoint == "embeddings":
        path = "/v1/embeddings"
        body = draw(embeddings_bodies.map(json_bytes))
    elif endpoint == "models":
        method, path = draw(st.sampled_from(["GET", "POST", "DELETE"])), "/v1/models"
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]))
        path = "/v1/" + draw(st.text(PRINTABLE, max_size=12)).replace("?", "").replace("#", "")
        body = draw(st.binary(max_size=64) | json_values.map(json_bytes))
    if draw(st.sampled_from([False] * 9 + [True])):  # not integers(0, 9) == 0: Hypothesis favours 0
        body = draw(st.binary(max_size=200))
    query = draw(st.dictionaries(st.text(max_size=6), st.text(max_size=12), max_size=2))
    headers = {"content-type": draw(st.sampled_from(["application/json", "text/plain", "", "application/json; x"]))}
    key = draw(st.sampled_from(["chat", "chat", "chat", "chat", "chat", "events-only", "none", "garbage"]))
    if key == "garbage":
        headers["authorization"] = draw(header_values)
    elif key != "none":
        headers["authorization"] = f"Bearer {keys[key]}"
    headers.update(draw(st.dictionaries(st.from_regex(r"\Ax-[a-z]{1,8}\Z"), header_values, max_size=2)))
    return method, path + ("?" + urlencode(query) if query else ""), headers, body


@pytest.mark.timeout(600)
def test_generated_v1_requests_never_get_a_5xx_and_every_accepted_call_is_recorded_and_settled(
        podium_server, demo_registry, upstream_model):
    seed_demo_workflows()
    chat_key, chat_raw = APIKey.issue("fuzz-chat", scopes=["chat"])
    _, events_raw = APIKey.issue("fuzz-events", scopes=["events"])
    keys = {"chat": chat_raw, "events-only": events_raw}
    seen_statuses, run_ids, server_errors = [], set(), []

    with httpx.Client(base_url=podium_server.url, timeout=30) as client:
        @given(request=requests(keys))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def check(request):
            method, path, headers, body = request
            response = client.request(method, path, headers=headers, content=body)
            seen_statuses.append(response.status_code)
            if response.headers.get("x-podium-run-id"):
                run_ids.add(response.headers["x-podium-run-id"])
            if response.status_code >= 500:
                server_errors.append(f"{method} {path} {body[:300]!r} -> {response.status_code} {response.text[:300]}")

        check()

    print(f"statuses: {dict(Counter(seen_statuses))}; runs: {len(run_ids)}")
    assert not server_errors, "\n".join(server_errors)
    assert 200 in seen_statuses and 400 in seen_statuses  # the generator reaches both sides of validation

    def all_recorded() -> bool:
        writer.flush()
        return writer.pending() == 0 and Run.objects.filter(pk__in=run_ids).count() == len(run_ids)
    wait_for(all_recorded, timeout=30, describe=lambda: f"{writer.pending()} rows pending; recorded "
             f"{Run.objects.filter(pk__in=run_ids).count()} of {len(run_ids)} runs")
    chat_key.refresh_from_db()
    # Summed here: SQLite's SUM() of decimals is a float sum
    spent = sum(Run.objects.filter(api_key=chat_key).values_list("cost_usd", flat=True), Decimal(0))
    assert chat_key.spent_usd == spent
    assert spent > 0


def test_a_workflow_refused_by_data_class_policy_is_a_403(podium_server, demo_registry, api_key):
    seed_demo_workflows()
    body = {"model": "workflow/support-reply", "messages": [{"role": "user", "content": "hi"}],
            "podium": {"data_class": "restricted"}}  # no demo model accepts restricted data
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {api_key}"})
    assert response.status_code == 403, response.text

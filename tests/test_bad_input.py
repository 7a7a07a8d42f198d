"""Garbage in, a clear 4xx out: oversized bodies, deep JSON, invalid UTF-8, NUL characters, malformed
content parts, out-of-range numbers, unknown fields and unbounded pages on /v1, /api and the runs page."""
import uuid
from datetime import UTC, datetime, timedelta, timezone

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from django.conf import settings

from api.pagination import MAX_LIMIT
from orchestration.gateway.writer import writer
from orchestration.models import APIKey, Provider, Run

DEEP_JSON = b"[" * 5000 + b"]" * 5000
INVALID_UTF8 = b'{"model": "swift-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
HELLO = [{"role": "user", "content": "hello"}]


def nested(levels: int) -> bytes:
    """`levels` objects, one inside the other: {"a": {"a": … 1}} (orjson would not write 1,000)."""
    return b'{"a": ' * levels + b"1" + b"}" * levels


def chat_with(field: str, raw_json: bytes, model: str = "swift-mini") -> bytes:
    return orjson.dumps({"model": model, "messages": HELLO})[:-1] + f',"{field}":'.encode() + raw_json + b"}"


def chat(**fields) -> bytes:
    return orjson.dumps({"model": "swift-mini", "messages": HELLO, **fields})


def with_content(*parts) -> bytes:
    return orjson.dumps({"model": "swift-mini", "messages": [{"role": "user", "content": list(parts)}]})


def with_message(**fields) -> bytes:
    return orjson.dumps({"model": "swift-mini", "messages": [{"role": "assistant", "content": "x", **fields}, *HELLO]})


@pytest.fixture
def runs_key(db) -> str:
    _, raw = APIKey.issue("bad-input", scopes=["chat", "runs", "runs:read", "reviews:decide"])
    return raw


def v1(server, key, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=body, timeout=30,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json"})


def api(client, key, path, body: bytes):
    return client.generic("POST", path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.parametrize("body,status,words,param", [
    (b"x" * (4 * 1024 * 1024 + 1), 413, "larger than", None),
    (DEEP_JSON, 400, "nested deeper than 64 levels", None),
    (chat_with("metadata", nested(1000)), 400, "nested deeper than 64 levels", None),
    (chat_with("metadata", nested(64)), 400, "nested deeper than 64 levels", None),  # the body is level 1
    (INVALID_UTF8, 400, "not valid UTF-8", None),
    (b"{\"model\": ", 400, "not valid JSON", None),
    (b'{"model": "swift-mini", "messages": [], "temperature": 1e400}', 400, "not valid JSON", None),
    (b"[]", 400, "must be a JSON object", None),
    (b'{"model": "swift-mini", "messages": [{"role": "user", "content": "a\\u0000b"}]}', 400, "NUL", None),
    (b'{"model": "swift-mini", "messages": "hello"}', 400, "'messages'", "messages"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', 400, "'model'", "model"),
    (orjson.dumps({"model": "m" * 257, "messages": HELLO}), 400, "at most 256 characters", "model"),
    (b'{"model": "swift-mini", "messages": [{"role": ["user"], "content": "x"}]}', 400, "'role'", "messages[0]"),
    # content parts
    (with_content({"type": "text", "text": 5}), 400, "must be a string", "messages[0].content[0].text"),
    (with_content({"type": "text", "text": ["a", "b"]}), 400, "must be a string", "messages[0].content[0].text"),
    (with_content({"type": "text"}), 400, "must be present", "messages[0].content[0].text"),
    (with_content("hello"), 400, "'type' is one of", "messages[0].content[0]"),
    (with_content({"type": ["text"], "text": "x"}), 400, "'type' is one of", "messages[0].content[0]"),
    (with_content({"type": "hologram", "data": "x"}), 400, "'type' is one of", "messages[0].content[0]"),
    (with_content({"type": "image_url", "image_url": "http://x/a.png"}), 400, "an object",
     "messages[0].content[0].image_url"),
    (with_content({"type": "image_url", "image_url": {"url": 5}}), 400, "a string",
     "messages[0].content[0].image_url.url"),
    (with_content({"type": "input_audio", "input_audio": {"data": "AAAA", "format": 3}}), 400, "a string",
     "messages[0].content[0].input_audio.format"),
    (with_content({"type": "file", "file": []}), 400, "an object", "messages[0].content[0].file"),
    # other message fields
    (with_message(name=5), 400, "a string", "messages[0].name"),
    (with_message(tool_calls={"id": "x"}), 400, "an array", "messages[0].tool_calls"),
    (with_message(tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]),
     400, "a string", "messages[0].tool_calls[0].function.arguments"),
    (with_message(tool_calls=["call"]), 400, "an object", "messages[0].tool_calls[0]"),
    # sampling parameters
    (chat(temperature=2.5), 400, "from 0 to 2", "temperature"),
    (chat(temperature=True), 400, "a number", "temperature"),
    (chat(top_p=1.5), 400, "from 0 to 1", "top_p"),
    (chat(n=0), 400, "an integer from 1 to 128", "n"),
    (b'{"model": "swift-mini", "messages": [{"role": "user", "content": "x"}], "n": 99999999999999999999999}', 400,
     "an integer", "n"),
    (chat(max_tokens="16"), 400, "an integer", "max_tokens"),
    (chat(max_tokens=0), 400, "an integer from 1", "max_tokens"),
    (chat(max_completion_tokens=2**31), 400, "an integer from 1", "max_completion_tokens"),
    (chat(presence_penalty=-3), 400, "from -2 to 2", "presence_penalty"),
    (chat(frequency_penalty="high"), 400, "from -2 to 2", "frequency_penalty"),
    (chat(seed=2**64 - 1), 400, "an integer", "seed"),
    (chat(top_logprobs=21), 400, "from 0 to 20", "top_logprobs"),
    (chat(logprobs=1), 400, "true or false", "logprobs"),
    (chat(logit_bias={"50256": 101}), 400, "-100 to 100", "logit_bias"),
    (chat(stream="yes"), 400, "true or false", "stream"),
    (chat(stream=True, stream_options={"include_usage": "yes"}), 400, "true or false",
     "stream_options.include_usage"),
    (chat(stop=5), 400, "a string or an array of strings", "stop"),
    (chat(tools=[{"type": "function"}]), 400, "a string 'name'", "tools[0].function"),
    (chat(tools={"type": "function"}), 400, "an array", "tools"),
    (chat(tool_choice=5), 400, "a string or an object", "tool_choice"),
    (chat(response_format="json"), 400, "an object", "response_format"),
    (chat(user=["me"]), 400, "a string", "user"),
    (chat(metadata=[]), 400, "an object", "metadata"),
    (chat(metadata=False), 400, "an object", "metadata"),
])
def test_v1_answers_bad_bodies_with_a_clear_openai_error(podium_server, demo_registry, api_key, body, status, words,
                                                         param):
    response = v1(podium_server, api_key, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert error["param"] == param


@pytest.mark.parametrize("body,param", [
    (b'{"model": "swift-mini", "input": [1, "a"]}', "input"),
    (b'{"model": "swift-mini", "input": []}', "input"),
    (b'{"model": "swift-mini", "input": [[]]}', "input"),
    (b'{"model": "swift-mini", "input": 5}', "input"),
    (b'{"model": "swift-mini", "input": "x", "dimensions": 0}', "dimensions"),
    (b'{"model": "swift-mini", "input": "x", "encoding_format": 1}', "encoding_format"),
])
def test_v1_embeddings_answer_bad_bodies_with_a_400_naming_the_field(podium_server, demo_registry, api_key, body,
                                                                     param):
    response = v1(podium_server, api_key, body, "/v1/embeddings")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_an_unknown_field_nested_1000_deep_never_reaches_an_openai_compatible_upstream(
        podium_server, upstream_model, api_key, fake_upstream):
    body = chat_with("vendor_extension", nested(1000), model="fake-gpt")
    response = v1(podium_server, api_key, body)
    assert response.status_code == 400 and "nested deeper than 64 levels" in response.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_the_deepest_accepted_body_is_answered_and_recorded_and_the_next_calls_too(podium_server, demo_registry,
                                                                                  api_key):
    deepest = v1(podium_server, api_key, chat_with("metadata", nested(63)))  # 64 levels with the body
    assert deepest.status_code == 200, deepest.text
    after = [v1(podium_server, api_key, chat(metadata={"n": n})) for n in range(5)]
    assert [r.status_code for r in after] == [200] * 5
    writer.flush()
    ids = [deepest.headers["x-podium-run-id"]] + [r.headers["x-podium-run-id"] for r in after]
    assert Run.objects.filter(pk__in=ids).count() == 6


def test_valid_parameters_at_their_bounds_are_accepted(podium_server, demo_registry, api_key):
    body = chat(temperature=2, top_p=0, n=1, max_tokens=2**31 - 1, presence_penalty=-2, frequency_penalty=2,
                seed=-2**63, top_logprobs=20, logprobs=True, logit_bias={"50256": -100}, stop=["\n\n"],
                user="u-1", stream=False, tools=[{"type": "function", "function": {"name": "f"}}],
                tool_choice={"type": "function", "function": {"name": "f"}}, response_format={"type": "text"},
                temperature_unknown_to_podium={"passes": "through"})
    response = v1(podium_server, api_key, body)
    assert response.status_code == 200, response.text


def test_every_known_content_part_type_is_accepted(podium_server, demo_registry, api_key):
    body = with_content({"type": "text", "text": "describe"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                        {"type": "file", "file": {"file_data": "AAAA", "filename": "a.pdf"}})
    response = v1(podium_server, api_key, body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("body,status,words", [
    (b'{"workflow": "w", "input": "' + b"x" * (4 * 1024 * 1024) + b'"}', 413, "larger than"),
    (DEEP_JSON, 400, "nested deeper than 64 levels"),
    (b'{"workflow": "w", "input": {"a": ' * 70 + b"1" + b"}" * 140, 400, "nested deeper than 64 levels"),
    (b'{"workflow": "w", "input": "\xff"}', 400, "not valid UTF-8"),
    (b'{"workflow": ', 400, "not valid JSON"),
    (b'{"workflow": "w", "input": "a\\u0000b"}', 400, "NUL"),
])
def test_api_answers_bad_bodies_with_a_clear_4xx(client, runs_key, body, status, words):
    response = api(client, runs_key, "/api/runs/", body)
    assert response.status_code == status
    assert words in response.json()["detail"]


@pytest.mark.parametrize("path,body,field", [
    ("/api/runs/", b'{"workflow": "w", "input": "x", "deadline_s": 1e308}', "deadline_s"),
    ("/api/runs/", b'{"workflow": "w", "input": "x", "deadline_s": 0}', "deadline_s"),
    ("/api/runs/", b'{"workflow": "w", "input": "x", "budget_usd": 1e308}', "budget_usd"),
    ("/api/runs/", b'{"workflow": "w", "input": "x", "budget_usd": -1}', "budget_usd"),
    ("/api/reviews/00000000-0000-0000-0000-000000000000/approve/", b'{"candidate": 1000000000000000000000000000000}',
     "candidate"),
    ("/api/reviews/00000000-0000-0000-0000-000000000000/edit/", b'{"output": "x", "candidate": -1}', "candidate"),
])
def test_api_numbers_out_of_bounds_get_a_400_naming_the_field(client, runs_key, path, body, field):
    response = api(client, runs_key, path, body)
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.parametrize("path,body", [
    ("/api/runs/", b'{"workflow": "w", "input": "x", "budjet_usd": 5}'),
    ("/api/reviews/00000000-0000-0000-0000-000000000000/approve/", b'{"coment": "typo"}'),
])
def test_api_names_unknown_fields_instead_of_ignoring_them(client, runs_key, path, body):
    response = api(client, runs_key, path, body)
    assert response.status_code == 400
    unknown = next(name for name in ("budjet_usd", "coment") if name.encode() in body)
    assert response.json()[unknown] == ["Unknown field."]


LISTS = ["/api/runs/", "/api/models/", "/api/providers/", "/api/workflows/", "/api/reviews/"]


@pytest.mark.parametrize("path", LISTS)
def test_a_list_asked_for_a_limit_beyond_64_bits_answers_a_clamped_page(client, runs_key, demo_registry, path):
    response = client.get(f"{path}?limit=99999999999999999999999", HTTP_AUTHORIZATION=f"Bearer {runs_key}")
    assert response.status_code == 200
    assert len(response.json()["results"]) <= MAX_LIMIT


def test_a_list_never_answers_more_than_the_page_size_cap(admin_client, db):
    Provider.objects.bulk_create(Provider(name=f"p{n}", kind=Provider.Kind.MOCK) for n in range(MAX_LIMIT + 5))
    page = admin_client.get("/api/providers/?limit=1000000000").json()
    assert page["count"] == MAX_LIMIT + 5 and len(page["results"]) == MAX_LIMIT
    assert f"limit={MAX_LIMIT}" in page["next"] and f"offset={MAX_LIMIT}" in page["next"]
    rest = admin_client.get(page["next"]).json()
    assert len(rest["results"]) == 5


@pytest.mark.parametrize("query,param", [
    ("limit=abc", "limit"), ("limit=0", "limit"), ("limit=-5", "limit"), ("limit=1e3", "limit"),
    ("limit=" + "9" * 5000, "limit"), ("offset=-1", "offset"), ("offset=x", "offset"),
])
@pytest.mark.parametrize("path", LISTS)
def test_a_list_answers_an_unreadable_limit_or_offset_with_a_400_naming_it(client, runs_key, path, query, param):
    response = client.get(f"{path}?{query}", HTTP_AUTHORIZATION=f"Bearer {runs_key}")
    assert response.status_code == 400
    assert param in response.json()


def test_an_offset_past_the_end_is_an_empty_page(client, runs_key):
    response = client.get("/api/runs/?offset=99999999999999999999999", HTTP_AUTHORIZATION=f"Bearer {runs_key}")
    assert response.status_code == 200 and response.json()["results"] == []


@pytest.mark.parametrize("path,param", [
    ("/api/runs/?status=exploded", "status"),
    ("/api/reviews/?status=pending,exploded", "status"),
    ("/api/reviews/?run=not-a-uuid", "run"),
])
def test_a_filter_with_an_unknown_value_gets_a_400_naming_it(client, runs_key, path, param):
    response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {runs_key}")
    assert response.status_code == 400
    assert param in response.json()


@pytest.mark.parametrize("path", ["/api/workflows/a%00b/", "/api/runs/?status=%00", "/api/reviews/?reason=%00",
                                  "/runs/?before=%00"])
def test_a_nul_character_in_a_url_is_a_400_before_any_database_sees_it(admin_client, path):
    # PostgreSQL refuses text holding NUL: without this guard each of these is a 500 there.
    response = admin_client.get(path)
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize("form", [{"workflow": "w", "input": '"a\\u0000b"'}, {"workflow": "w\x00", "input": "1"}])
def test_a_nul_character_in_a_form_field_is_a_400(client, runs_key, form):
    # A JSONField parses form text as JSON: the escape would reach PostgreSQL as a NUL it cannot store.
    response = client.post("/api/runs/", form, HTTP_AUTHORIZATION=f"Bearer {runs_key}")
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize("before", ["garbage", "2026-01-01T00:00:00+00:00|not-a-uuid", "|", "x|y|z",
                                    "2026-13-45T00:00:00|00000000-0000-0000-0000-000000000000",
                                    "0001-01-01T00:00:00+14:00|00000000-0000-0000-0000-000000000000"])
def test_the_runs_page_answers_a_malformed_cursor_with_a_400(admin_client, before):
    response = admin_client.get("/runs/", {"before": before})
    assert response.status_code == 400
    assert "cursor" in response.content.decode()


def test_the_runs_page_lists_only_runs_older_than_a_well_formed_cursor(admin_client, db):
    older = Run.objects.create(target="old-one", created_at=datetime(2025, 6, 1, tzinfo=UTC))
    Run.objects.create(target="new-one", created_at=datetime(2026, 6, 1, tzinfo=UTC))
    response = admin_client.get("/runs/", {"before": f"2026-01-01T00:00:00+00:00|{uuid.UUID(int=0)}"})
    assert response.status_code == 200
    page = response.content.decode()
    assert str(older.id) in page and "new-one" not in page


cursor_like = st.builds(lambda stamp, run_id: f"{stamp.isoformat()}|{run_id}",
                        st.datetimes(timezones=st.none() | st.builds(timezone, st.timedeltas(
                            min_value=timedelta(hours=-23), max_value=timedelta(hours=23)))),
                        st.uuids() | st.text(max_size=8))


@examples(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(["before", "status", "model", "workflow", "api_key", "range"]),
                             cursor_like | st.text(max_size=30), max_size=4))
def test_the_runs_page_answers_any_query_string_below_500(admin_client, query):
    response = admin_client.get("/runs/", query)
    assert response.status_code in (200, 400)


def test_staff_writing_a_workflow_with_a_misspelt_field_is_told(admin_client):
    response = admin_client.post("/api/workflows/", {"slug": "w", "spce": {}}, content_type="application/json")
    assert response.status_code == 400 and response.json()["spce"] == ["Unknown field."]


def test_a_workflow_whose_review_is_due_in_1e308_seconds_is_refused_before_any_call_can_overflow(admin_client):
    spec = {"root": {"type": "gate", "id": "g", "node": {"type": "call", "id": "c", "model": "swift-mini"},
                     "due_in_s": 1e308}}
    response = admin_client.post("/api/workflows/", {"slug": "w", "spec": spec}, content_type="application/json")
    assert response.status_code == 400
    assert "root.due_in_s" in response.json()["spec"][0]


def test_the_body_limit_is_the_documented_setting():
    assert settings.PODIUM["MAX_BODY_BYTES"] == 4 * 1024 * 1024

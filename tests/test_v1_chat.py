"""POST /v1/chat/completions and GET /v1/models over a real server, in the OpenAI wire format."""
import httpx
import openai
import pytest

from orchestration.gateway.writer import writer
from orchestration.models import APIKey, Run, Step


@pytest.fixture
def sdk(podium_server, api_key, demo_registry):
    return openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0)


def test_the_openai_sdk_gets_a_completion_and_the_call_is_recorded(sdk):
    completion = sdk.chat.completions.create(model="swift-mini", messages=[{"role": "user", "content": "ping"}])

    assert completion.choices[0].message.content == "[swift-mini] ping"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    writer.flush()
    run = Run.objects.get()
    step = Step.objects.get()
    assert (run.status, run.target, step.model_alias, step.status) == ("succeeded", "swift-mini", "swift-mini", "succeeded")
    assert (step.tokens_in, step.tokens_out) == (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    # swift-mini costs $0.15 / 1M in and $0.60 / 1M out
    expected = (step.tokens_in * 0.15 + step.tokens_out * 0.60) / 1_000_000
    assert float(step.cost_usd) == pytest.approx(expected, abs=1e-8)
    assert float(APIKey.objects.get().spent_usd) == pytest.approx(expected, abs=1e-8)
    assert f"chatcmpl-{run.id.hex}" == completion.id


def test_the_openai_sdk_lists_models(sdk):
    ids = {model.id for model in sdk.models.list()}
    assert {"swift-mini", "atlas-pro", "titan-ultra"} <= ids


def test_an_upstream_openai_compatible_model_is_proxied(podium_server, api_key, upstream_model, fake_upstream):
    client = openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0)
    completion = client.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": "hello there"}],
                                                temperature=0.2)
    assert completion.choices[0].message.content == "echo: hello there"
    assert fake_upstream.requests[-1]["body"]["model"] == "fake-gpt-1"
    assert fake_upstream.requests[-1]["body"]["temperature"] == 0.2


@pytest.mark.parametrize("body, status, code", [
    ({"model": "swift-mini"}, 400, "invalid_request"),
    ({"model": "swift-mini", "messages": []}, 400, "invalid_request"),
    ({"model": "swift-mini", "messages": [{"content": "no role"}]}, 400, "invalid_request"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "invalid_request"),
    ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
])
def test_bad_requests_get_openai_shaped_errors(podium_server, api_key, demo_registry, body, status, code):
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {api_key}"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"


def test_malformed_json_is_a_400(podium_server, api_key, demo_registry):
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", content=b"{not json",
                          headers={"authorization": f"Bearer {api_key}"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("header", [None, "Bearer pdm_wrong", "Basic abc"])
def test_a_missing_or_wrong_key_is_a_401(podium_server, demo_registry, header):
    headers = {"authorization": header} if header else {}
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers=headers,
                          json={"model": "swift-mini", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_revoked_key_stops_working(podium_server, demo_registry):
    key, raw = APIKey.issue("short-lived")
    body = {"model": "swift-mini", "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {raw}"}
    assert httpx.post(f"{podium_server.url}/v1/chat/completions", json=body, headers=headers).status_code == 200
    key.revoke()
    assert httpx.post(f"{podium_server.url}/v1/chat/completions", json=body, headers=headers).status_code == 401


def test_an_upstream_failure_is_a_502_and_a_failed_run(podium_server, api_key, upstream_model, fake_upstream):
    fake_upstream.inject(*["fail-500"] * 10)
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "fake-gpt", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    writer.flush()
    run = Run.objects.get(id=response.headers["x-podium-run-id"])
    assert run.status == "failed" and "HTTP 500" in run.error


def test_an_oversized_body_is_a_413(podium_server, api_key, demo_registry, settings):
    settings.PODIUM = {**settings.PODIUM, "MAX_BODY_BYTES": 1000}
    response = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "swift-mini", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_an_unknown_v1_path_is_a_404_in_openai_format(podium_server):
    response = httpx.get(f"{podium_server.url}/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_a_record_that_fails_after_the_answer_was_sent_is_logged_not_raised_and_is_made_once(caplog):
    """The answer is out by then: a second response (or a hidden send error) would be worse than a log line."""
    from orchestration.gateway.chat import ChatOutcome

    attempts = []

    def failing_record():
        attempts.append(1)
        raise RuntimeError("the writer refused")

    outcome = ChatOutcome(run_id="run-1", created=0, model="m", result=None, unrecorded=failing_record)
    outcome.answered()
    outcome.answered()
    assert attempts == [1]
    assert "run-1" in caplog.text and "could not be recorded" in caplog.text

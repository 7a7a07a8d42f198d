"""POST /v1/embeddings: pass-through to openai_compatible models, recorded like a chat call."""
import httpx
import openai
import pytest

from orchestration.models import LLMModel, Run, Step
from orchestration.recording import writer
from orchestration.registry import bump_version


@pytest.fixture
def sdk(podium_server, api_key):
    return openai.OpenAI(base_url=f"{podium_server.url}/v1", api_key=api_key, max_retries=0, timeout=20)


def test_the_openai_sdk_gets_embeddings_and_the_call_is_recorded(sdk, upstream_model, fake_upstream):
    result = sdk.embeddings.create(model="fake-gpt", input=["one", "three"], dimensions=3, encoding_format="float")

    assert [item.embedding for item in result.data] == [[3.0, 0.5, -0.25], [5.0, 0.5, -0.25]]
    assert result.model == "fake-gpt" and result.usage.prompt_tokens == 2
    writer.flush()
    run, step = Run.objects.get(), Step.objects.get()
    assert (run.kind, run.status, run.target, run.tokens_in) == ("embeddings", "succeeded", "fake-gpt", 2)
    assert (step.node_type, step.model_alias, step.status, step.tokens_in) == ("embeddings", "fake-gpt", "succeeded", 2)
    assert float(run.cost_usd) == pytest.approx(2 * 2.0 / 1_000_000)  # fake-gpt: $2 / 1M input tokens


def test_fields_are_passed_through_with_the_upstream_model_name(podium_server, api_key, upstream_model):
    response = httpx.post(f"{podium_server.url}/v1/embeddings", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "fake-gpt", "input": "hello", "dimensions": 3, "user": "u-1",
                                "metadata": {"for": "podium"}}, timeout=20)
    assert response.status_code == 200
    assert response.json()["data"][0]["embedding"] == [5.0, 0.5, -0.25]


def test_a_mock_model_does_not_serve_embeddings(podium_server, api_key, demo_registry):
    response = httpx.post(f"{podium_server.url}/v1/embeddings", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "swift-mini", "input": "x"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_model"


@pytest.mark.parametrize("body, status, code", [
    ({"input": "x"}, 400, "invalid_request"),
    ({"model": "fake-gpt"}, 400, "invalid_request"),
    ({"model": "nope", "input": "x"}, 404, "model_not_found"),
])
def test_bad_embeddings_requests_get_openai_shaped_errors(podium_server, api_key, upstream_model, body, status, code):
    response = httpx.post(f"{podium_server.url}/v1/embeddings", headers={"authorization": f"Bearer {api_key}"},
                          json=body)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_embeddings_need_an_api_key(podium_server, upstream_model):
    response = httpx.post(f"{podium_server.url}/v1/embeddings", json={"model": "fake-gpt", "input": "x"})
    assert response.status_code == 401


def test_an_upstream_failure_is_a_502_and_a_failed_run(podium_server, api_key, upstream_model):
    LLMModel.objects.create(provider=upstream_model.provider, alias="fake-broken", upstream_name="fail-500")
    bump_version()
    response = httpx.post(f"{podium_server.url}/v1/embeddings", headers={"authorization": f"Bearer {api_key}"},
                          json={"model": "fake-broken", "input": "x"}, timeout=20)
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    writer.flush()
    run = Run.objects.get(id=response.headers["x-podium-run-id"])
    assert (run.kind, run.status, Step.objects.get().status) == ("embeddings", "failed", "failed")
    assert "HTTP 500" in run.error

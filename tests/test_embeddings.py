"""POST /v1/embeddings: pass-through to openai_compatible models, recorded like a chat call."""
import httpx
import openai
import pytest

from orchestration.gateway.writer import writer
from orchestration.models import LLMModel, Provider, Run, Step
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


# --- the same policy and resilience as chat --------------------------------------------------------------------

def post_embeddings(server, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", headers={"authorization": f"Bearer {key}"}, json=body, timeout=20)


def upstream_embeddings(upstream) -> list[dict]:
    """The bodies of the embeddings requests the fake upstream received."""
    return [request["body"] for request in upstream.requests if request.get("path") == "/v1/embeddings"]


@pytest.fixture
def embedding_pair(db, fake_upstream):
    """`embed-a` and `embed-b` serve the same upstream model from two providers; `embed-a` falls back to `embed-b`.
    One quick retry per model."""
    options = {"max_retries": 1, "retry_base_delay_s": 0.01}
    primary, secondary = (Provider.objects.create(name=name, kind=Provider.Kind.OPENAI_COMPATIBLE, timeout_s=2,
                                                  base_url=fake_upstream.base_url, mock_options=options)
                          for name in ("fake-us", "fake-eu"))
    LLMModel.objects.create(provider=primary, alias="embed-a", upstream_name="text-embed-1", price_in_per_m="1.0",
                            fallbacks=["embed-b"])
    LLMModel.objects.create(provider=secondary, alias="embed-b", upstream_name="text-embed-1", price_in_per_m="3.0")
    bump_version()


def test_a_data_class_the_model_may_not_take_is_refused_before_any_upstream_call(podium_server, api_key,
                                                                                  upstream_model, fake_upstream):
    body = {"model": "fake-gpt", "input": "salary review", "podium": {"data_class": "restricted"}}
    response = post_embeddings(podium_server, api_key, body)

    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("data_class_not_allowed", "podium.data_class")
    assert upstream_embeddings(fake_upstream) == []
    writer.flush()
    run = Run.objects.get(id=response.headers["x-podium-run-id"])
    assert (run.kind, run.status) == ("embeddings", "failed") and "restricted" in run.error
    assert not Step.objects.exists()

    LLMModel.objects.filter(alias="fake-gpt").update(allowed_data_classes=["restricted"])
    bump_version()
    assert post_embeddings(podium_server, api_key, body).status_code == 200
    assert upstream_embeddings(fake_upstream) == [{"model": "fake-gpt-1", "input": "salary review"}]


def test_pii_is_redacted_for_a_provider_that_is_not_local_and_kept_for_a_local_one(podium_server, api_key,
                                                                                    upstream_model, fake_upstream):
    texts = ["write to jane.doe@example.com", "card 4111 1111 1111 1111", "nothing to hide"]
    response = post_embeddings(podium_server, api_key, {"model": "fake-gpt", "input": texts})

    assert response.status_code == 200 and len(response.json()["data"]) == 3
    assert upstream_embeddings(fake_upstream)[-1]["input"] == ["write to [EMAIL]", "card [CARD]", "nothing to hide"]
    writer.flush()
    step = Step.objects.get(run_id=response.headers["x-podium-run-id"])
    assert step.attributes["redacted"] == {"email": 1, "card": 1}

    Provider.objects.filter(name="fake").update(is_local=True)
    bump_version()
    response = post_embeddings(podium_server, api_key, {"model": "fake-gpt", "input": texts[0]})
    assert response.status_code == 200
    assert upstream_embeddings(fake_upstream)[-1]["input"] == texts[0]
    writer.flush()
    assert "redacted" not in Step.objects.get(run_id=response.headers["x-podium-run-id"]).attributes


def test_a_failing_embeddings_model_is_retried_then_the_same_model_elsewhere_answers(podium_server, api_key,
                                                                                     embedding_pair, fake_upstream):
    fake_upstream.inject("fail-500", "fail-500")  # embed-a's attempt and its retry
    response = post_embeddings(podium_server, api_key, {"model": "embed-a", "input": "hello"})

    assert response.status_code == 200 and response.json()["model"] == "embed-a"
    assert len(upstream_embeddings(fake_upstream)) == 3
    writer.flush()
    run = Run.objects.get(id=response.headers["x-podium-run-id"])
    steps = {step.key: step for step in run.steps.all()}
    assert set(steps) == {"embeddings", "embeddings.fallback1"}
    first, fallback = steps["embeddings"], steps["embeddings.fallback1"]
    assert (first.status, first.model_alias, first.attributes["retries"]) == ("failed", "embed-a", 1)
    assert (fallback.status, fallback.model_alias, fallback.node_type) == ("succeeded", "embed-b", "embeddings")
    assert fallback.attributes["fallback_from"] == "embed-a"
    assert run.status == "succeeded" and run.tokens_in == 1
    assert float(run.cost_usd) == pytest.approx(1 * 3.0 / 1_000_000)  # one token at embed-b's price, once


def test_a_fallback_serving_another_embedding_model_is_never_used(podium_server, api_key, embedding_pair,
                                                                  fake_upstream):
    LLMModel.objects.create(provider=Provider.objects.get(name="fake-us"), alias="embed-other",
                            upstream_name="other-embed-2")
    LLMModel.objects.filter(alias="embed-a").update(fallbacks=["embed-other"])
    bump_version()
    fake_upstream.inject("fail-500", "fail-500")
    response = post_embeddings(podium_server, api_key, {"model": "embed-a", "input": "hello"})

    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    assert [body["model"] for body in upstream_embeddings(fake_upstream)] == ["text-embed-1", "text-embed-1"]
    writer.flush()
    assert list(Step.objects.values_list("model_alias", flat=True)) == ["embed-a"]


def test_an_embeddings_model_whose_circuit_opened_is_not_called_again(podium_server, api_key, embedding_pair,
                                                                       fake_upstream):
    Provider.objects.filter(name="fake-us").update(mock_options={"max_retries": 0, "circuit_failures": 2})
    LLMModel.objects.filter(alias="embed-a").update(fallbacks=[])
    bump_version()
    fake_upstream.default_fault = "fail-500"
    for _ in range(2):
        assert post_embeddings(podium_server, api_key, {"model": "embed-a", "input": "x"}).status_code == 502
    assert len(upstream_embeddings(fake_upstream)) == 2

    response = post_embeddings(podium_server, api_key, {"model": "embed-a", "input": "x"})
    assert response.status_code == 502 and "circuit open" in response.json()["error"]["message"]
    assert len(upstream_embeddings(fake_upstream)) == 2
    writer.flush()
    step = Step.objects.get(run_id=response.headers["x-podium-run-id"])
    assert (step.node_type, step.attributes["circuit"]) == ("embeddings", "open")

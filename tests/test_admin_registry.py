"""Admins configure providers and models in the Django admin, with plain-word validation."""
import httpx
import pytest

from orchestration.models import APIKey, LLMModel, Provider


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def provider_form(**overrides):
    data = {"name": "acme", "kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "ACME_API_KEY", "timeout_s": "30", "max_concurrency": "16", "enabled": "on",
            "mock_options": "{}", "models-TOTAL_FORMS": "0", "models-INITIAL_FORMS": "0"}
    data.update(overrides)
    return data


def model_form(provider, **overrides):
    data = {"provider": provider.pk, "upstream_name": "acme-1", "alias": "acme-one", "tier": "medium",
            "price_in_per_m": "1.5", "price_out_per_m": "3", "quality_prior": "0.7", "context_window": "8192",
            "tags": "[]", "allowed_data_classes": "[]", "fallbacks": "[]", "cache_ttl_s": "0", "enabled": "on",
            "confidence_method": "auto", "confidence_options": "{}"}
    data.update(overrides)
    return data


def test_the_admin_lists_providers_and_models_with_filters(admin_client, demo_registry):
    page = admin_client.get("/admin/orchestration/llmmodel/?tier__exact=fast").content.decode()
    assert "swift-mini" in page and "titan-ultra" not in page
    assert "mock-fast" in admin_client.get("/admin/orchestration/provider/?q=fast").content.decode()


def test_a_negative_price_is_refused_in_plain_words(admin_client):
    provider = Provider.objects.create(name="p", kind="mock")
    response = admin_client.post("/admin/orchestration/llmmodel/add/", model_form(provider, price_in_per_m="-1"))
    assert response.status_code == 200
    assert "A price cannot be negative." in response.content.decode()
    assert not LLMModel.objects.exists()


def test_an_alias_clash_is_refused_in_plain_words(admin_client):
    provider = Provider.objects.create(name="p", kind="mock")
    LLMModel.objects.create(provider=provider, upstream_name="x", alias="acme-one")
    response = admin_client.post("/admin/orchestration/llmmodel/add/", model_form(provider))
    assert "Another model already uses this alias" in response.content.decode()


def test_a_pasted_secret_instead_of_a_variable_name_is_refused(admin_client):
    response = admin_client.post("/admin/orchestration/provider/add/", provider_form(api_key_env="sk-live-123abc"))
    assert "not the key itself" in response.content.decode()
    assert not Provider.objects.exists()


def test_a_provider_and_model_added_in_the_admin_answer_through_v1_at_once(
        admin_client, podium_server, api_key, fake_upstream):
    response = admin_client.post("/admin/orchestration/provider/add/", provider_form(base_url=fake_upstream.base_url))
    assert response.status_code == 302, response.content.decode()[:2000]
    provider = Provider.objects.get(name="acme")
    response = admin_client.post("/admin/orchestration/llmmodel/add/", model_form(provider))
    assert response.status_code == 302

    answer = httpx.post(f"{podium_server.url}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                        json={"model": "acme-one", "messages": [{"role": "user", "content": "new model"}]})
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "echo: new model"


def test_a_key_created_in_the_admin_is_shown_once_and_stored_hashed(admin_client):
    response = admin_client.post("/admin/orchestration/apikey/add/", {"name": "ci", "scopes": '["chat"]'}, follow=True)
    page = response.content.decode()
    key = APIKey.objects.get(name="ci")
    shown = page.split("<code>")[1].split("</code>")[0]
    assert shown.startswith("pdm_") and key.key_hash != shown and shown not in str(APIKey.objects.values().get())
    assert shown not in admin_client.get(f"/admin/orchestration/apikey/{key.pk}/change/").content.decode()


def test_a_model_s_confidence_options_are_checked_in_the_admin(admin_client):
    provider = Provider.objects.create(name="p", kind="anthropic", base_url="http://127.0.0.1:9")
    response = admin_client.post("/admin/orchestration/llmmodel/add/", model_form(
        provider, confidence_method="verifier", confidence_options='{"samples": 40}'))
    body = response.content.decode()
    assert "samples: must be a whole number from 2 to 10" in body
    assert "the judge model&#x27;s alias is required" in body or "the judge model's alias is required" in body
    assert not LLMModel.objects.exists()
    response = admin_client.post("/admin/orchestration/llmmodel/add/", model_form(
        provider, confidence_method="self_consistency", confidence_options='{"samples": 5, "temperature": 0.9}'))
    assert response.status_code == 302
    assert LLMModel.objects.get().confidence_options == {"samples": 5, "temperature": 0.9}

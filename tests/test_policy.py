"""Data-class policy (refused before any call) and PII redaction before non-local providers."""
import json

import httpx
import pytest

from orchestration.engine.executor import StepFailed
from orchestration.engine.policy import (PolicyViolation, RouteRefused, allows, check_data_class, iban_valid, luhn_valid,
                                         redact_messages, redact_text)
from orchestration.engine.registry import Registry, RouteSpec
from orchestration.engine.routing import resolve_route
from orchestration.gateway.writer import writer
from orchestration.models import LLMModel, Provider, Run
from orchestration.registry import bump_version
from tests.enginehelpers import context, fake_model, finished_steps, quick_engine, run, user


def redacted(text: str) -> tuple[str, dict]:
    counts: dict = {}
    return redact_text(text, counts), counts


@pytest.mark.parametrize("text, expected, counts", [
    ("write to jane.doe+news@example.co.uk today", "write to [EMAIL] today", {"email": 1}),
    ("card 4111 1111 1111 1111, exp 12/29", "card [CARD], exp 12/29", {"card": 1}),
    ("amex 378282246310005 or 3782-822463-10005", "amex [CARD] or [CARD]", {"card": 2}),
    ("pay DE89 3704 0044 0532 0130 00 NOW", "pay [IBAN] NOW", {"iban": 1}),
    ("iban GB82WEST12345698765432.", "iban [IBAN].", {"iban": 1}),
    ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE] or [PHONE]", {"phone": 2}),
    ("tel 555.123.4567 / 06 12 34 56 78", "tel [PHONE] / [PHONE]", {"phone": 2}),
])
def test_pii_is_replaced_by_placeholders_and_counted(text, expected, counts):
    assert redacted(text) == (expected, counts)


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails the Luhn check",
    "iban DE89 3704 0044 0532 0130 01 fails mod 97",
    "on 2026-11-22 at 10:30, host 192.168.100.200, version 1.2.3, order 12345, 3,400,000 EUR",
    "no at-sign here, just words",
])
def test_look_alikes_are_left_alone(text):
    assert redacted(text) == (text, {})


def test_the_checksums():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")


def test_messages_are_copied_with_text_parts_redacted():
    messages = [{"role": "system", "content": "mail ops@example.com"},
                {"role": "user", "content": [{"type": "text", "text": "my card 4111111111111111"},
                                             {"type": "image_url", "image_url": {"url": "https://x/1.png"}}]}]
    out, counts = redact_messages(messages)
    assert counts == {"email": 1, "card": 1}
    assert out[0]["content"] == "mail [EMAIL]" and out[1]["content"][0]["text"] == "my card [CARD]"
    assert out[1]["content"][1] == messages[1]["content"][1]
    assert messages[0]["content"] == "mail ops@example.com"  # the caller's messages are untouched


SECRET_PROMPT = "I am jane@example.com, card 4111 1111 1111 1111, phone +33 1 23 45 67 89"


def test_pii_never_reaches_a_non_local_provider_and_the_step_records_only_counts(fake_upstream):
    model = fake_model(fake_upstream, "cloud")
    ctx = context(model)
    result = run(lambda: quick_engine().call_model(ctx, model, user(SECRET_PROMPT)))

    sent = fake_upstream.requests[-1]["body"]["messages"][0]["content"]
    assert sent == "I am [EMAIL], card [CARD], phone [PHONE]"
    assert result.output == "echo: I am [EMAIL], card [CARD], phone [PHONE]"
    [step] = finished_steps(ctx)
    assert step["attributes"]["redacted"] == {"email": 1, "card": 1, "phone": 1}
    everything = json.dumps(ctx.sink.events)
    for value in ("jane@example.com", "4111 1111 1111 1111", "23 45 67 89"):
        assert value not in everything


def test_a_local_provider_receives_the_prompt_as_written(fake_upstream):
    model = fake_model(fake_upstream, "on-prem", is_local=True)
    ctx = context(model)
    run(lambda: quick_engine().call_model(ctx, model, user(SECRET_PROMPT)))
    assert fake_upstream.requests[-1]["body"]["messages"][0]["content"] == SECRET_PROMPT
    assert "redacted" not in finished_steps(ctx)[0]["attributes"]


def test_a_data_class_the_model_does_not_allow_is_refused_before_any_call(fake_upstream):
    model = fake_model(fake_upstream, "public-only")  # empty list: public and internal
    ctx = context(model, data_class="sensitive")
    with pytest.raises(PolicyViolation) as refusal:
        run(lambda: quick_engine().call_model(ctx, model, user("secret plans")))
    assert refusal.value.code == "data_class_not_allowed"
    assert "public-only" in str(refusal.value) and "sensitive" in str(refusal.value)
    assert fake_upstream.requests == [] and ctx.sink.events == []


def test_internal_data_goes_to_a_model_with_the_default_classes(fake_upstream):
    model = fake_model(fake_upstream, "default-classes")
    ctx = context(model, data_class="internal")
    assert run(lambda: quick_engine().call_model(ctx, model, user("memo"))).output == "echo: memo"


def test_fallbacks_that_may_not_receive_the_data_class_are_skipped(fake_upstream):
    primary = fake_model(fake_upstream, "primary", allowed_data_classes=("sensitive",),
                         fallbacks=("public-backup", "vetted-backup"))
    public_backup = fake_model(fake_upstream, "public-backup")
    vetted_backup = fake_model(fake_upstream, "vetted-backup", allowed_data_classes=("public", "sensitive"))
    fake_upstream.inject("fail-500")
    ctx = context(primary, public_backup, vetted_backup, data_class="sensitive")
    result = run(lambda: quick_engine(retries=0).call_model(ctx, primary, user("dossier")))
    assert result.model == "vetted-backup"
    assert [body["body"]["model"] for body in fake_upstream.requests] == ["primary-upstream", "vetted-backup-upstream"]


# --- through /v1 ---------------------------------------------------------------------------------------
@pytest.fixture
def cloud_model(db, fake_upstream):
    provider = Provider.objects.create(name="cloud", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                       base_url=fake_upstream.base_url, timeout_s=2)
    LLMModel.objects.create(provider=provider, alias="cloud-gpt", upstream_name="cloud-1")
    LLMModel.objects.create(provider=provider, alias="vault-gpt", upstream_name="vault-1",
                            allowed_data_classes=["sensitive"])
    bump_version()


def post(server, key, body):
    return httpx.post(f"{server.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body,
                      timeout=10)


def test_v1_refuses_a_sensitive_request_to_a_model_that_does_not_allow_it_with_a_403(
        podium_server, api_key, cloud_model, fake_upstream):
    response = post(podium_server, api_key, {"model": "cloud-gpt", "podium": {"data_class": "sensitive"},
                                             "messages": [{"role": "user", "content": "merger plans"}]})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "data_class_not_allowed" and "sensitive" in error["message"]
    assert fake_upstream.requests == []
    writer.flush()
    run_row = Run.objects.get(id=response.headers["x-podium-run-id"])
    assert run_row.status == "failed" and "sensitive" in run_row.error and not run_row.steps.exists()


def test_v1_sends_a_sensitive_request_to_a_model_that_allows_it_redacted(podium_server, api_key, cloud_model,
                                                                         fake_upstream):
    response = post(podium_server, api_key, {"model": "vault-gpt", "podium": {"data_class": "sensitive"},
                                             "messages": [{"role": "user", "content": "mail bob@corp.example"}]})
    assert response.status_code == 200
    assert fake_upstream.requests[-1]["body"]["messages"][0]["content"] == "mail [EMAIL]"
    assert "podium" not in fake_upstream.requests[-1]["body"]
    writer.flush()
    step = Run.objects.get(id=response.headers["x-podium-run-id"]).steps.get()
    assert step.attributes["redacted"] == {"email": 1}
    assert "bob@corp.example" not in json.dumps(step.prompt) + json.dumps(step.attributes)


@pytest.mark.parametrize("podium, param", [("sensitive", "podium"), ({"data_class": "secret-ish"}, "podium.data_class"),
                                           ({"cache": "no"}, "podium.cache")])
def test_v1_rejects_a_malformed_podium_object(podium_server, api_key, cloud_model, podium, param):
    response = post(podium_server, api_key, {"model": "cloud-gpt", "podium": podium,
                                             "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == param


# --- local-only classes and routes ---------------------------------------------------------------------------
def test_a_local_only_class_goes_to_a_local_model_or_one_that_lists_it(fake_upstream):
    cloud = fake_model(fake_upstream, "cloud")
    vetted_cloud = fake_model(fake_upstream, "vetted", allowed_data_classes=("restricted",))
    local = fake_model(fake_upstream, "on-prem", is_local=True)
    narrow_local = fake_model(fake_upstream, "narrow", is_local=True, allowed_data_classes=("public",))
    for data_class in ("sensitive", "restricted"):
        assert allows(local, data_class) and not allows(cloud, data_class) and not allows(narrow_local, data_class)
    assert allows(vetted_cloud, "restricted") and not allows(vetted_cloud, "sensitive")
    # Other classes keep the explicit rule, local or not; no class restricts nothing.
    assert allows(cloud, "internal") and allows(local, "public") and not allows(narrow_local, "internal")
    assert allows(cloud, None) and allows(narrow_local, None)
    # With no local-only class configured, sensitive needs an explicit listing even on a local model.
    assert not allows(local, "sensitive", frozenset())


def test_the_refusal_names_the_rule_and_the_model(fake_upstream):
    cloud = fake_model(fake_upstream, "cloud")
    with pytest.raises(PolicyViolation) as refusal:
        check_data_class(cloud, "sensitive")
    assert str(refusal.value) == ("Data of class 'sensitive' goes only to local models or models that explicitly "
                                  "allow it; the model 'cloud' may not receive it (not local, allows no 'sensitive' "
                                  "explicitly).")


def route_registry(fake_upstream, *candidates, local_only=frozenset({"sensitive", "restricted"})):
    route = RouteSpec(name="chat", strategy="cost", candidates=tuple(model.alias for model in candidates))
    return Registry(models={model.alias: model for model in candidates}, routes={"chat": route},
                    local_only_data_classes=local_only)


def test_a_route_chooses_among_the_candidates_that_may_receive_the_class(fake_upstream):
    cheap_cloud = fake_model(fake_upstream, "cheap-cloud", price_in_per_m=0.1)
    dear_local = fake_model(fake_upstream, "dear-local", is_local=True, price_in_per_m=9.0)
    registry = route_registry(fake_upstream, cheap_cloud, dear_local)

    chosen, _ = run(lambda: resolve_route(registry.routes["chat"], registry, text="x"))
    assert chosen.alias == "cheap-cloud"
    chosen, attributes = run(lambda: resolve_route(registry.routes["chat"], registry, text="x",
                                                   data_class="sensitive"))
    assert chosen.alias == "dear-local" and chosen.fallbacks == ()
    assert attributes["data_class_excluded"] == ["cheap-cloud"]


def test_a_route_with_no_candidate_for_the_class_is_refused_naming_the_rule(fake_upstream):
    registry = route_registry(fake_upstream, fake_model(fake_upstream, "a"),
                              fake_model(fake_upstream, "b", allowed_data_classes=("public",)))
    with pytest.raises(RouteRefused) as refusal:
        run(lambda: resolve_route(registry.routes["chat"], registry, text="x", data_class="restricted"))
    assert refusal.value.code == "data_class_not_allowed"
    assert str(refusal.value) == ("Data of class 'restricted' goes only to local models or models that explicitly "
                                  "allow it; route 'chat' has none: a: not local, allows no 'restricted' explicitly; "
                                  "b: not local, allows only public.")


def test_a_sensitive_call_whose_local_model_fails_does_not_fall_back_to_the_cloud(fake_upstream):
    local = fake_model(fake_upstream, "on-prem", is_local=True, fallbacks=("cloud",))
    cloud = fake_model(fake_upstream, "cloud")
    fake_upstream.inject("fail-500")
    ctx = context(local, cloud, data_class="sensitive")
    with pytest.raises(StepFailed):
        run(lambda: quick_engine(retries=0).call_model(ctx, local, user("dossier")))
    assert [request["body"]["model"] for request in fake_upstream.requests] == ["on-prem-upstream"]


def test_a_classifier_route_keeps_sensitive_text_from_a_cloud_classifier(fake_upstream):
    cloud_classifier = fake_model(fake_upstream, "cloud-classifier")
    local_coder = fake_model(fake_upstream, "local-coder", is_local=True)
    local_general = fake_model(fake_upstream, "local-general", is_local=True)
    route = RouteSpec(name="desk", strategy="classifier", candidates=("local-general", "local-coder"),
                      options={"classifier_model": "cloud-classifier", "categories": {"code": "local-coder"},
                               "rules": {"code": ["python"]}, "general": "local-general"})
    registry = Registry(models={m.alias: m for m in (cloud_classifier, local_coder, local_general)},
                        routes={"desk": route})
    asked = []

    async def classify(alias, prompt):
        asked.append(alias)
        raise AssertionError("the classifier model must not be asked")

    chosen, attributes = run(lambda: resolve_route(route, registry, text="fix my python loop", classify=classify,
                                                   data_class="sensitive"))
    assert chosen.alias == "local-coder" and asked == [] and "by rules" in attributes["reason"]

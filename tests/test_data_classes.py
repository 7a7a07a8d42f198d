"""Data classes over real HTTP on loopback: the request's class, else the key's, else its team's default; local-only
classes go to local models (or models that list them), a route keeps only the candidates that may receive the
class, and what a run stores of a redacted prompt is the redacted text."""
import json

import httpx
import pytest

from orchestration.gateway.writer import writer
from orchestration.models import APIKey, LLMModel, Provider, RouteAlias, Run, Step, Team
from orchestration.registry import bump_version
from orchestration.workflows import save_workflow

PII = "mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111"
PII_VALUES = ("jane.doe@example.com", "7946 0958", "4111 1111 1111 1111")


@pytest.fixture
def models(db, fake_upstream):
    """A cloud model (cheap) and a local one (dearer) behind the same fake upstream: which answered shows in the
    upstream model name it received."""
    cloud = Provider.objects.create(name="cloud", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                    base_url=fake_upstream.base_url, timeout_s=2)
    onprem = Provider.objects.create(name="onprem", kind=Provider.Kind.OPENAI_COMPATIBLE,
                                     base_url=fake_upstream.base_url, timeout_s=2, is_local=True)
    LLMModel.objects.create(provider=cloud, alias="cloud-gpt", upstream_name="cloud-1", price_in_per_m="0.1",
                            price_out_per_m="0.1")
    LLMModel.objects.create(provider=onprem, alias="local-llama", upstream_name="local-1", price_in_per_m="5",
                            price_out_per_m="5")
    RouteAlias.objects.create(name="cloud-only", strategy="cost", candidates=["cloud-gpt"])
    RouteAlias.objects.create(name="cheapest", strategy="cost", candidates=["cloud-gpt", "local-llama"])
    bump_version()


def team(slug: str, *, default_data_class: str = "", models=(), routes=()) -> Team:
    row = Team.objects.create(slug=slug, name=slug.title(), default_data_class=default_data_class)
    row.allowed_models.set(LLMModel.objects.filter(alias__in=models))
    row.allowed_route_aliases.set(RouteAlias.objects.filter(name__in=routes))
    return row


def key_of(team_row: Team, data_class: str = "") -> str:
    key, raw = APIKey.issue(f"{team_row.slug}-key")
    APIKey.objects.filter(pk=key.pk).update(team=team_row, data_class=data_class)
    bump_version()  # the key cache follows the registry version
    return raw


def chat(server, raw_key: str, model: str, content: str = "quarterly figures", **podium):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if podium:
        body["podium"] = podium
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {raw_key}"})


def upstream_models(fake_upstream) -> list[str]:
    return [request["body"]["model"] for request in fake_upstream.requests]


def test_a_sensitive_team_default_on_a_cloud_only_model_list_is_refused_naming_the_rule(
        podium_server, models, fake_upstream):
    raw = key_of(team("legal", default_data_class="sensitive", models=["cloud-gpt"], routes=["cloud-only"]))

    direct = chat(podium_server, raw, "cloud-gpt")  # no class in the request: the team's default applies
    routed = chat(podium_server, raw, "cloud-only")

    for response in (direct, routed):
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "data_class_not_allowed")
        assert ("Data of class 'sensitive' goes only to local models or models that explicitly allow it"
                in error["message"])
    assert "route 'cloud-only' has none: cloud-gpt: not local" in routed.json()["error"]["message"]
    assert "'cloud-gpt' may not receive it" in direct.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_a_route_with_a_local_candidate_sends_sensitive_work_there(podium_server, models, fake_upstream):
    sensitive = key_of(team("legal", default_data_class="sensitive", routes=["cheapest"]))
    ordinary = key_of(team("sales", routes=["cheapest"]))

    assert chat(podium_server, ordinary, "cheapest").status_code == 200  # no class: the cheapest, in the cloud
    response = chat(podium_server, sensitive, "cheapest")

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: quarterly figures"
    assert upstream_models(fake_upstream) == ["cloud-1", "local-1"]
    writer.flush()
    step = Step.objects.get(run_id=response.headers["x-podium-run-id"])
    assert (step.model_alias, step.provider) == ("local-llama", "onprem")
    assert step.attributes["data_class_excluded"] == ["cloud-gpt"] and step.attributes["fallback_order"] == []


def test_the_requests_class_overrides_the_keys_and_the_keys_overrides_the_teams(podium_server, models,
                                                                                 fake_upstream):
    legal = team("legal", default_data_class="sensitive", models=["cloud-gpt"])
    sensitive_key = key_of(team("ops", models=["cloud-gpt"]), data_class="sensitive")
    internal_key = key_of(legal, data_class="internal")

    # The key says sensitive, the request says public: the request wins.
    assert chat(podium_server, sensitive_key, "cloud-gpt", data_class="public").status_code == 200
    # The key says sensitive, the request says nothing: refused.
    assert chat(podium_server, sensitive_key, "cloud-gpt").json()["error"]["code"] == "data_class_not_allowed"
    # The team says sensitive, the key says internal: the key wins.
    assert chat(podium_server, internal_key, "cloud-gpt").status_code == 200
    # ... and a request may still raise it again.
    assert chat(podium_server, internal_key, "cloud-gpt", data_class="restricted").status_code == 403
    assert upstream_models(fake_upstream) == ["cloud-1", "cloud-1"]


def test_a_cloud_model_that_lists_the_class_may_receive_it(podium_server, models, fake_upstream):
    LLMModel.objects.filter(alias="cloud-gpt").update(allowed_data_classes=["public", "internal", "sensitive"])
    bump_version()
    raw = key_of(team("legal", default_data_class="sensitive", models=["cloud-gpt"]))
    assert chat(podium_server, raw, "cloud-gpt").status_code == 200
    # A local model whose list leaves the class out is held to its list.
    LLMModel.objects.filter(alias="local-llama").update(allowed_data_classes=["public"])
    bump_version()
    raw = key_of(team("vault", default_data_class="sensitive", models=["local-llama"]))
    assert chat(podium_server, raw, "local-llama").status_code == 403


def test_with_no_local_only_class_sensitive_keeps_the_explicit_rule(podium_server, models, fake_upstream, settings):
    settings.PODIUM = {**settings.PODIUM, "LOCAL_ONLY_DATA_CLASSES": []}  # PODIUM_LOCAL_ONLY_DATA_CLASSES=""
    bump_version()
    raw = key_of(team("legal", default_data_class="sensitive", routes=["cheapest"]))
    response = chat(podium_server, raw, "cheapest")  # local-llama lists no class: public and internal only
    assert response.status_code == 403
    assert "goes only to models that explicitly allow it; route 'cheapest' has none" in response.json()["error"]["message"]


def test_the_stored_prompt_of_a_redacted_request_holds_no_pii(podium_server, models, fake_upstream, published):
    raw = key_of(team("sales", models=["cloud-gpt"]))
    response = chat(podium_server, raw, "cloud-gpt", content=PII)

    assert response.status_code == 200
    sent = fake_upstream.requests[-1]["body"]["messages"][0]["content"]
    assert sent == "mail [EMAIL] or call [PHONE], card [CARD]"
    writer.flush()
    run = Run.objects.get(id=response.headers["x-podium-run-id"])
    step = run.steps.get()
    assert run.input == {"messages": [{"role": "user", "content": sent}]}  # what the upstream saw
    assert run.metadata["input_redacted"] == step.attributes["redacted"] == {"email": 1, "phone": 1, "card": 1}
    stored = json.dumps([run.input, run.metadata, run.output, step.prompt, step.attributes, published], default=str)
    for value in PII_VALUES:
        assert value not in stored


def test_a_prompt_that_went_only_to_a_local_model_is_stored_as_written(podium_server, models, fake_upstream):
    raw = key_of(team("legal", default_data_class="sensitive", models=["local-llama"]))
    response = chat(podium_server, raw, "local-llama", content=PII)
    assert response.status_code == 200 and fake_upstream.requests[-1]["body"]["messages"][0]["content"] == PII
    writer.flush()
    run = Run.objects.get(id=response.headers["x-podium-run-id"])
    assert run.input["messages"][0]["content"] == PII and "input_redacted" not in run.metadata


def test_a_workflow_run_takes_the_keys_class_and_stores_its_input_redacted(podium_server, models, fake_upstream):
    save_workflow(slug="summarise", spec={"root": {"type": "call", "model": "cheapest", "prompt": "sum up {{input}}"}})
    save_workflow(slug="cloud-summary", spec={"root": {"type": "call", "model": "cloud-only", "prompt": "{{input}}"}})
    sensitive = key_of(team("legal", default_data_class="sensitive"))
    ordinary = key_of(team("sales"))

    refused = chat(podium_server, sensitive, "workflow/cloud-summary", content="the dossier")
    routed = chat(podium_server, sensitive, "workflow/summarise", content="the dossier")
    cloud = chat(podium_server, ordinary, "workflow/summarise", content=PII)

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "data_class_not_allowed"
    assert "route 'cloud-only' has none" in refused.json()["error"]["message"]
    assert routed.status_code == 200 and cloud.status_code == 200
    assert upstream_models(fake_upstream) == ["local-1", "cloud-1"]
    assert Run.objects.get(id=routed.headers["x-podium-run-id"]).metadata["data_class"] == "sensitive"
    cloud_run = Run.objects.get(id=cloud.headers["x-podium-run-id"])
    assert "data_class" not in cloud_run.metadata and cloud_run.metadata["input_redacted"] == {
        "email": 1, "phone": 1, "card": 1}
    stored = json.dumps([cloud_run.input, list(cloud_run.steps.values_list("prompt", flat=True))])
    for value in PII_VALUES:
        assert value not in stored


def test_api_runs_post_with_a_key_takes_the_keys_class(podium_server, models, fake_upstream):
    save_workflow(slug="summarise", spec={"root": {"type": "call", "model": "cheapest", "prompt": "sum up {{input}}"}})
    key, raw = APIKey.issue("runner", scopes=["runs", "runs:read"])
    APIKey.objects.filter(pk=key.pk).update(team=team("legal", default_data_class="sensitive"))
    bump_version()
    response = httpx.post(f"{podium_server.url}/api/runs/", json={"workflow": "summarise", "input": "the dossier"},
                          headers={"authorization": f"Bearer {raw}"}, timeout=10)
    assert response.status_code == 202, response.text
    assert Run.objects.get(id=response.json()["id"]).metadata["data_class"] == "sensitive"


def test_api_runs_post_by_a_person_takes_the_run_teams_class(podium_server, models, fake_upstream):
    """No key: a person's run belongs to their team, and its steps are held to that team's default class."""
    from django.contrib.auth import get_user_model

    from orchestration.models import TeamMembership
    from tests.livehelpers import session_cookie

    save_workflow(slug="summarise", spec={"root": {"type": "call", "model": "cheapest", "prompt": "sum up {{input}}"}})
    person = get_user_model().objects.create_user("counsel", password="counsel-password-1")
    TeamMembership.objects.create(team=team("legal", default_data_class="sensitive"), user=person, role="reviewer")
    csrf = "c" * 32
    response = httpx.post(f"{podium_server.url}/api/runs/", json={"workflow": "summarise", "input": "the dossier"},
                          headers={"cookie": f"{session_cookie(person)}; csrftoken={csrf}", "x-csrftoken": csrf,
                                   "origin": podium_server.url}, timeout=10)
    assert response.status_code == 202, response.text
    assert Run.objects.get(id=response.json()["id"]).metadata["data_class"] == "sensitive"


def test_a_streamed_request_is_held_to_the_same_rule(podium_server, models, fake_upstream):
    raw = key_of(team("legal", default_data_class="sensitive", routes=["cloud-only", "cheapest"]))
    body = {"stream": True, "messages": [{"role": "user", "content": "the dossier"}]}
    headers = {"authorization": f"Bearer {raw}"}
    refused = httpx.post(f"{podium_server.url}/v1/chat/completions", json={**body, "model": "cloud-only"},
                         headers=headers, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "data_class_not_allowed"
    streamed = httpx.post(f"{podium_server.url}/v1/chat/completions", json={**body, "model": "cheapest"},
                          headers=headers, timeout=10)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert upstream_models(fake_upstream) == ["local-1"]


def test_a_review_opened_on_a_cloud_answer_keeps_the_redacted_prompt(podium_server, models, fake_upstream,
                                                                     published):
    from orchestration.models import ReviewItem

    LLMModel.objects.filter(alias="cloud-gpt").update(confidence_method="prior")  # confidence 0.5: below the gate
    bump_version()
    save_workflow(slug="checked", spec={"root": {"type": "gate", "threshold": 0.9, "prompt": "answer {{input}}",
                                                 "node": {"type": "call", "model": "cloud-gpt"}}})
    response = chat(podium_server, key_of(team("sales")), "workflow/checked", content=PII)

    assert response.status_code == 202, response.text
    item = ReviewItem.objects.get(run_id=response.json()["id"])
    assert "[EMAIL]" in json.dumps(item.request)
    stored = json.dumps([item.request, item.candidates, published], default=str)
    for value in PII_VALUES:
        assert value not in stored

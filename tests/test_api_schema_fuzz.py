"""Schemathesis against /api/schema/ on a live server: every operation, with generated path parameters,
query strings and bodies, both valid for the schema and not (positive and negative modes), as an API key
holding every scope and as a staff session (the only one that may write workflows).

No 5xx; valid requests get answers that match the schema; invalid ones are refused with a 4xx.
Bounded: a few examples per operation and mode.

(One test walking the operations rather than `schema.parametrize()`: schemathesis' pytest plugin
does not run on pytest 9 yet.)
"""
import secrets

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance)

from orchestration.demo import seed_demo_workflows
from orchestration.models import APIKey
from orchestration.models.keys import SCOPES

MAX_EXAMPLES = 6
CHECKS = {
    GenerationMode.POSITIVE: [not_a_server_error, response_schema_conformance, content_type_conformance],
    GenerationMode.NEGATIVE: [not_a_server_error, negative_data_rejection],
}


def staff_session_headers(user) -> dict:
    """A logged-in staff session as the live server sees it: the session cookie and a CSRF pair."""
    client = Client()
    client.force_login(user)
    token = secrets.token_hex(16)  # 32 characters: an unmasked CSRF secret
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={token}", "X-CSRFToken": token}


def examples(operation, mode, headers: dict, calls: list):
    """A Hypothesis test sending MAX_EXAMPLES generated requests for one operation and mode."""
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def check(case):
        calls.append(case.call_and_validate(headers=headers, checks=CHECKS[mode]).status_code)
    return check


def fuzz(schema_url: str, headers: dict, modes) -> tuple[list[str], list[int], int]:
    schema = schemathesis.openapi.from_url(schema_url, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures, calls = [], []
    for operation in operations:
        for mode in modes:
            try:
                examples(operation, mode, headers, calls)()
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failure, not just the first
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, calls, len(operations)


@pytest.mark.timeout(300)
def test_every_api_operation_answers_generated_requests_without_5xx_and_as_documented(podium_server, demo_registry,
                                                                                     admin_user):
    seed_demo_workflows()  # so generated slugs and lists meet real rows too
    _, raw = APIKey.issue("fuzz", scopes=list(SCOPES))
    schema_url = f"{podium_server.url}/api/schema/"
    key_failures, key_calls, operations = fuzz(schema_url, {"Authorization": f"Bearer {raw}"}, list(GenerationMode))
    staff_failures, staff_calls, _ = fuzz(schema_url, staff_session_headers(admin_user), [GenerationMode.POSITIVE])

    assert not key_failures + staff_failures, "\n\n".join(key_failures + staff_failures)
    assert operations >= 15
    assert len(key_calls) >= 2 * operations and len(staff_calls) >= operations
    assert all(code < 500 for code in key_calls + staff_calls)
    assert any(200 <= code < 300 for code in staff_calls)  # the session is really logged in

"""Schemathesis against /api/schema/ on a live server, authenticated with a key holding every scope:
no 5xx, and every documented response matches the schema. Bounded: a few examples per operation.

(One test walking the operations rather than `schema.parametrize()`: schemathesis' pytest plugin
does not run on pytest 9 yet.)
"""
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from orchestration.models import APIKey
from orchestration.models.keys import SCOPES

MAX_EXAMPLES = 8
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_the_api_answers_generated_requests_without_5xx_and_as_documented(podium_server, demo_registry):
    _, raw = APIKey.issue("fuzz", scopes=list(SCOPES))
    headers = {"Authorization": f"Bearer {raw}"}
    schema = schemathesis.openapi.from_url(f"{podium_server.url}/api/schema/", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures, calls = [], []

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def check(case):
            calls.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failure, not just the first
            failures.append(f"{operation.label}: {exc}")

    assert len(operations) >= 10 and len(calls) >= len(operations)
    assert not failures, "\n\n".join(failures)
    assert all(code < 500 for code in calls)

"""Domain errors carry a code; api/errors.py alone turns a code into an HTTP status."""
from __future__ import annotations

import re
from pathlib import Path

from api.errors import DEFAULT_STATUS, STATUS_BY_CODE, http_status
from orchestration.engine.policy import PolicyViolation
from orchestration.errors import GatewayError, ReviewConflict, ReviewError, ReviewForbidden, ReviewNotFound
from orchestration.gateway.workflows import WORKFLOW_STATUS_CODES

ROOT = Path(__file__).resolve().parent.parent


def codes_written_in_the_source() -> set[str]:
    found = set()
    for package in ("api", "orchestration"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r'\bcode="([a-z_]+)"', path.read_text()))
    return found


def test_every_code_podium_raises_has_its_status_in_the_one_table():
    raised = (codes_written_in_the_source() | set(WORKFLOW_STATUS_CODES.values()) | {PolicyViolation.code}
              | {error.code for error in (ReviewError, ReviewNotFound, ReviewForbidden, ReviewConflict)})
    raised -= {"throttled"}  # DRF's own Throttled exception (api/throttling.py), which carries its 429
    assert raised - set(STATUS_BY_CODE) == set()


def test_a_domain_error_knows_no_http_status_and_the_table_gives_it_one():
    refused = GatewayError("The model 'x' does not exist.", code="model_not_found", param="model")
    assert not hasattr(refused, "status") and http_status(refused) == 404
    assert http_status(ReviewConflict("Claimed by bob.", holder="bob")) == 409
    assert http_status(GatewayError("Odd.", code="something_new")) == DEFAULT_STATUS == 400  # a client error, never 500

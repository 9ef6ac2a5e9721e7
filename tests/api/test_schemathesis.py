"""Property-based run of the whole API against its own live OpenAPI schema.

Every operation gets a bounded, derandomized set of generated requests
(valid and invalid), sent as staff through WSGI; the API must never answer
5xx and every documented response must match its schema.

    .venv/bin/pytest tests/api/test_schemathesis.py
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from egressportal.wsgi import application
from tests.conftest import api_token_for

MAX_EXAMPLES = 25


@pytest.fixture(autouse=True)
def _keep_the_test_transaction():
    """Django's WSGI handler closes "old" connections around each request; inside
    a test that would close the connection holding the test's transaction (the
    test client disconnects these handlers for the same reason)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_auth(staff, infra, make_app) -> dict[str, str]:
    # Some rows to find, change and delete: a region, gateways, nodes, a pool and an app.
    make_app(staff, "seed-app")
    # Tokens to list, read and revoke (the one in use among them).
    api_token_for(staff, "spare")
    return {"Authorization": f"Token {api_token_for(staff, 'schemathesis', days=1)}"}


# Loaded at collection from the running app (the schema view needs no database).
# (schemathesis.pytest.from_fixture would load it lazily, but it breaks on pytest 9.)
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_conforms_to_its_schema(case, staff_auth):
    response = case.call(headers=staff_auth)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

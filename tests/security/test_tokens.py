"""API tokens: a revoked token stops working at once, a guessed one counts against the anonymous rate, and no
token ever reaches the logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from egressportal.ops.logs import JsonFormatter, PlainFormatter

pytestmark = pytest.mark.django_db


def test_revoked_token_is_refused_at_once(alice):
    token = Token.objects.create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/apps/").status_code == 200
    token.delete()  # what an admin does when a token leaks (admin site: Tokens)
    assert client.get("/api/v1/apps/").status_code == 401


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the configured log handler writes (its own filters and formatter: what reaches the logs)."""
    handlers = [
        h for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and isinstance(h.formatter, JsonFormatter | PlainFormatter)
    ]
    assert handlers, "the settings' console handler is not installed on the root logger"
    out = io.StringIO()
    previous = [h.setStream(out) for h in handlers]
    try:
        yield out
    finally:
        for h, stream in zip(handlers, previous, strict=True):
            h.setStream(stream)


def test_tokens_never_reach_the_logs(alice, log_output):
    token = Token.objects.create(user=alice)
    guessed = "0" * 40
    for key in (token.key, guessed):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        assert client.get("/api/v1/apps/").status_code == (200 if key == token.key else 401)
        assert client.post("/api/v1/apps/", {"name": "x", "region": "nope"}, format="json").status_code == (
            400 if key == token.key else 401
        )
        # A careless line of the kind that leaks credentials: the handler must scrub it too.
        logging.getLogger("egressportal.api").warning(
            "authentication header was %s", f"Token {key}", extra={"authorization": f"Token {key}"}
        )
    text = log_output.getvalue()
    lines = text.splitlines()
    # Something was logged: the requests' own lines and the careless ones (else this test proves nothing).
    assert sum("Bad Request: /api/v1/apps/" in line for line in lines) == 1, text
    assert sum("Unauthorized: /api/v1/apps/" in line for line in lines) == 2, text
    careless = [line for line in lines if "authentication header was" in line]
    assert len(careless) == 2 and all("[REDACTED]" in line for line in careless), text
    assert token.key not in text and guessed not in text


def test_guessed_tokens_are_throttled_as_anonymous(settings, alice):
    from django.core.cache import cache

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "3/min", "user": "1000/min"}}
    cache.clear()
    statuses = []
    for i in range(5):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {i:040d}")
        statuses.append(client.get("/api/v1/apps/").status_code)
    assert 429 in statuses, statuses

"""API tokens: a revoked token stops working at once, a guessed one counts against the anonymous rate, and no
token ever reaches the logs."""

from __future__ import annotations

import logging

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_revoked_token_is_refused_at_once(alice):
    token = Token.objects.create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/apps/").status_code == 200
    token.delete()  # what an admin does when a token leaks (admin site: Tokens)
    assert client.get("/api/v1/apps/").status_code == 401


def test_tokens_never_reach_the_logs(alice, caplog):
    token = Token.objects.create(user=alice)
    guessed = "0" * 40
    with caplog.at_level(logging.DEBUG):
        for key in (token.key, guessed):
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
            client.get("/api/v1/apps/")
            client.post("/api/v1/apps/", {"name": "x", "region": "nope"}, format="json")
    text = "\n".join(r.getMessage() + str(getattr(r, "__dict__", "")) for r in caplog.records)
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

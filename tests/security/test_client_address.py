"""The client address cannot be forged with X-Forwarded-For: the API throttles and the log-in limits read it
through one rule (egressportal/clientaddr.py) that trusts only as many proxies as TRUSTED_PROXIES says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from egressportal.clientaddr import client_address_from

from .test_headers import ROOT, _production_env

PASSWORD = "pw-for-tests-only"


@pytest.mark.parametrize(
    "remote, xff, proxies, expected",
    [
        ("198.51.100.1", None, 0, "198.51.100.1"),
        ("198.51.100.1", "203.0.113.9", 0, "198.51.100.1"),  # no proxies: the header means nothing
        ("198.51.100.1", "203.0.113.9", 1, "203.0.113.9"),
        ("198.51.100.1", "6.6.6.6, 203.0.113.9", 1, "203.0.113.9"),  # what the client prepends is never read
        ("198.51.100.2", "6.6.6.6, 203.0.113.9, 198.51.100.1", 2, "203.0.113.9"),
        ("198.51.100.1", "203.0.113.9", 3, "203.0.113.9"),  # a shorter chain: the leftmost entry
        ("198.51.100.1", "not-an-address", 1, "198.51.100.1"),
        ("198.51.100.1", " , ", 1, "198.51.100.1"),
        ("198.51.100.1", "2001:db8::1", 1, "2001:db8::1"),
    ],
)
def test_client_address_rule(remote, xff, proxies, expected):
    assert client_address_from(remote, xff, proxies) == expected


def _anon_statuses(n: int, **extra) -> list[int]:
    return [APIClient().get("/api/v1/apps/", **{k: v(i) if callable(v) else v for k, v in extra.items()}).status_code
            for i in range(n)]


@pytest.mark.django_db
def test_a_forged_forwarded_for_does_not_escape_the_anonymous_throttle(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "3/min", "user": "9/min"}}
    settings.TRUSTED_PROXIES = 0
    cache.clear()
    statuses = _anon_statuses(5, HTTP_X_FORWARDED_FOR=lambda i: f"203.0.113.{i}", REMOTE_ADDR="198.51.100.7")
    assert statuses == [401, 401, 401, 429, 429]


@pytest.mark.django_db
def test_behind_one_trusted_proxy_clients_are_told_apart_and_still_cannot_forge(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "3/min", "user": "9/min"}}
    settings.TRUSTED_PROXIES = 1
    cache.clear()
    proxy = "198.51.100.250"
    # One client behind the proxy, inventing a new leftmost entry each time: one bucket.
    forged = _anon_statuses(5, HTTP_X_FORWARDED_FOR=lambda i: f"6.6.6.{i}, 203.0.113.5", REMOTE_ADDR=proxy)
    assert forged == [401, 401, 401, 429, 429]
    # Another client behind the same proxy has its own bucket.
    assert _anon_statuses(1, HTTP_X_FORWARDED_FOR="203.0.113.6", REMOTE_ADDR=proxy) == [401]


def _login(username: str, password: str, **meta):
    return Client().post(reverse("login"), {"username": username, "password": password}, **meta)


@pytest.mark.django_db
def test_a_forged_forwarded_for_does_not_escape_the_login_limit(alice, settings):
    settings.TRUSTED_PROXIES = 0
    for i in range(5):
        _login("alice", "wrong", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    assert _login("alice", PASSWORD, REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="203.0.113.99").status_code == 429


@pytest.mark.django_db
def test_login_limit_behind_a_trusted_proxy_counts_the_real_client(alice, settings):
    settings.TRUSTED_PROXIES = 1
    proxy = "198.51.100.250"
    for i in range(5):
        _login("alice", "wrong", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"6.6.6.{i}, 203.0.113.5")
    assert _login("alice", PASSWORD, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
    # Everyone else behind the same proxy still logs in.
    assert _login("alice", PASSWORD, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.6").status_code == 302


def _settings_in_production(tmp_path, **env) -> list:
    code = (
        "from django.conf import settings as s; import json; "
        "print(json.dumps([getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.TRUSTED_PROXIES]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT, env=_production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", **env),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_https_header_is_trusted_only_behind_trusted_proxies(tmp_path):
    assert _settings_in_production(tmp_path) == [None, 0]
    assert _settings_in_production(tmp_path, TRUSTED_PROXIES="1") == [["HTTP_X_FORWARDED_PROTO", "https"], 1]
    custom = _settings_in_production(tmp_path, TRUSTED_PROXIES="2", SECURE_PROXY_SSL_HEADER="X-Scheme,https")
    assert custom == [["HTTP_X_SCHEME", "https"], 2]

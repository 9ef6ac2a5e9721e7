"""Brute-force login protection (django-axes): 5 failures for one username from one address lock that pair out,
20 from one address across usernames (password spraying) lock the address out, even with the right password;
the portal login and the admin login both count."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-only"  # the conftest make_user default


def _login(client: Client, url: str, username: str, password: str, ip: str = "198.51.100.7"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)


@pytest.mark.parametrize("url_name", ["login", "admin:login"])
def test_sixth_attempt_is_locked_out_even_with_the_right_password(url_name, alice, staff):
    user = staff if url_name == "admin:login" else alice
    url = reverse(url_name)
    client = Client()
    statuses = [_login(client, url, user.username, "wrong-password").status_code for _ in range(5)]
    # The form again four times; the fifth failure reaches the limit and locks the pair out.
    assert statuses == [200, 200, 200, 200, 429]
    response = _login(client, url, user.username, PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert "Too many failed log-ins" in response.content.decode()


def test_four_failures_then_the_right_password_logs_in_and_resets(alice):
    client = Client()
    for _ in range(4):
        _login(client, reverse("login"), "alice", "wrong-password")
    response = _login(client, reverse("login"), "alice", PASSWORD)
    assert response.status_code == 302 and client.session.get("_auth_user_id") == str(alice.pk)
    assert not AccessAttempt.objects.filter(username="alice", failures_since_start__gt=0).exists()


def test_lockout_is_per_username_and_address(alice, bob):
    for _ in range(5):
        _login(Client(), reverse("login"), "alice", "wrong-password", ip="198.51.100.7")
    # Same user from another address, and another user from the locked address, still get in.
    assert _login(Client(), reverse("login"), "alice", PASSWORD, ip="198.51.100.8").status_code == 302
    assert _login(Client(), reverse("login"), "bob", PASSWORD, ip="198.51.100.7").status_code == 302
    assert _login(Client(), reverse("login"), "alice", PASSWORD, ip="198.51.100.7").status_code == 429


def test_lockout_expires_after_the_cooloff(alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    for _ in range(5):
        _login(Client(), reverse("login"), "alice", "wrong-password")
    assert _login(Client(), reverse("login"), "alice", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert _login(Client(), reverse("login"), "alice", PASSWORD).status_code == 302


def test_settings_are_five_failures_per_user_and_address_twenty_per_address_fifteen_minutes(settings):
    from datetime import timedelta

    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_IP_FAILURE_LIMIT == 20
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"], "ip_address"]
    assert settings.AXES_HANDLER == "egressportal.loginlimits.LoginLimitHandler"
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"


def test_password_spraying_from_one_address_is_locked_out(make_user, bob):
    """A few guesses for each of many users (never 5 for one) still lock the address out at 20."""
    victims = [make_user(f"victim{i}") for i in range(10)]
    statuses = [
        _login(Client(), reverse("login"), victim.username, "wrong-password").status_code
        for victim in victims
        for _ in range(2)
    ]
    assert statuses[:19] == [200] * 19 and statuses[19] == 429
    # Now nobody logs in from that address, not even with the right password; elsewhere they do.
    assert _login(Client(), reverse("login"), "bob", PASSWORD).status_code == 429
    assert _login(Client(), reverse("login"), "bob", PASSWORD, ip="198.51.100.8").status_code == 302


def test_logging_in_to_ones_own_account_does_not_clear_the_address(make_user, alice):
    victims = [make_user(f"target{i}") for i in range(5)]
    for victim in victims:
        for _ in range(3):
            _login(Client(), reverse("login"), victim.username, "wrong-password")
    for _ in range(4):
        _login(Client(), reverse("login"), victims[0].username + "x", "wrong-password")
    # 19 failures so far; the attacker logs in to their own account, which clears only their own failures.
    assert _login(Client(), reverse("login"), "alice", PASSWORD).status_code == 302
    assert _login(Client(), reverse("login"), victims[1].username, "wrong-password").status_code == 429

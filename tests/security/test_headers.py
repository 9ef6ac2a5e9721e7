"""Transport and browser hardening: CSP on every page (strict for scripts everywhere), HSTS and secure cookies
with DEBUG off, and `manage.py check --deploy` clean with production settings."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from egressportal.core import services

ROOT = Path(__file__).resolve().parents[2]
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>")


def _policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    assert header, "no Content-Security-Policy header"
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def _assert_strict(response) -> None:
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"], policy["script-src"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"] and policy["form-action"] == ["'self'"]


@pytest.mark.django_db
def test_portal_and_admin_pages_send_a_strict_policy_and_pass_it(alice, staff, infra, make_app):
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    gw = infra["gateways"][0]
    user, admin = Client(), Client()
    user.force_login(alice)
    admin.force_login(staff)
    pages = [
        (Client(), reverse("login")),
        (user, reverse("portal:dashboard")),
        (user, reverse("portal:app_detail", args=[app.pk])),
        (user, reverse("portal:app_events", args=[app.pk])),
        (user, reverse("portal:tokens")),
        (admin, reverse("admin:index")),
        (admin, reverse("admin:tokens_apitoken_changelist")),
        (admin, reverse("admin:core_gateway_changelist")),
        (admin, reverse("admin:core_gateway_change", args=[gw.pk])),
        (admin, reverse("admin:core_event_changelist")),
        (admin, reverse("admin:core_app_change", args=[app.pk])),
    ]
    for client, url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_strict(response)
        assert _policy(response)["style-src"] == ["'self'"], url
        html = response.content.decode()
        # What the policy would block must not be there at all (the page would silently break).
        assert not INLINE_SCRIPT.search(html), url
        assert not re.search(r"\son[a-z]+=", html), url
        assert "<style" not in html, url
        assert not re.search(r"\sstyle=", html), (url, re.search(r".{80}\sstyle=.{80}", html))


@pytest.mark.django_db
def test_api_docs_keep_strict_scripts_and_relax_only_styles(staff):
    client = Client()
    client.force_login(staff)
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    policy = _policy(docs)
    assert policy["script-src"] == ["'self'"]
    assert "'unsafe-inline'" in policy["style-src"]
    assert not INLINE_SCRIPT.search(docs.content.decode())  # the init script is loaded from a URL
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
    redoc = client.get("/api/v1/redoc/")
    assert redoc.status_code == 200 and _policy(redoc)["script-src"] == ["'self'"]
    assert not INLINE_SCRIPT.search(redoc.content.decode())
    # The relaxation stays on those two pages.
    assert _policy(client.get(reverse("portal:dashboard")))["style-src"] == ["'self'"]


@pytest.mark.django_db
def test_security_headers_and_cookie_flags(alice, settings):
    response = Client().get(reverse("login"))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert settings.SESSION_COOKIE_HTTPONLY is True


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DEBUG"))}
    env.update(
        DJANGO_SETTINGS_MODULE="egressportal.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="egress.example.com",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = _production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_production_settings_turn_on_https_hardening(tmp_path):
    code = (
        "from django.conf import settings as s; import json; print(json.dumps([s.SECURE_SSL_REDIRECT, "
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SESSION_COOKIE_HTTPONLY, s.DEBUG]))"
    )
    env = _production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    redirect, session_secure, csrf_secure, hsts, subdomains, httponly, debug = json.loads(result.stdout.strip().splitlines()[-1])
    assert redirect and session_secure and csrf_secure and subdomains and httponly and not debug
    assert hsts >= 31536000


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = _production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    env.pop("SECRET_KEY")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr

"""Request ids, /healthz, /readyz and /metrics access, through the real middleware stack."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from egressportal.core import services
from egressportal.core.models import App, Gateway, HealthStatus
from egressportal.ops.middleware import request_id_from

from .helpers import has, value


def test_request_id_is_echoed_when_sane(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="edge-7f3a.01")
    assert response["X-Request-ID"] == "edge-7f3a.01"


@pytest.mark.parametrize("given", ["", "has space", "x" * 200, "evil\r\nSet-Cookie: a=b", "é", "-leading-dash"])
def test_request_id_is_replaced_when_not_sane(given):
    generated = request_id_from(given)
    assert generated != given
    assert uuid.UUID(hex=generated)


def test_request_id_is_generated_per_request(client, db):
    first = client.get("/accounts/login/")["X-Request-ID"]
    second = client.get("/accounts/login/")["X-Request-ID"]
    assert first != second and len(first) == 32


def test_healthz_touches_no_database(client):
    # No db fixture: pytest-django fails any query.
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_probes_answer_any_host_header_and_skip_https_redirect(client, settings, db):
    settings.SECURE_SSL_REDIRECT = True
    # A kubelet calls the pod by its IP over plain HTTP.
    response = client.get("/healthz", HTTP_HOST="198.18.21.3:8000")
    assert response.status_code == 200
    response = client.get("/readyz", HTTP_HOST="198.18.21.3:8000")
    assert response.status_code in (200, 503) and response.json()["status"] in ("ok", "unavailable")


def test_readyz_tells_the_anonymous_the_status_only(client, db, settings, make_user):
    """The broker of the test settings is not running: the details name its address and port."""
    settings.METRICS_TOKEN = "scrape-token-for-tests-0123456789"
    settings.METRICS_PUBLIC = False
    port = settings.CELERY_BROKER_URL.rsplit(":", 1)[1].split("/")[0]
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "unavailable"}
    detailed = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert detailed.status_code == 503 and detailed.json()["failed"] == ["broker"] and port in detailed.content.decode()
    # A tenant's browser session: status only; a staff session: details.
    tenant, staff = Client(), Client()
    tenant.force_login(make_user("tenant"))
    staff.force_login(make_user("ops", staff=True))
    assert tenant.get("/readyz").json() == {"status": "unavailable"}
    assert "checks" in staff.get("/readyz").json()
    # /healthz never had anything to tell.
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.fixture
def scrape_token(settings):
    settings.METRICS_TOKEN = "scrape-token-for-tests-0123456789"
    settings.METRICS_PUBLIC = False
    return settings.METRICS_TOKEN


def test_metrics_refuses_anonymous(client, db, scrape_token):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"egress_" not in response.content


def test_metrics_refuses_a_wrong_token(client, db, scrape_token):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {scrape_token}").status_code == 401


def test_metrics_refuses_non_staff(client, alice, scrape_token):
    client.force_login(alice)
    assert client.get("/metrics").status_code == 403


def test_metrics_for_staff(client, staff, scrape_token):
    client.force_login(staff)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")


def test_metrics_with_bearer_token_from_any_host(client, db, scrape_token):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {scrape_token}", HTTP_HOST="198.18.20.9:8000")
    assert response.status_code == 200


def test_metrics_without_a_configured_token_ignores_empty_bearer(client, db, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_public_when_configured(client, db, settings):
    settings.METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 200


def test_database_gauges(client, staff, infra, alice, make_app):
    gw = infra["gateways"][0]
    Gateway.objects.filter(pk=gw.pk).update(health=HealthStatus.UNHEALTHY)
    app = make_app(alice)
    services.egress_enable(app=app)
    client.force_login(staff)
    text = client.get("/metrics").content.decode()
    labels = {"pool": "pool-a", "region": "test-1"}
    assert value(text, "egress_pool_size_addresses", **labels) == 14
    assert value(text, "egress_pool_used_addresses", **labels) == 2
    assert value(text, "egress_pool_free_addresses", **labels) == 12
    assert value(text, "egress_pool_utilization_ratio", **labels) == pytest.approx(2 / 14)
    assert value(text, "egress_apps", status="assigning") == App.objects.filter(egress_status="assigning").count() == 1
    assert has(text, "egress_apps", status="failed")
    assert value(text, "egress_apps_stuck", status="assigning") == 0
    assert value(text, "egress_host_health", kind="gateway", host=gw.name, state="unhealthy") == 1
    assert value(text, "egress_host_health", kind="gateway", host=gw.name, state="healthy") == 0
    assert value(text, "egress_metrics_source_up", source="database") == 1
    # Worker-side families are always described, with or without observations.
    assert "# TYPE egress_toggle_to_assigned_seconds histogram" in text or value(
        text, "egress_metrics_source_up", source="worker_metrics"
    ) == 0


def test_stuck_apps_are_counted(client, staff, infra, alice, make_app):
    import datetime as dt

    from django.utils import timezone

    app = make_app(alice)
    services.egress_enable(app=app)
    App.objects.filter(pk=app.pk).update(egress_requested_at=timezone.now() - dt.timedelta(minutes=6))
    client.force_login(staff)
    text = client.get("/metrics").content.decode()
    assert value(text, "egress_apps_stuck", status="assigning") == 1

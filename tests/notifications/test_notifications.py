"""Notifications: signing (pure), where a webhook may go, deliveries to a real
HTTP receiver on loopback (success, retryable failures, redirects never
followed), which status changes notify, email through Django's backend, and
the settings pages. No worker here (tests/portal/test_lab_walk.py has the
real worker and Chromium); the service each task calls is called directly."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from egressportal.core import services as core_services
from egressportal.core.models import App, Event
from egressportal.notifications import services, signing, transport
from egressportal.notifications.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

from .receiver import Receiver

ALL = ["egress.assigned", "egress.degraded", "egress.failed"]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def loopback_allowed(settings):
    settings.EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK = True
    settings.EGRESS_WEBHOOK_TIMEOUT = 1.0
    return settings


class TestSigning:
    def test_the_signature_is_hmac_sha256_over_timestamp_dot_body(self):
        import hashlib
        import hmac

        body = b'{"a":1}'
        expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
        assert signing.signature_header("whsec_k", 1_700_000_000, body) == f"t=1700000000,v1={expected}"

    def test_round_trip_replay_and_tampering(self):
        secret = signing.derive_secret("server-key", "salt-1")
        assert secret.startswith("whsec_") and secret != signing.derive_secret("server-key", "salt-2")
        body = b'{"event":"egress.assigned"}'
        header = signing.signature_header(secret, 1_700_000_000, body)
        assert signing.verify(secret, header, body, now=1_700_000_010)
        assert not signing.verify(secret, header, body + b" ", now=1_700_000_010)  # tampered body
        assert not signing.verify(secret, header, body, now=1_700_000_000 + 301)  # replayed later
        assert not signing.verify("whsec_other", header, body, now=1_700_000_010)
        assert not signing.verify(secret, "garbage", body, now=1_700_000_010)


class TestTargets:
    @pytest.mark.parametrize(
        ("url", "loopback", "problem"),
        [
            ("https://hooks.example.com/x", False, None),
            ("http://hooks.example.com/x", False, "must use https"),
            ("http://127.0.0.1:8080/x", False, "must use https"),
            ("http://127.0.0.1:8080/x", True, None),
            ("http://localhost/x", True, None),
            ("http://hooks.example.com/x", True, "must use https"),
            ("ftp://hooks.example.com/x", True, "must use https"),
            ("https://user:pw@hooks.example.com/x", False, "credentials"),
            ("https://198.18.0.7/x", False, "public addresses only"),
            ("https://169.254.169.254/latest", False, "public addresses only"),
            ("https://[::1]/x", False, "public addresses only"),
            ("https:///x", False, "host name"),
        ],
    )
    def test_check_target(self, url, loopback, problem):
        if problem is None:
            transport.check_target(url, allow_http_loopback=loopback)
        else:
            with pytest.raises(transport.WebhookTargetError, match=problem):
                transport.check_target(url, allow_http_loopback=loopback)

    def test_a_name_resolving_to_loopback_is_refused_unless_allowed(self):
        target = transport.check_target("https://localhost:9/x", allow_http_loopback=False)
        with pytest.raises(transport.WebhookTargetError, match="not a public address"):
            transport.resolve_target(target, allow_http_loopback=False)
        assert transport.resolve_target(target, allow_http_loopback=True) in ("127.0.0.1", "::1")

    def test_log_form_hides_the_path(self):
        assert transport.url_for_log("https://u:p@hooks.example.com/services/T0/B0/secret?x=1") == "https://hooks.example.com/…"


@pytest.mark.django_db
class TestDelivery:
    def _endpoint(self, alice, url, events=ALL) -> WebhookEndpoint:
        return services.webhook_create(owner=alice, url=url, events=events)

    def test_delivered_signed_and_logged(self, alice, receiver, loopback_allowed):
        endpoint = self._endpoint(alice, receiver.url)
        delivery = services.webhook_send_test(endpoint=endpoint)
        outcome = services.webhook_attempt(delivery_id=delivery.pk)
        assert outcome.delivered and not outcome.retry
        [got] = receiver.wait(1)
        assert got.path == "/hook?team=egress"
        assert got.headers["Content-Type"] == "application/json" and got.headers["X-Egress-Event"] == "test"
        secret = services.webhook_secret(endpoint)
        assert signing.verify(secret, got.headers["X-Egress-Signature"], got.body, now=int(time.time()))
        assert json.loads(got.body)["event"] == "test"
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.last_status_code == 200
        assert delivery.last_response == "receiver says 200" and delivery.attempts == 1

    def test_server_errors_are_retried_client_errors_are_not(self, alice, receiver, loopback_allowed):
        endpoint = self._endpoint(alice, receiver.url)
        receiver.status = 503
        delivery = services.webhook_send_test(endpoint=endpoint)
        outcome = services.webhook_attempt(delivery_id=delivery.pk, retry_in=4)
        assert outcome.retry and not outcome.delivered
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.RETRYING and delivery.next_attempt_at is not None
        assert delivery.last_error == "HTTP 503 Service Unavailable"
        receiver.status = 200
        assert services.webhook_attempt(delivery_id=delivery.pk).delivered
        delivery.refresh_from_db()
        assert delivery.attempts == 2 and delivery.status == DeliveryStatus.SUCCEEDED
        receiver.status = 404
        other = services.webhook_send_test(endpoint=endpoint)
        assert services.webhook_attempt(delivery_id=other.pk) == services.AttemptOutcome(delivered=False, retry=False)
        other.refresh_from_db()
        assert other.status == DeliveryStatus.FAILED

    def test_redirects_are_never_followed(self, alice, receiver, loopback_allowed):
        endpoint = self._endpoint(alice, receiver.url)
        receiver.status, receiver.location = 302, receiver.url.replace("/hook", "/elsewhere")
        delivery = services.webhook_send_test(endpoint=endpoint)
        outcome = services.webhook_attempt(delivery_id=delivery.pk)
        assert not outcome.delivered and not outcome.retry
        time.sleep(0.3)
        assert [r.path for r in receiver.requests] == ["/hook?team=egress"]  # never went to /elsewhere
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.FAILED and "not followed" in delivery.last_error

    def test_time_limited(self, alice, receiver, loopback_allowed):
        endpoint = self._endpoint(alice, receiver.url)
        receiver.delay = 2.5
        delivery = services.webhook_send_test(endpoint=endpoint)
        started = time.monotonic()
        outcome = services.webhook_attempt(delivery_id=delivery.pk)
        assert time.monotonic() - started < 2.4
        assert outcome.retry
        delivery.refresh_from_db()
        assert "timed out" in delivery.last_error

    def test_loopback_refused_when_not_allowed_at_send_time(self, alice, receiver, loopback_allowed, settings):
        endpoint = self._endpoint(alice, receiver.url)
        settings.EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK = False  # production: never to this machine
        delivery = services.webhook_send_test(endpoint=endpoint)
        assert services.webhook_attempt(delivery_id=delivery.pk) == services.AttemptOutcome(False, False)
        assert receiver.requests == []
        delivery.refresh_from_db()
        assert delivery.last_error.startswith("refused:")

    def test_status_changes_notify_once_per_change(self, alice, bob, infra, make_app, loopback_allowed):
        app = make_app(alice)
        assigned_only = self._endpoint(alice, "https://hooks.example.com/a", ["egress.assigned"])
        everything = self._endpoint(alice, "https://hooks.example.com/b")
        self._endpoint(bob, "https://hooks.example.com/bob")  # another owner's: never told about alice's app
        paused = self._endpoint(alice, "https://hooks.example.com/c")
        services.webhook_update(endpoint=paused, enabled=False)
        n = services.notifications_app_status_changed(app=app, old_status="assigning", new_status="assigned")
        assert n == 2
        assert set(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == {assigned_only.pk, everything.pk}
        assert services.notifications_app_status_changed(app=app, old_status="assigned", new_status="assigned") == 0
        assert services.notifications_app_status_changed(app=app, old_status="assigned", new_status="assigning") == 0
        assert services.notifications_app_status_changed(app=app, old_status="assigned", new_status="degraded") == 1
        payload = WebhookDelivery.objects.get(event="egress.degraded").payload
        assert payload["app"]["name"] == app.name and payload["event"] == "egress.degraded"

    def test_the_domains_status_signal_queues_them(self, alice, infra, make_app):
        from egressportal.core.signals import StatusChange, egress_status_changed

        app = make_app(alice)
        self._endpoint(alice, "https://hooks.example.com/a")
        egress_status_changed.send(sender=App, changes=[StatusChange(app, "assigning", "failed", "gw down")])
        delivery = WebhookDelivery.objects.get()
        assert delivery.event == "egress.failed" and delivery.payload["message"] == "gw down"

    def test_email_through_djangos_backend(self, alice, infra, make_app, settings):
        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
        alice.email = "alice@example.com"
        alice.save()
        app = make_app(alice, "shop")
        core_services.egress_enable(app=app, actor=alice)
        services.email_subscription_set(user=alice, events=["egress.failed"])
        assert services.notification_email_send(user_id=alice.pk, event="egress.failed", app_id=app.pk,
                                                message="Gateway gw-a could not be configured.")
        [email] = mail.outbox
        assert email.to == ["alice@example.com"] and "shop" in email.subject and "Failed" in email.subject
        assert "Gateway gw-a could not be configured." in email.body and "203.0.113." in email.body


@pytest.mark.django_db
class TestSettingsPages:
    def test_add_test_and_isolation(self, alice, bob, settings):
        client = Client()
        client.force_login(alice)
        page = client.get(reverse("notifications:settings"))
        assert page.status_code == 200 and b"Add webhook" in page.content
        bad = client.post(reverse("notifications:settings"), {"form": "webhook", "url": "http://hooks.example.com/x",
                                                                "events": ALL})
        assert bad.status_code == 400 and b"must use https" in bad.content
        assert not WebhookEndpoint.objects.exists()
        added = client.post(reverse("notifications:settings"), {"form": "webhook", "url": "https://hooks.example.com/x",
                                                                  "events": ["egress.failed"]})
        endpoint = WebhookEndpoint.objects.get()
        assert added.status_code == 302 and added["Location"] == reverse("notifications:webhook", args=[endpoint.pk])
        detail = client.get(added["Location"]).content.decode()
        assert services.webhook_secret(endpoint) in detail
        client.post(reverse("notifications:webhook_action", args=[endpoint.pk, "test"]))
        assert WebhookDelivery.objects.filter(endpoint=endpoint, event="test").count() == 1
        assert 'data-testid="delivery-row" data-status="pending" data-event="test"' in client.get(
            added["Location"]).content.decode()
        old = services.webhook_secret(endpoint)
        client.post(reverse("notifications:webhook_action", args=[endpoint.pk, "rotate"]))
        endpoint.refresh_from_db()
        assert services.webhook_secret(endpoint) != old
        # Another user's webhook does not exist for bob.
        other = Client()
        other.force_login(bob)
        assert other.get(reverse("notifications:webhook", args=[endpoint.pk])).status_code == 404
        assert other.post(reverse("notifications:webhook_action", args=[endpoint.pk, "delete"])).status_code == 404
        assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
        # The audit log never holds the path (often a credential).
        assert not Event.objects.filter(message__contains="/x").exists()
        assert re.search(r"hooks\.example\.com/…", Event.objects.get(kind="webhook.created").message)

    def test_email_settings(self, alice):
        client = Client()
        client.force_login(alice)
        page = client.get(reverse("notifications:settings")).content.decode()
        assert "has no email address" in page
        client.post(reverse("notifications:settings"), {"form": "email", "events": ["egress.failed", "egress.degraded"]})
        assert alice.email_subscription.events == ["egress.degraded", "egress.failed"]


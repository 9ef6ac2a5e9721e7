"""What a tenant sees about a failure is about their app, in their words: no management addresses or ports,
no raw nft/ip output (which can quote other tenants' rules); staff keep the full detail on the host, in its
events and in the logs."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from egressportal.core import services
from egressportal.core.models import App, Event, Gateway
from egressportal.core.services.hostsync import host_key_mismatch_record, host_reconcile_failed
from egressportal.core.tenant_messages import reconcile_failure_message
from tests.conftest import api_token_for

pytestmark = pytest.mark.django_db

# What a real failure says: the management address and port, and nft echoing a rule of another app.
REASON = (
    "198.18.250.7:2207 unreachable: [Errno 111] Connection refused; nft: Error: Could not process rule: "
    "ip saddr 198.18.99.0/24 snat ip to 203.0.113.77 comment \"app-4711 of carol\""
)
SECRETS = ("198.18.250.7", "2207", "Errno", "nft:", "Could not process", "snat", "203.0.113.77", "carol", "app-4711")


@pytest.mark.parametrize(
    "error_kind, words",
    [("unreachable", "cannot be reached"), ("timeout", "did not answer in time"), ("command_failed", "could not take"),
     (None, "could not take")],
)
def test_the_words_depend_only_on_the_kind_of_error(error_kind, words):
    message = reconcile_failure_message(host_kind="gateway", host_name="gw-a", error_kind=error_kind)
    assert message.startswith("Gateway gw-a ") and words in message
    assert "could not be configured" in message and "Retrying" in message


def _tenant_views(alice, app) -> str:
    """Everything the owner can read about the app: status and timeline in the API and the portal."""
    api = Client(HTTP_AUTHORIZATION=f"Token {api_token_for(alice)}")
    texts = [
        api.get(f"/api/v1/apps/{app.pk}/").content.decode(),
        api.get(f"/api/v1/apps/{app.pk}/egress/").content.decode(),
        api.get(f"/api/v1/apps/{app.pk}/events/").content.decode(),
    ]
    portal = Client()
    portal.force_login(alice)
    texts += [
        portal.get(f"/apps/{app.pk}/").content.decode(),
        portal.get(f"/apps/{app.pk}/events/").content.decode(),
        portal.get("/").content.decode(),
    ]
    return "\n".join(texts)


def test_a_failed_reconcile_tells_the_owner_about_their_app_and_staff_everything(alice, staff, make_app, infra, caplog):
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    gateway = infra["gateways"][0]
    with caplog.at_level(logging.WARNING):
        host_reconcile_failed(host=gateway, reason=REASON, app_ids={app.pk}, duration=0.1, ssh_error_kind="unreachable")
    app.refresh_from_db()
    assert app.egress_status == "failed"
    assert app.egress_message == reconcile_failure_message(host_kind="gateway", host_name=gateway.name,
                                                           error_kind="unreachable")
    seen = _tenant_views(alice, app)
    assert gateway.name in seen and "cannot be reached" in seen
    leaked = [s for s in SECRETS if s in seen]
    assert not leaked, leaked
    # Staff: the host's last error, its event (admin, audit log) and the log line keep every detail.
    assert Gateway.objects.get(pk=gateway.pk).last_reconcile_error == REASON
    host_event = Event.objects.get(kind="gateway.reconcile_failed")
    assert host_event.app_id is None and REASON in host_event.message and host_event.data["error"] == REASON
    assert REASON in caplog.text
    admin = Client()
    admin.force_login(staff)
    assert "198.18.250.7:2207" in admin.get(f"/admin/core/gateway/{gateway.pk}/change/").content.decode()
    app_page = admin.get(f"/admin/core/app/{app.pk}/change/").content.decode()
    assert "Waiting for" in app_page and "198.18.250.7:2207 unreachable" in app_page
    audit = Client(HTTP_AUTHORIZATION=f"Token {api_token_for(staff)}").get("/api/v1/audit/?kind=gateway.").json()
    assert any(REASON in e["message"] for e in audit["results"])


def test_a_degraded_app_is_told_in_the_same_words(alice, make_app, infra):
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    App.objects.filter(pk=app.pk).update(egress_status="assigned")
    gateway = infra["gateways"][1]
    host_reconcile_failed(host=gateway, reason=REASON, app_ids={app.pk}, duration=0.1, ssh_error_kind="command_failed")
    app.refresh_from_db()
    assert app.egress_status == "degraded"
    leaked = [s for s in SECRETS if s in _tenant_views(alice, app)]
    assert not leaked, leaked


def test_a_host_key_mismatch_tells_the_owner_nothing_about_keys(alice, make_app, infra):
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    gateway = infra["gateways"][0]
    host_key_mismatch_record(host=gateway, app_ids={app.pk}, presented_key="ssh-ed25519 AAAAC3Nza-presented",
                             expected_fingerprint="SHA256:expectedfp", presented_fingerprint="SHA256:presentedfp")
    seen = _tenant_views(alice, app)
    assert "failed a security check" in seen
    assert not [s for s in ("SHA256", "expectedfp", "presentedfp", "AAAAC3Nza") if s in seen]

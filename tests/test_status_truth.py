"""What the workers' bookkeeping tells an owner when hosts fail or change: "failed" only when the app's
traffic cannot use dedicated egress, the time of the next attempt, and one "live" event per change into
"assigned". The worker's report functions are called directly on database states (no SSH here)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from egressportal.core import selectors, services
from egressportal.core.models import App, EgressIP, EgressStatus, Event, Gateway, HostSync
from egressportal.core.services.hostsync import app_settle, host_reconcile_failed
from egressportal.core.services.reconcile import reconcile_mark_queued

pytestmark = pytest.mark.django_db


def _settle(app: App) -> App:
    EgressIP.objects.filter(app=app).update(programmed=True)
    HostSync.objects.filter(app=app).delete()
    app_settle(app_id=app.pk)
    app.refresh_from_db()
    return app


def _fail(gateway: Gateway, app: App, reason: str = "connection refused") -> App:
    host_reconcile_failed(host=Gateway.objects.get(pk=gateway.pk), reason=reason, app_ids={app.pk}, duration=0.2,
                          ssh_error_kind="connect")
    app.refresh_from_db()
    return app


def test_first_enable_that_cannot_reach_a_gateway_is_failed_and_retrying(alice, infra, make_app):
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    gw = EgressIP.objects.get(app=app, role="standby").gateway
    app = _fail(gw, app)
    assert app.egress_status == EgressStatus.FAILED  # nothing steers to a dedicated address yet
    assert "Retrying automatically" in app.egress_message
    assert Event.objects.filter(app=app, kind="egress.failed").count() == 1


def test_an_app_whose_traffic_uses_dedicated_egress_is_degraded_not_failed(alice, infra, make_app):
    app = _settle(_enable(alice, make_app))
    standby = EgressIP.objects.get(app=app, role="standby")
    # A change in flight (nodes already steer; a gateway owes the app a reconcile) fails on that gateway.
    services.app_hosts_mark_pending(app, gateways=[standby.gateway_id])
    App.objects.filter(pk=app.pk).update(egress_status=EgressStatus.ASSIGNING)
    app.refresh_from_db()
    app = _fail(standby.gateway, app)
    assert app.egress_status == EgressStatus.DEGRADED
    assert Event.objects.filter(app=app, kind="egress.degraded").count() == 1
    # And from "assigned" too, with an event the owner sees (there was none).
    App.objects.filter(pk=app.pk).update(egress_status=EgressStatus.ASSIGNED, egress_message="")
    app.refresh_from_db()
    app = _fail(standby.gateway, app, reason="nft: syntax error")
    assert app.egress_status == EgressStatus.DEGRADED
    assert Event.objects.filter(app=app, kind="egress.degraded").count() == 2


def test_the_next_attempt_is_shown_and_cleared(alice, infra, make_app):
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    gw = EgressIP.objects.get(app=app, role="active").gateway
    reconcile_mark_queued(kind="gateway", pk=gw.pk, retry_in=8)
    at = selectors.app_next_attempt_at(app)
    assert at is not None and 0 < (at - timezone.now()).total_seconds() <= 8
    client = Client()
    client.force_login(alice)
    before = timezone.now()
    html = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
    # The page says what was left of the 8 s when it was rendered (however slow the machine is).
    left = [(at - t).total_seconds() for t in (timezone.now(), before)]
    said = re.search(r"Next attempt (in about ([\d.]+) seconds|in a moment)", html)
    assert said, html
    if said.group(2) is None:
        assert left[0] < 2, (said.group(0), left)
    else:
        assert left[0] - 0.5 <= float(said.group(2)) <= left[1] + 0.5, (said.group(0), left)
    Gateway.objects.filter(pk=gw.pk).update(reconcile_retry_at=None)
    assert selectors.app_next_attempt_at(app) is None


def test_one_live_event_per_change_into_assigned(alice, infra, make_app):
    app = _settle(_enable(alice, make_app))
    assert Event.objects.filter(app=app, kind="egress.assigned").count() == 1
    # The standby withdrawn by a drain: still assigned, new words, no second "live" event.
    standby = EgressIP.objects.get(app=app, role="standby")
    EgressIP.objects.filter(pk=standby.pk).update(status="quarantined", released_at=timezone.now(), last_app=app,
                                                   last_owner=alice, app=None, gateway=None, role="", programmed=False)
    app_settle(app_id=app.pk)
    app.refresh_from_db()
    assert app.egress_status == EgressStatus.ASSIGNED and "reduced" in app.egress_message.lower()
    assert Event.objects.filter(app=app, kind="egress.assigned").count() == 1


def _enable(alice, make_app) -> App:
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    return app


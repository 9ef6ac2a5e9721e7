"""The worker's status writes announce a change of status (notifications listen), and only a change."""

from __future__ import annotations

import pytest
from django.utils import timezone

from egressportal.core.models import App
from egressportal.core.services.hostsync import app_status_set
from egressportal.core.signals import egress_status_changed

pytestmark = pytest.mark.django_db


def test_a_status_change_is_announced_once_and_a_new_message_alone_is_not(make_app, alice):
    app = make_app(alice)
    App.objects.filter(pk=app.pk).update(egress_type="dedicated", egress_status="assigning")
    app.refresh_from_db()
    heard: list[tuple[str, str, str]] = []

    def listen(sender, *, changes, **_):
        heard.extend((c.old_status, c.new_status, c.message) for c in changes)

    egress_status_changed.connect(listen, dispatch_uid="test-status-signal")
    try:
        app_status_set(app, "failed", "gw1 could not be configured", timezone.now())
        app_status_set(app, "failed", "gw1 could not be configured (again)", timezone.now())
        app_status_set(app, "assigned", "", timezone.now())
    finally:
        egress_status_changed.disconnect(dispatch_uid="test-status-signal")
    assert heard == [("assigning", "failed", "gw1 could not be configured"), ("failed", "assigned", "")]

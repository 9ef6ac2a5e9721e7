"""Text that reaches the portal from outside the template (event messages, worker errors, host names in messages)
is escaped; the CSP (test_headers.py) is the second line if escaping ever slips."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from egressportal.core.models import App
from egressportal.core.services.events import event_record

pytestmark = pytest.mark.django_db

PAYLOAD = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_hostile_event_and_status_text_is_escaped_in_the_portal(alice, make_app):
    app = make_app(alice)
    event_record(kind="egress.failed", message=f"gateway said {PAYLOAD}", app=app, data={"error": PAYLOAD})
    App.objects.filter(pk=app.pk).update(egress_status="failed", egress_message=PAYLOAD)
    client = Client()
    client.force_login(alice)
    for url in (reverse("portal:app_detail", args=[app.pk]), reverse("portal:app_events", args=[app.pk])):
        html = client.get(url).content.decode()
        assert "&lt;img src=x onerror=" in html or "&lt;script&gt;alert(2)" in html, url
        assert "<img src=x" not in html and "<script>alert(2)" not in html, url


def test_hostile_text_is_escaped_in_the_admin(staff, alice, make_app):
    app = make_app(alice)
    event_record(kind="egress.failed", message=PAYLOAD, app=app)
    client = Client()
    client.force_login(staff)
    html = client.get(reverse("admin:core_event_changelist")).content.decode()
    assert "<img src=x" not in html and "<script>alert(2)" not in html

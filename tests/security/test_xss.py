"""Text that reaches the portal from outside the template (event messages, worker errors, host names in messages)
is escaped; the CSP (test_headers.py) is the second line if escaping ever slips."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from egressportal.core.models import App
from egressportal.core.services.events import event_record

pytestmark = pytest.mark.django_db

PAYLOAD = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
ESCAPED = escape(PAYLOAD)  # &lt;img src=x onerror=&quot;alert(1)&quot;&gt;&lt;script&gt;...


def _page(client: Client, url: str) -> str:
    """The page as a user sees it: it must be served (a 403 or a redirect to the login page shows nothing,
    so it would prove nothing about escaping)."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def _assert_shown_escaped(html: str, url: str) -> None:
    assert ESCAPED in html, f"{url}: the hostile text is not shown (escaped) at all"
    assert "<img src=x" not in html and "<script>alert(2)" not in html, url


def test_hostile_event_and_status_text_is_escaped_in_the_portal(alice, make_app):
    app = make_app(alice)
    event_record(kind="egress.failed", message=f"gateway said {PAYLOAD}", app=app, data={"error": PAYLOAD})
    App.objects.filter(pk=app.pk).update(egress_status="failed", egress_message=PAYLOAD)
    client = Client()
    client.force_login(alice)
    for url in (reverse("portal:app_detail", args=[app.pk]), reverse("portal:app_events", args=[app.pk])):
        _assert_shown_escaped(_page(client, url), url)


def test_hostile_text_is_escaped_in_the_admin(staff, alice, make_app):
    app = make_app(alice)
    event = event_record(kind="egress.failed", message=PAYLOAD, app=app)
    App.objects.filter(pk=app.pk).update(egress_status="failed", egress_message=PAYLOAD)
    client = Client()
    client.force_login(staff)
    for url in (
        reverse("admin:core_event_changelist"),
        reverse("admin:core_event_change", args=[event.pk]),
        reverse("admin:core_app_change", args=[app.pk]),
    ):
        _assert_shown_escaped(_page(client, url), url)

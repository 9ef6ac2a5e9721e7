"""The admin site: every page renders for staff; nobody else gets in."""

from __future__ import annotations

import pytest
from django.urls import reverse

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Event, Gateway, IPPool, Node, Region

pytestmark = pytest.mark.django_db

MODELS = [Region, IPPool, Gateway, Node, App, EgressIP, Event]


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def populated(infra, alice, make_app):
    app = make_app(alice, "shop")
    services.egress_enable(app=app, actor=alice)
    return {
        Region: infra["region"], IPPool: infra["pool"], Gateway: infra["gateways"][0], Node: infra["nodes"][0],
        App: app, EgressIP: EgressIP.objects.filter(app=app).first(), Event: Event.objects.first(),
    }


def test_every_admin_page_renders_for_staff(client, staff, populated):
    client.force_login(staff)
    assert client.get(reverse("admin:index")).status_code == 200
    for model in MODELS:
        listing = client.get(_url(model, "changelist"))
        assert listing.status_code == 200, model
        detail = client.get(_url(model, "change", populated[model].pk))
        assert detail.status_code == 200, model
    for model in (Region, IPPool, Gateway, Node):
        assert client.get(_url(model, "add")).status_code == 200, model
    # The pool list shows utilization: 2 of 14 addresses used.
    page = client.get(_url(IPPool, "changelist")).content.decode()
    assert "14" in page and "12" in page
    # Search and filters work.
    assert client.get(_url(App, "changelist"), {"q": "shop", "egress_status__exact": "assigning"}).status_code == 200


@pytest.mark.parametrize("who", ["anonymous", "app_owner"])
def test_nobody_but_staff_reaches_the_admin(client, alice, populated, who):
    if who == "app_owner":
        client.force_login(alice)
    for url in [reverse("admin:index"), _url(App, "changelist"), _url(Gateway, "change", populated[Gateway].pk)]:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], (url, response.status_code)


def test_events_are_read_only_in_the_admin(client, staff, populated):
    client.force_login(staff)
    event = populated[Event]
    assert client.get(_url(Event, "add")).status_code == 403
    assert client.post(_url(Event, "delete", event.pk), {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()

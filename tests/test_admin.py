"""The admin site: every page renders for staff; nobody else gets in."""

from __future__ import annotations

import re

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
    # Search and filters work.
    assert client.get(_url(App, "changelist"), {"q": "shop", "egress_status__exact": "assigning"}).status_code == 200


def _pool_row_cells(html: str, pool: IPPool) -> dict[str, str]:
    """The pool's row of the changelist as {column: text}, tags stripped."""
    rows = [row for row in re.findall(r"<tr>(.*?)</tr>", html, re.S) if f"/ippool/{pool.pk}/change/" in row]
    assert len(rows) == 1, html
    cells = re.findall(r'<t[dh] class="field-([\w-]+)[^"]*">(.*?)</t[dh]>', rows[0], re.S)
    return {name: re.sub(r"<[^>]+>", "", text).strip() for name, text in cells}


def test_pool_list_shows_exact_utilization(client, staff, alice, make_app, populated, infra):
    # Figures that differ from one another, so a swapped or miscounted column shows:
    # 14 usable, 4 assigned (shop + extra), 2 quarantined (legacy), 8 free, 6/14 = 43 % used.
    services.egress_enable(app=make_app(alice, "extra"), actor=alice)
    legacy = make_app(alice, "legacy")
    services.egress_enable(app=legacy, actor=alice)
    services.egress_ips_release(app=legacy)
    client.force_login(staff)
    cells = _pool_row_cells(client.get(_url(IPPool, "changelist")).content.decode(), infra["pool"])
    assert cells == {
        "name": "pool-a", "cidr": "203.0.113.0/28", "family": "IPv4", "region": str(infra["region"]), "size": "14",
        "assigned": "4",
        "quarantined": "2", "free": "8", "utilization": "43%",
    }


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

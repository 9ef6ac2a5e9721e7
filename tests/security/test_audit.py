"""The audit log: every change to apps, egress, regions, pools, gateways and nodes carries its actor, time and
before/after; staff can filter it in the API and export the filtered admin change list as CSV and JSON."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.test import Client
from django.urls import reverse

from egressportal.core import services
from egressportal.core.models import Event

pytestmark = pytest.mark.django_db


def _last(kind: str) -> Event:
    return Event.objects.filter(kind=kind).order_by("-id").first()


def _assert_audited(kind: str, actor, *, before: bool = False, after: bool = False) -> Event:
    event = _last(kind)
    assert event is not None, f"no {kind} event"
    assert event.actor_id == actor.pk and event.actor_name == actor.username and event.created_at
    if before:
        assert event.data.get("before"), (kind, event.data)
    if after:
        assert event.data.get("after"), (kind, event.data)
    return event


def test_every_change_is_audited_with_actor_and_before_after(staff, alice):
    region = services.region_create(slug="r-audit", actor=staff)
    _assert_audited("region.created", staff, after=True)
    services.region_update(region=region, name="Renamed", actor=staff)
    _assert_audited("region.updated", staff, before=True, after=True)
    pool = services.pool_create(region=region, name="p-audit", cidr="203.0.113.64/28", actor=staff)
    _assert_audited("pool.created", staff, after=True)
    services.pool_update(pool=pool, excluded=["203.0.113.65"], actor=staff)
    _assert_audited("pool.updated", staff, before=True, after=True)
    from tests.conftest import TEST_HOST_KEY

    gw = services.gateway_create(region=region, name="gw-audit", mgmt_address="198.18.230.1", host_key=TEST_HOST_KEY,
                                 transit_address="198.18.231.1", public_interface="eth0", actor=staff)
    _assert_audited("gateway.created", staff, after=True)
    node = services.node_create(region=region, name="node-audit", mgmt_address="198.18.232.1", host_key=TEST_HOST_KEY,
                                transit_address="198.18.233.1", actor=staff)
    _assert_audited("node.created", staff, after=True)
    services.host_update(host=gw, ssh_port=2222, actor=staff)
    assert _assert_audited("gateway.updated", staff, before=True, after=True).data["after"] == {"ssh_port": 2222}
    services.host_update(host=node, enabled=False, actor=staff)
    _assert_audited("node.updated", staff, before=True, after=True)

    app = services.app_create(owner=alice, region=region, name="audited", actor=alice)
    _assert_audited("app.created", alice, after=True)
    services.app_update(app=app, name="audited-2", actor=alice)
    _assert_audited("app.updated", alice, before=True, after=True)
    services.egress_enable(app=app, actor=alice)
    event = _assert_audited("egress.enable_requested", alice, before=True, after=True)
    assert event.data["before"]["type"] == "shared" and event.data["after"]["type"] == "dedicated"
    services.egress_disable(app=app, actor=alice)
    event = _assert_audited("egress.disable_requested", alice, before=True, after=True)
    assert event.data["before"]["type"] == "dedicated" and event.data["after"]["type"] == "shared"

    app2 = services.app_create(owner=alice, region=region, name="gone", actor=alice)
    services.app_delete(app=app2, actor=alice)
    assert _assert_audited("app.deleted", alice, before=True).data["before"]["name"] == "gone"
    services.host_delete(host=node, actor=staff)
    assert _assert_audited("node.deleted", staff, before=True).data["before"]["name"] == "node-audit"
    pool2 = services.pool_create(region=region, name="p-gone", cidr="203.0.113.96/28", actor=staff)
    services.pool_delete(pool=pool2, actor=staff)
    assert _assert_audited("pool.deleted", staff, before=True).data["before"]["cidr"] == "203.0.113.96/28"
    r2 = services.region_create(slug="r-gone", actor=staff)
    services.region_delete(region=r2, actor=staff)
    assert _assert_audited("region.deleted", staff, before=True).data["before"]["slug"] == "r-gone"


def test_accepting_a_host_key_is_audited_with_both_fingerprints(staff, make_gateway):
    from workers.ssh import fingerprint, parse_host_key

    gw = make_gateway()
    new_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0Q3jCHZ5XyJ2s7kqFhYgbZb4xXQm0rJd0n6r1m2mXr"
    type(gw).objects.filter(pk=gw.pk).update(presented_host_key=new_key)
    gw.refresh_from_db()
    services.host_accept_presented_key(host=gw, actor=staff)
    event = _assert_audited("host.key_accepted", staff, before=True, after=True)
    assert event.data["after"]["fingerprint"] == fingerprint(parse_host_key(new_key))
    assert event.gateway_id == gw.pk


def test_admin_edits_of_hosts_and_regions_go_through_the_services(client, staff, make_gateway):
    gw = make_gateway()
    client.force_login(staff)
    url = reverse("admin:core_gateway_change", args=[gw.pk])
    form = {"mgmt_address": gw.mgmt_address, "ssh_port": 2200, "ssh_user": gw.ssh_user, "host_key": gw.host_key,
            "transit_address": gw.transit_address, "enabled": "on", "public_interface": gw.public_interface}
    assert client.post(url, form).status_code == 302
    event = _assert_audited("gateway.updated", staff, before=True, after=True)
    assert event.data["before"]["ssh_port"] == gw.ssh_port and event.data["after"]["ssh_port"] == 2200
    client.post(reverse("admin:core_region_add"), {"slug": "adm-r", "name": "Adm", "description": ""})
    _assert_audited("region.created", staff, after=True)


# Staff-only API -------------------------------------------------------------------------------------------------


def test_audit_api_is_staff_only(alice_api, anon):
    assert alice_api.get("/api/v1/audit/").status_code == 403
    assert anon.get("/api/v1/audit/").status_code in (401, 403)


def test_audit_api_filters(staff_api, staff, alice, make_app, region):
    app = make_app(alice, "shop")
    other = make_app(alice, "other")
    services.app_update(app=app, name="shop2", actor=alice)
    services.region_update(region=region, name="Changed", actor=staff)

    def ids(**params):
        body = staff_api.get("/api/v1/audit/", params).json()
        return [(e["kind"], e["actor"], e["app"]) for e in body["results"]]

    assert ids(kind="app.updated") == [("app.updated", "alice", app.pk)]
    assert {k for k, _, _ in ids(kind="app.")} == {"app.created", "app.updated"}
    assert {a for _, a, _ in ids(actor="admin")} == {"admin"}
    assert {x for _, _, x in ids(app=other.pk)} == {other.pk}
    first = Event.objects.order_by("created_at").first().created_at
    assert ids(until=first.isoformat()) == []
    assert len(ids(since=first.isoformat())) == Event.objects.count()
    row = staff_api.get("/api/v1/audit/", {"kind": "region.updated"}).json()["results"][0]
    assert row["data"]["before"]["name"] == "Test 1" and row["data"]["after"]["name"] == "Changed"
    assert staff_api.get("/api/v1/audit/", {"since": "yesterday"}).status_code == 400


# Admin export ---------------------------------------------------------------------------------------------------


def test_admin_exports_the_filtered_change_list_as_csv_and_json(staff, alice, make_app):
    app = make_app(alice, "exp")
    services.app_update(app=app, name="exp-renamed", actor=alice)
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("admin:core_event_changelist"), {"kind": "app.updated"}).content.decode()
    assert "export.csv?kind=app.updated" in page and "export.json?kind=app.updated" in page

    response = client.get(reverse("admin:core_event_export_csv"), {"kind": "app.updated"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv") and "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["kind"] for r in rows] == ["app.updated"] and rows[0]["actor"] == "alice"
    assert json.loads(rows[0]["data"])["after"]["name"] == "exp-renamed"

    response = client.get(reverse("admin:core_event_export_json"), {"actor_name": "alice"})
    data = json.loads(b"".join(response.streaming_content))
    assert data and {e["actor"] for e in data} == {"alice"}
    assert len(data) == Event.objects.filter(actor_name="alice").count()


def test_export_is_staff_only(alice):
    client = Client()
    client.force_login(alice)
    response = client.get(reverse("admin:core_event_export_csv"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_csv_export_defuses_spreadsheet_formulas(staff):
    from egressportal.core.services.events import event_record

    event_record(kind="note", message="=HYPERLINK(\"http://evil\")", actor=staff, subject="@sum")
    client = Client()
    client.force_login(staff)
    response = client.get(reverse("admin:core_event_export_csv"), {"kind": "note"})
    row = next(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert row["message"].startswith("'=") and row["subject"] == "'@sum"

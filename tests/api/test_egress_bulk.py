"""POST /apps/egress/: many apps' egress in one request, per-item results (each item as the single-app PUT
would answer it; one app failing leaves the others and itself as they were)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from egressportal.core import services
from egressportal.core.limits import MAX_BULK_EGRESS_ITEMS
from egressportal.core.models import App, EgressIP, Event, HostSync

from .conftest import assert_error

URL = "/api/v1/apps/egress/"


@pytest.fixture(params=["ipv4", "dual-stack"])
def infra(request, infra):
    """Every test of this module runs in an IPv4-only region and again in a dual-stack one (an IPv6 /64
    pool beside the IPv4 /28): the bulk path must answer alike in both."""
    if request.param == "dual-stack":
        infra["pool6"] = services.pool_create(region=infra["region"], name="pool6", cidr="2001:db8:0:2::/64")
    return infra


def _v6(infra) -> bool:
    return "pool6" in infra


def test_per_item_results_in_request_order(alice_api, alice, bob, make_app, infra):
    mine = [make_app(alice, f"a{i}") for i in range(3)]
    theirs = make_app(bob, "b0")
    items = [{"app": a.pk, "type": "dedicated"} for a in mine]
    items.insert(1, {"app": theirs.pk, "type": "dedicated"})  # someone else's: a 404, as for the PUT
    items.append({"app": 999999, "type": "dedicated"})
    response = alice_api.post(URL, {"items": items}, format="json")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["app"] for r in results] == [i["app"] for i in items]
    assert [r["status"] for r in results] == [202, 404, 202, 202, 404]
    for r in results:
        if r["status"] == 202:
            assert r["egress"]["status"] == "assigning" and len(r["egress"]["ips"]) == 2 and r["error"] is None
            assert r["egress"]["ipv6_available"] is _v6(infra)
            assert all((ip["address6"] is not None) is _v6(infra) for ip in r["egress"]["ips"])
        else:
            assert r["egress"] is None and r["error"]["code"] == "not_found"
    assert App.objects.get(pk=theirs.pk).egress_status == "disabled"
    assert not EgressIP.objects.filter(app=theirs).exists()

    # Idempotent: the same request again changes nothing and says 200 for each app; then back to shared.
    again = alice_api.post(URL, {"items": [{"app": a.pk, "type": "dedicated"} for a in mine]}, format="json")
    assert [r["status"] for r in again.json()["results"]] == [200, 200, 200]
    off = alice_api.post(URL, {"items": [{"app": a.pk, "type": "shared"} for a in mine]}, format="json")
    assert [(r["status"], r["egress"]["status"]) for r in off.json()["results"]] == [(202, "releasing")] * 3


def test_an_item_that_cannot_be_done_fails_alone(alice_api, alice, make_app, infra, settings):
    # 14 usable addresses, 2 per app: the eighth app finds the pools exhausted, the others are served.
    apps = [make_app(alice, f"x{i}") for i in range(8)]
    response = alice_api.post(URL, {"items": [{"app": a.pk, "type": "dedicated"} for a in apps]}, format="json")
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202] * 7 + [409]
    assert results[-1]["error"]["code"] == "pool_exhausted" and results[-1]["egress"] is None
    assert App.objects.get(pk=apps[-1].pk).egress_status == "disabled"
    assert not EgressIP.objects.filter(app=apps[-1]).exists()
    assert EgressIP.objects.filter(app__in=apps[:7]).count() == 14


def test_an_invalid_body_changes_nothing(alice_api, alice, make_app, infra):
    app = make_app(alice)
    other = make_app(alice)
    for body, field in (
        ({"items": [{"app": app.pk, "type": "dedicated"}, {"app": app.pk, "type": "shared"}]}, "items"),
        ({"items": [{"app": app.pk, "type": "dedicated"}, {"app": other.pk, "type": "sideways"}]}, "items[1].type"),
        ({"items": []}, "items"),
        ({"items": [{"app": app.pk, "type": "dedicated"}] * (MAX_BULK_EGRESS_ITEMS + 1)}, "items"),
    ):
        error = assert_error(alice_api.post(URL, body, format="json"), 400, "invalid")
        assert any(k.startswith(field.split("[")[0]) for k in error["fields"]), error
    assert not EgressIP.objects.exclude(status="free").exists()
    assert set(App.objects.values_list("egress_status", flat=True)) == {"disabled"}


def test_anonymous_callers_are_refused(api_as, alice, make_app):
    app = make_app(alice)
    response = api_as(None).post(URL, {"items": [{"app": app.pk, "type": "dedicated"}]}, format="json")
    assert response.status_code == 401


def test_the_bulk_endpoint_is_in_the_schema(db):
    schema = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    operation = schema.json()["paths"]["/api/v1/apps/egress/"]["post"]
    assert "Per-item results" in operation["description"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("EgressBulkRequest")


def test_the_enables_of_a_request_are_what_one_put_each_would_do(alice_api, alice, bob, make_app, infra, settings):
    """Same addresses, gateways, roles, host syncs, events and queued reconciles as PUTs one by one; the
    quota and taking back one's own quarantined address hold inside one request too."""
    from egressportal.core import services
    from egressportal.core.models import Event, HostSync

    settings.EGRESS_QUOTA_ADDRESSES = 6
    old = make_app(alice, "old")
    services.egress_enable(app=old, actor=alice)
    kept = set(EgressIP.objects.filter(app=old).values_list("address", flat=True))
    services.egress_disable(app=old, actor=alice)
    services.egress_ips_release(app=old)  # alice's 2 quarantined addresses count against her quota
    again, *fresh = [old] + [make_app(alice, f"n{i}") for i in range(3)]
    theirs = make_app(bob, "b")
    items = [{"app": a.pk, "type": "dedicated"} for a in [again, *fresh, theirs]]
    results = {r["app"]: r for r in alice_api.post(URL, {"items": items}, format="json").json()["results"]}
    # 6 allowed: 2 quarantined (taken back by "old", first in the request) + 2 + 2; the third new app goes over.
    assert [results[a.pk]["status"] for a in fresh] == [202, 202, 409]
    assert results[fresh[2].pk]["error"]["code"] == "quota_exceeded"
    assert results[again.pk]["status"] == 202 and results[theirs.pk]["status"] == 404
    assert {ip["address"] for ip in results[again.pk]["egress"]["ips"]} == kept
    served = EgressIP.objects.filter(app=fresh[0])
    assert sorted(served.values_list("role", flat=True)) == ["active", "standby"]
    assert served.values("gateway").distinct().count() == 2  # one address per gateway
    assert served.filter(address="203.0.113.3").exists()  # the lowest free address after old's two
    for app in (fresh[0], again):
        assert HostSync.objects.filter(app=app, gateway__isnull=False).count() == 2
        assert HostSync.objects.filter(app=app, node__isnull=False).count() == 1  # it runs on node-a
        assert Event.objects.filter(app=app, kind="egress.enable_requested").count() == 2 if app is again else 1
    assert not EgressIP.objects.filter(app=fresh[2]).exists()
    assert App.objects.get(pk=fresh[2].pk).egress_status == "disabled"


def test_the_quota_holds_for_apps_enabled_together(alice_api, alice, make_app, infra, settings):
    settings.EGRESS_QUOTA_ADDRESSES = 4
    apps = [make_app(alice, f"q{i}") for i in range(3)]
    response = alice_api.post(URL, {"items": [{"app": a.pk, "type": "dedicated"} for a in apps]}, format="json")
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 202, 409]
    assert results[2]["error"]["code"] == "quota_exceeded" and "quota is 4" in results[2]["error"]["message"]
    assert [ip["address"] for r in results[:2] for ip in r["egress"]["ips"]] == [
        "203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"
    ]
    if _v6(infra):
        assert [ip["address6"] for r in results[:2] for ip in r["egress"]["ips"]] == [
            "2001:db8:0:2::1", "2001:db8:0:2::2", "2001:db8:0:2::3", "2001:db8:0:2::4"
        ]
    assert EgressIP.objects.filter(status="assigned").count() == 4


def _state(apps) -> dict:
    """What the enables wrote, without ids and times (which differ between two runs)."""
    ids = [a.pk for a in apps]
    return {
        "addresses": sorted(EgressIP.objects.filter(app_id__in=ids).values_list(
            "app_id", "address", "address6", "pool6__name", "gateway__name", "role", "status", "programmed")),
        "syncs": sorted(HostSync.objects.filter(app_id__in=ids).values_list("app_id", "gateway__name", "node__name"),
                        key=str),
        "events": sorted(Event.objects.filter(app_id__in=ids).values_list("app_id", "kind", "level", "message")),
        "apps": sorted(App.objects.filter(pk__in=ids).values_list("pk", "egress_type", "egress_status", "egress_message")),
    }


def _answer(response_or_result) -> tuple:
    egress = response_or_result["egress"]
    if egress is not None:
        egress = {k: v for k, v in egress.items() if k != "updated_at"}
    error = response_or_result["error"]
    return response_or_result["status"], egress, error


def test_a_dual_stack_bulk_enable_is_what_one_put_each_would_do(alice_api, alice, bob, region, make_gateway,
                                                                make_node, make_app):
    """The same request in bulk and as PUTs one by one, from the same state: the same answers (IPv4 and IPv6
    addresses, roles, gateways, errors), rows, sync rows and events. A small IPv6 pool runs out half-way.
    (Taking back one's own quarantined pair is the long way, egress_enable itself: tested above.)"""
    make_gateway("gw-a"), make_gateway("gw-b")
    make_node("node-a", pod_cidrs=["198.18.128.0/18", "2001:db8:10:1::/64"])
    services.pool_create(region=region, name="pool-a", cidr="203.0.113.0/28")
    services.pool_create(region=region, name="tiny6", cidr="2001:db8:0:2::/125")  # 7 usable IPv6 addresses
    services.egress_enable(app=make_app(bob, "theirs"), actor=bob)  # ::1 and ::2: 5 left
    apps = [make_app(alice, f"n{i}") for i in range(5)]
    items = [{"app": a.pk, "type": "dedicated"} for a in apps]

    class Undo(Exception):
        pass

    try:
        with transaction.atomic():
            bulk = alice_api.post(URL, {"items": items}, format="json").json()["results"]
            bulk_state = _state(apps)
            raise Undo
    except Undo:
        pass
    singles = [alice_api.put(f"/api/v1/apps/{a.pk}/egress/", {"type": "dedicated"}, format="json") for a in apps]
    single_answers = []
    for response in singles:
        body = response.json()
        single_answers.append(_answer({"status": response.status_code, "egress": None if "error" in body else body,
                                       "error": body.get("error")}))
    assert [_answer(r) for r in bulk] == single_answers
    assert [a[0] for a in single_answers] == [202, 202, 409, 409, 409]
    assert single_answers[2][2]["code"] == "pool_exhausted" and "IPv6" in single_answers[2][2]["message"]
    assert [ip["address6"] for a in single_answers[:2] for ip in a[1]["ips"]] == [
        "2001:db8:0:2::3", "2001:db8:0:2::4", "2001:db8:0:2::5", "2001:db8:0:2::6"
    ]
    assert _state(apps) == bulk_state


@pytest.mark.parametrize("region_kind", ["ipv4", "dual-stack"])
def test_bulk_enable_queries_do_not_grow_with_the_items(alice_api, alice, region, make_gateway, make_node, make_app,
                                                         region_kind, settings):
    settings.EGRESS_QUOTA_APPS = settings.EGRESS_QUOTA_ADDRESSES = 1000
    make_gateway("gw-a"), make_gateway("gw-b")
    make_node("node-a", pod_cidrs=["198.18.128.0/18"])
    services.pool_create(region=region, name="pool-a", cidr="203.0.113.0/24")
    if region_kind == "dual-stack":
        services.pool_create(region=region, name="pool6", cidr="2001:db8:0:2::/64")
    counts = []
    for n in (3, 30):
        apps = [make_app(alice, f"{region_kind}-{n}-{i}") for i in range(n)]
        with CaptureQueriesContext(connection) as queries:
            response = alice_api.post(URL, {"items": [{"app": a.pk, "type": "dedicated"} for a in apps]}, format="json")
        assert [r["status"] for r in response.json()["results"]] == [202] * n
        assert EgressIP.objects.filter(app__in=apps).exclude(address6=None).count() == (
            2 * n if region_kind == "dual-stack" else 0)
        counts.append(len(queries))
    assert counts[0] == counts[1], counts

"""POST /apps/egress/: many apps' egress in one request, per-item results (each item as the single-app PUT
would answer it; one app failing leaves the others and itself as they were)."""

from __future__ import annotations

from rest_framework.test import APIClient

from egressportal.core.limits import MAX_BULK_EGRESS_ITEMS
from egressportal.core.models import App, EgressIP

from .conftest import assert_error

URL = "/api/v1/apps/egress/"


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
    assert EgressIP.objects.filter(status="assigned").count() == 4

"""PUT /apps/{id}/egress/: idempotent, 202 while work is pending, 409 when it cannot be done."""

from __future__ import annotations

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Event

from .conftest import assert_error


def _egress_url(app: App) -> str:
    return f"/api/v1/apps/{app.pk}/egress/"


def test_get_egress(alice_api, alice, make_app):
    app = make_app(alice)
    response = alice_api.get(_egress_url(app))
    assert response.status_code == 200
    assert response.json() == {
        "type": "shared",
        "status": "disabled",
        "ipv6_available": False,
        "ips": [],
        "message": "",
        "updated_at": response.json()["updated_at"],
    }


def test_enable_is_202_then_200_and_disable_likewise(alice_api, alice, make_app, infra):
    app = make_app(alice)
    first = alice_api.put(_egress_url(app), {"type": "dedicated"})
    assert first.status_code == 202, first.content
    body = first.json()
    assert body["type"] == "dedicated" and body["status"] == "assigning"
    assert len(body["ips"]) == 2
    assert {ip["gateway"] for ip in body["ips"]} == {"gw-a", "gw-b"}
    assert [ip["role"] for ip in body["ips"]] == ["active", "standby"]
    assert all(ip["status"] == "pending" and ip["address"].startswith("203.0.113.") for ip in body["ips"])
    assert set(body) >= {"type", "status", "ips", "message", "updated_at"}

    again = alice_api.put(_egress_url(app), {"type": "dedicated"})
    assert again.status_code == 200
    assert again.json()["ips"] == body["ips"]
    assert EgressIP.objects.filter(app=app).count() == 2
    assert Event.objects.filter(app=app, kind="egress.enable_requested").count() == 1

    # The app's summary shows the same egress object.
    assert alice_api.get(f"/api/v1/apps/{app.pk}/").json()["egress"] == again.json()

    off = alice_api.put(_egress_url(app), {"type": "shared"})
    assert off.status_code == 202 and off.json()["status"] == "releasing"
    assert alice_api.put(_egress_url(app), {"type": "shared"}).status_code == 200


def test_disable_when_never_enabled_is_200(alice_api, alice, make_app):
    app = make_app(alice)
    response = alice_api.put(_egress_url(app), {"type": "shared"})
    assert response.status_code == 200 and response.json()["status"] == "disabled"


def test_bogus_type_is_400(alice_api, alice, make_app, infra):
    app = make_app(alice)
    for payload in ({"type": "bogus"}, {}, {"type": None}, {"type": ["dedicated"]}, {"kind": "dedicated"}):
        error = assert_error(alice_api.put(_egress_url(app), payload), 400, "invalid")
        assert "type" in error["fields"]
    error = assert_error(alice_api.put(_egress_url(app), {"type": "bogus"}), 400)
    assert "dedicated" in error["message"] and "shared" in error["message"]
    assert not EgressIP.objects.exclude(status="free").exists()


def test_pool_exhausted_is_409_and_allocates_nothing(alice_api, alice, bob, make_app, region, make_gateway):
    make_gateway("gw-x"), make_gateway("gw-y")
    services.pool_create(region=region, name="tiny", cidr="203.0.113.8/31")  # two addresses
    first = make_app(bob)
    services.egress_enable(app=first, actor=bob)  # takes both addresses
    app = make_app(alice)
    events_before = Event.objects.filter(app=app).count()
    error = assert_error(alice_api.put(_egress_url(app), {"type": "dedicated"}), 409, "pool_exhausted")
    assert "admin" in error["message"] and "fields" not in error
    assert EgressIP.objects.filter(app=app).count() == 0
    assert EgressIP.objects.exclude(status="free").count() == 2
    app.refresh_from_db()
    assert (app.egress_type, app.egress_status) == ("shared", "disabled")
    assert Event.objects.filter(app=app).count() == events_before


def test_pool_exhausted_half_way_allocates_nothing(alice_api, alice, make_app, region, make_gateway):
    # Two gateways but one address: the first would fit, the second cannot, so neither is taken.
    make_gateway("gw-x"), make_gateway("gw-y")
    services.pool_create(region=region, name="one", cidr="203.0.113.9/32")
    app = make_app(alice)
    assert_error(alice_api.put(_egress_url(app), {"type": "dedicated"}), 409, "pool_exhausted")
    assert not EgressIP.objects.exclude(status="free").exists()


def test_no_gateways_is_409(alice_api, alice, make_app, region):
    services.pool_create(region=region, name="p", cidr="203.0.113.0/28")
    app = make_app(alice)
    error = assert_error(alice_api.put(_egress_url(app), {"type": "dedicated"}), 409, "no_gateways")
    assert region.slug in error["message"]
    assert not EgressIP.objects.exclude(status="free").exists()


def test_app_running_nowhere_yet_can_enable(alice_api, alice, make_app, infra):
    """Its addresses can go into an allow-list before the first deploy."""
    app = make_app(alice, cidrs=[])
    response = alice_api.put(_egress_url(app), {"type": "dedicated"})
    assert response.status_code == 202, response.content
    assert len(response.json()["ips"]) == 2


def test_the_egress_object_says_which_address_carries_the_traffic(alice_api, alice, make_app, infra):
    from egressportal.core.models import Gateway, HostSync
    from egressportal.core.services.hostsync import app_settle

    app = make_app(alice)
    alice_api.put(_egress_url(app), {"type": "dedicated"})
    states = {ip["role"]: ip["state"] for ip in alice_api.get(_egress_url(app)).json()["ips"]}
    assert states == {"active": "pending", "standby": "pending"}
    EgressIP.objects.filter(app=app).update(programmed=True)
    HostSync.objects.filter(app=app).delete()
    app_settle(app_id=app.pk)
    body = alice_api.get(_egress_url(app)).json()
    assert body["status"] == "assigned"
    assert {ip["role"]: ip["state"] for ip in body["ips"]} == {"active": "in_use", "standby": "standby"}
    # The active gateway dies: the nodes steer to the standby, and the API says so.
    active_gw = EgressIP.objects.get(app=app, role="active").gateway
    Gateway.objects.filter(pk=active_gw.pk).update(health="unhealthy")
    App.objects.filter(pk=app.pk).update(egress_status="degraded")
    body = alice_api.get(_egress_url(app)).json()
    assert {ip["role"]: ip["state"] for ip in body["ips"]} == {"active": "gateway_down", "standby": "in_use"}

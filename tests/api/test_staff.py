"""Staff resources: regions, pools (with utilization), gateways and nodes (with health), host keys."""

from __future__ import annotations

import datetime as dt

from django.urls import reverse
from django.utils import timezone

from egressportal.core import services
from egressportal.core.models import EgressIP, Event, Gateway, IPPool, Node, Region
from tests.conftest import TEST_HOST_KEY

from .conftest import assert_error

OTHER_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQWpXyiBUtl4RO6NABrzVdcdAd9JuZ1HTrV5cNxB9U/ other"


# Regions --------------------------------------------------------------------------------------------------------


def test_region_crud(staff_api):
    created = staff_api.post("/api/v1/regions/", {"slug": "ams3", "name": "Amsterdam 3"})
    assert created.status_code == 201, created.content
    assert created.json()["slug"] == "ams3"
    assert staff_api.get("/api/v1/regions/ams3/").json()["name"] == "Amsterdam 3"
    patched = staff_api.patch("/api/v1/regions/ams3/", {"description": "Primary EU region"})
    assert patched.status_code == 200 and patched.json()["description"] == "Primary EU region"
    assert "slug" in assert_error(staff_api.patch("/api/v1/regions/ams3/", {"slug": "ams4"}), 400)["fields"]
    assert "slug" in assert_error(staff_api.post("/api/v1/regions/", {"slug": "ams3"}), 400)["fields"]
    assert "slug" in assert_error(staff_api.post("/api/v1/regions/", {"slug": "not a slug"}), 400)["fields"]
    assert staff_api.delete("/api/v1/regions/ams3/").status_code == 204
    assert not Region.objects.filter(slug="ams3").exists()
    assert Event.objects.filter(kind="region.deleted", actor_name="admin").exists()


def test_region_in_use_cannot_be_deleted(staff_api, infra):
    error = assert_error(staff_api.delete(f"/api/v1/regions/{infra['region'].slug}/"), 409, "conflict")
    assert "pools" in error["message"] and "gateways" in error["message"]


# Pools ----------------------------------------------------------------------------------------------------------


def test_pools_ordered_by_cidr_are_ipv4_first_then_ipv6_each_by_number(staff_api, region):
    """The same order on SQLite and PostgreSQL: an IPv6 pool has no integer bounds (NULL), and NULLs sort
    first on one and last on the other; the text of a CIDR sorts 2001:db8:0:10:: before 2001:db8:0:2::."""
    for n, cidr in enumerate(["2001:db8:0:10::/64", "203.0.113.128/29", "2001:db8:0:2::/64", "203.0.113.16/29",
                              "2001:db8:0:9::/64", "198.51.100.0/29"]):
        services.pool_create(region=region, name=f"p{n}", cidr=cidr)
    ipv4 = ["198.51.100.0/29", "203.0.113.16/29", "203.0.113.128/29"]
    ipv6 = ["2001:db8:0:2::/64", "2001:db8:0:9::/64", "2001:db8:0:10::/64"]

    def cidrs(ordering: str) -> list[str]:
        response = staff_api.get("/api/v1/pools/", {"ordering": ordering})
        assert response.status_code == 200, response.content
        return [p["cidr"] for p in response.json()["results"]]

    assert cidrs("cidr") == ipv4 + ipv6
    assert cidrs("-cidr") == ipv6[::-1] + ipv4[::-1]
    assert cidrs("region,cidr") == ipv4 + ipv6


def test_the_admin_and_the_api_backfill_ipv6_through_the_one_service(infra, make_app, alice, client, staff,
                                                                 staff_api):
    """A new IPv6 pool gives the apps enabled before their IPv6 addresses (services.egress6_backfill)."""
    a, b = (services.egress_enable(app=make_app(alice), actor=alice)[0] for _ in range(2))
    client.force_login(staff)
    form = {"region": infra["region"].pk, "name": "tiny6", "cidr": "2001:db8:0:2::/126",
            "excluded_text": "2001:db8:0:2::3", "description": ""}
    response = client.post(reverse("admin:core_ippool_add"), form, follow=True)
    shown = [(m.level_tag, m.message) for m in response.context["messages"]]
    assert any(tag == "warning" and "stay IPv4-only because the region's IPv6 pools are exhausted" in text
               and b.name in text for tag, text in shown), shown
    # The API's pool creation does the same (a second pool serves the app left out).
    created = staff_api.post("/api/v1/pools/", {"name": "more6", "region": infra["region"].slug,
                                                    "cidr": "2001:db8:0:3::/64"}, format="json")
    assert created.status_code == 201, created.content
    assert sorted(EgressIP.objects.filter(app=b).values_list("address6", flat=True)) == [
        "2001:db8:0:3::1", "2001:db8:0:3::2"
    ]


def test_pool_create_and_utilization(staff_api, alice, make_app, infra):
    response = staff_api.post(
        "/api/v1/pools/",
        {"name": "pool-b", "region": infra["region"].slug, "cidr": "203.0.113.64/29", "excluded": ["203.0.113.65"]},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["cidr"] == "203.0.113.64/29" and body["excluded"] == ["203.0.113.65"]
    assert body["utilization"] == {"size": 5, "assigned": 0, "quarantined": 0, "free": 5, "percent_used": 0.0}

    # Use two addresses of pool-a (a /28: 14 usable) and quarantine one more.
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    pool_a = infra["pool"]
    EgressIP.objects.filter(pool=pool_a, address="203.0.113.14").update(
        status="quarantined", released_at=timezone.now() - dt.timedelta(days=1)
    )
    got = staff_api.get(f"/api/v1/pools/{pool_a.pk}/").json()
    assert got["utilization"] == {"size": 14, "assigned": 2, "quarantined": 1, "free": 11, "percent_used": 21.43}
    listed = {p["name"]: p["utilization"] for p in staff_api.get("/api/v1/pools/").json()["results"]}
    assert listed["pool-a"]["assigned"] == 2 and listed["pool-b"]["free"] == 5
    assert [p["name"] for p in staff_api.get("/api/v1/pools/", {"region": "nope"}).json()["results"]] == []


def test_pool_validation(staff_api, infra):
    slug = infra["region"].slug

    def create(**kw):
        return staff_api.post("/api/v1/pools/", {"name": "p2", "region": slug, **kw})

    overlap = assert_error(create(cidr="203.0.113.8/29"), 400, "invalid")
    assert "cidr" in overlap["fields"] and "overlap" in overlap["message"]
    v6 = assert_error(create(cidr="2001:db8::/48"), 400)
    assert "IPv6 pools can be at most a /64" in v6["fields"]["cidr"][0]
    mapped = assert_error(create(cidr="::ffff:203.0.113.0/120"), 400)
    assert "IPv4-mapped" in mapped["fields"]["cidr"][0]
    host_bits = assert_error(create(cidr="198.51.100.7/24"), 400)
    assert "did you mean 198.51.100.0/24" in host_bits["fields"]["cidr"][0]
    assert "did you mean" in host_bits["message"]
    assert "cidr" in assert_error(create(cidr="198.18.0.0/15"), 400)["fields"]
    assert "cidr" in assert_error(create(cidr="nonsense"), 400)["fields"]
    assert "excluded" in assert_error(create(cidr="198.51.100.0/29", excluded=["198.18.20.1"]), 400)["fields"]
    assert "region" in assert_error(create(cidr="198.51.100.0/29", region="nope"), 400)["fields"]
    assert not IPPool.objects.filter(name="p2").exists()


def test_pool_cidr_is_immutable_and_updates_go_through_services(staff_api, infra):
    pool = infra["pool"]
    url = f"/api/v1/pools/{pool.pk}/"
    error = assert_error(staff_api.patch(url, {"cidr": "203.0.113.0/27"}), 400)
    assert "cidr" in error["fields"] and "cannot change" in error["message"]
    assert staff_api.patch(url, {"cidr": "203.0.113.0/28"}).status_code == 200  # unchanged is fine
    response = staff_api.patch(url, {"excluded": ["203.0.113.1"], "description": "edge"})
    assert response.status_code == 200
    assert response.json()["excluded"] == ["203.0.113.1"] and response.json()["utilization"]["size"] == 13
    assert Event.objects.filter(kind="pool.updated", actor_name="admin").exists()


def test_pool_delete_only_when_empty(staff_api, alice, make_app, infra):
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    pool = infra["pool"]
    error = assert_error(staff_api.delete(f"/api/v1/pools/{pool.pk}/"), 409, "conflict")
    assert pool.name in error["message"]
    assert IPPool.objects.filter(pk=pool.pk).exists()
    empty = services.pool_create(region=infra["region"], name="empty", cidr="198.51.100.0/29")
    assert staff_api.delete(f"/api/v1/pools/{empty.pk}/").status_code == 204


# Gateways and nodes ---------------------------------------------------------------------------------------------


def _gateway_payload(region, **kw):
    return {
        "name": "gw-new",
        "region": region.slug,
        "mgmt_address": "198.18.240.1",
        "ssh_port": 22,
        "host_key": TEST_HOST_KEY + " root@gw-new",
        "transit_address": "198.18.241.1",
        "public_interface": "eth1",
        **kw,
    }


def test_gateway_create_and_read_only_fields(staff_api, region, make_gateway):
    make_gateway("gw-old")
    response = staff_api.post("/api/v1/gateways/", _gateway_payload(region, slot=77, health="healthy"))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slot"] == 2  # chosen automatically, not by the caller
    assert body["health"] == "unknown"  # written by the workers only
    assert body["host_key"] == TEST_HOST_KEY  # normalised, comment dropped
    for field in ("health_message", "health_checked_at", "last_seen_at", "host_key_mismatch_at",
                  "last_reconciled_at", "last_reconcile_error"):
        assert field in body
    assert Event.objects.filter(kind="gateway.created", actor_name="admin").exists()


def test_gateway_validation(staff_api, region):
    cases = {
        "host_key": ["ssh-ed25519 not-base64!!", "ssh-dss AAAA", "", "ssh-ed25519 AAAA\nssh-rsa AAAA"],
        "public_interface": ["eth0; reboot", "a-very-long-interface-name", "$(id)", ""],
        "mgmt_address": ["2001:db8::1", "999.1.1.1", "host.example"],
        "ssh_port": [0, 70000, 10**40, "x"],
        "ssh_user": ["Root", "root; id"],
    }
    for field, values in cases.items():
        for value in values:
            error = assert_error(staff_api.post("/api/v1/gateways/", _gateway_payload(region, **{field: value})), 400)
            assert field in error["fields"], (field, value, error)
    missing = {k: v for k, v in _gateway_payload(region).items() if k != "host_key"}
    assert "host_key" in assert_error(staff_api.post("/api/v1/gateways/", missing), 400)["fields"]
    assert not Gateway.objects.exists()


def test_gateway_update_and_delete(staff_api, alice, make_app, infra):
    gw = infra["gateways"][0]
    url = f"/api/v1/gateways/{gw.pk}/"
    response = staff_api.patch(url, {"draining": True, "public_interface": "eth9"})
    assert response.status_code == 200, response.content
    assert response.json()["draining"] is True and response.json()["public_interface"] == "eth9"
    assert "name" in assert_error(staff_api.patch(url, {"name": "renamed"}), 400)["fields"]
    assert "public_interface" in assert_error(staff_api.patch(url, {"public_interface": "x;y"}), 400)["fields"]
    staff_api.patch(url, {"draining": False})
    app = make_app(alice)
    services.egress_enable(app=app, actor=alice)
    error = assert_error(staff_api.delete(url), 409, "conflict")
    assert "drain" in error["message"]
    spare = services.gateway_create(
        region=infra["region"], name="spare", mgmt_address="198.18.240.9", host_key=TEST_HOST_KEY,
        transit_address="198.18.241.9", public_interface="eth0",
    )
    assert staff_api.delete(f"/api/v1/gateways/{spare.pk}/").status_code == 204
    assert not Gateway.objects.filter(pk=spare.pk).exists()


def test_accept_host_key_flow(staff_api, infra):
    gw = infra["gateways"][0]
    url = f"/api/v1/gateways/{gw.pk}/accept-host-key/"
    error = assert_error(staff_api.post(url), 400)
    assert "not presented" in error["message"]
    # The worker saw a different key.
    Gateway.objects.filter(pk=gw.pk).update(host_key_mismatch_at=timezone.now(), presented_host_key=OTHER_HOST_KEY)
    shown = staff_api.get(f"/api/v1/gateways/{gw.pk}/").json()
    assert shown["host_key_mismatch_at"] is not None and shown["presented_host_key"] == OTHER_HOST_KEY
    response = staff_api.post(url)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["host_key"] == " ".join(OTHER_HOST_KEY.split()[:2])
    assert body["host_key_mismatch_at"] is None and body["presented_host_key"] == ""
    assert Event.objects.filter(kind="gateway.updated", actor_name="admin", gateway=gw).exists()


def test_node_crud(staff_api, region, make_gateway):
    payload = {
        "name": "node-new",
        "region": region.slug,
        "mgmt_address": "198.18.242.1",
        "host_key": TEST_HOST_KEY,
        "transit_address": "198.18.243.1",
        "pod_cidrs": ["198.19.1.0/24", "198.19.0.0/24"],
    }
    response = staff_api.post("/api/v1/nodes/", payload)
    assert response.status_code == 201, response.content
    node = response.json()
    assert node["pod_cidrs"] == ["198.19.0.0/24", "198.19.1.0/24"] and node["health"] == "unknown"
    assert "slot" not in node and "public_interface" not in node
    url = f"/api/v1/nodes/{node['id']}/"
    bad = assert_error(staff_api.patch(url, {"pod_cidrs": ["198.19.0.5/24"]}), 400)
    assert "did you mean" in bad["fields"]["pod_cidrs"][0]
    assert staff_api.patch(url, {"enabled": False}).json()["enabled"] is False
    assert "host_key" in assert_error(staff_api.patch(url, {"host_key": "garbage"}), 400)["fields"]
    dup = assert_error(staff_api.post("/api/v1/nodes/", {**payload, "name": "node-dup"}), 400)
    assert dup["fields"]  # same management endpoint
    assert staff_api.delete(url).status_code == 204
    assert not Node.objects.filter(pk=node["id"]).exists()
    assert Event.objects.filter(kind="node.deleted").exists()

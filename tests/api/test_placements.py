"""Placements over the API: only the platform (and staff) says which addresses on which node are an
app's; every refused report names its entry, never the other tenant, and changes nothing."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from egressportal.core import services
from egressportal.core.models import Event, HostSync, Node, Placement

from .conftest import assert_error

POD1, POD2 = "198.18.64.0/24", "198.18.65.0/24"


@pytest.fixture
def world(region, make_gateway, make_node, make_app, alice, bob):
    gw1, gw2 = make_gateway("gw-a"), make_gateway("gw-b")
    node1 = make_node("node-a", pod_cidrs=[POD1])
    node2 = make_node("node-b", pod_cidrs=[POD2])
    services.pool_create(region=region, name="pool-a", cidr="203.0.113.0/28")
    return {
        "region": region,
        "gateways": [gw1, gw2],
        "node1": node1,
        "node2": node2,
        "a": make_app(alice, "alice-app", cidrs=[]),
        "b": make_app(bob, "bob-secret-app", cidrs=[]),
    }


@pytest.fixture
def platform_api(api_as, platform_user):
    return api_as(platform_user)


def url(node: Node) -> str:
    return f"/api/v1/nodes/{node.pk}/placements/"


def snapshot() -> tuple:
    """Everything a refused report must leave as it was."""
    return (
        sorted(Placement.objects.values_list("node_id", "app_id", "cidr")),
        Event.objects.count(),
        HostSync.objects.count(),
    )


def test_platform_reports_the_complete_set_idempotently(platform_api, world):
    node, a, b = world["node1"], world["a"], world["b"]
    body = {"placements": [{"app": a.pk, "addresses": ["198.18.64.17/32", "198.18.64.32/28"]},
                           {"app": b.pk, "addresses": ["198.18.64.18"]}]}
    response = platform_api.put(url(node), body)
    assert response.status_code == 200, response.content
    stored = {"node": node.pk, "placements": [
        {"app": a.pk, "addresses": ["198.18.64.17/32", "198.18.64.32/28"]},
        {"app": b.pk, "addresses": ["198.18.64.18/32"]},
    ]}
    assert response.json() == stored
    assert platform_api.get(url(node)).json() == stored
    assert Event.objects.filter(kind="app.placement_changed", app=a).count() == 1
    # The same report again changes nothing and records nothing.
    before = snapshot()
    assert platform_api.put(url(node), body).json() == stored
    assert snapshot() == before
    # Complete set: what is absent is removed.
    response = platform_api.put(url(node), {"placements": [{"app": b.pk, "addresses": ["198.18.64.18/32"]}]})
    assert response.json()["placements"] == [{"app": b.pk, "addresses": ["198.18.64.18/32"]}]
    assert not Placement.objects.filter(app=a).exists()
    assert platform_api.put(url(node), {"placements": []}).json() == {"node": node.pk, "placements": []}
    assert not Placement.objects.exists()


def test_the_app_endpoint_shows_placements_read_only(platform_api, alice_api, world):
    node, a = world["node1"], world["a"]
    platform_api.put(url(node), {"placements": [{"app": a.pk, "addresses": ["198.18.64.17/32"]}]})
    events = alice_api.get(f"/api/v1/apps/{a.pk}/events/").json()["results"]
    assert any(e["kind"] == "app.placement_changed" and "198.18.64.17/32" in e["message"] for e in events)


REFUSED = [
    pytest.param(["198.18.65.17/32"], 400, "outside the node's pod CIDRs", id="outside-pod-cidrs"),
    pytest.param(["198.18.100.21/32"], 400, "not inside a pod CIDR", id="host-transit-address"),
    pytest.param(["198.18.64.0/23"], 400, "too wide", id="too-wide"),
    pytest.param(["0.0.0.0/0"], 400, "too wide", id="everything"),
    pytest.param(["not-an-address"], 400, "not a valid", id="malformed"),
    pytest.param(["198.18.64.17/33"], 400, "not a valid", id="bad-prefix"),
    pytest.param(["198.18.64.1/28"], 400, "host bits", id="host-bits"),
    pytest.param(["2001:db8::1/128"], 400, "not inside a pod CIDR", id="ipv6-outside-pods"),
    pytest.param(["::ffff:198.18.64.17"], 400, "IPv4-mapped", id="ipv4-mapped"),
    pytest.param([17], 400, "Enter", id="not-a-string"),
    pytest.param([], 400, "non-empty", id="no-addresses"),
    pytest.param(["198.18.64.16/28", "198.18.64.17/32"], 400, "overlaps", id="overlap-within-entry"),
]


@pytest.mark.parametrize("addresses,status,says", REFUSED)
def test_refused_addresses_name_the_entry_and_change_nothing(platform_api, world, addresses, status, says):
    node, a, b = world["node1"], world["a"], world["b"]
    platform_api.put(url(node), {"placements": [{"app": b.pk, "addresses": ["198.18.64.200/32"]}]})
    before = snapshot()
    body = {"placements": [{"app": b.pk, "addresses": ["198.18.64.200/32"]}, {"app": a.pk, "addresses": addresses}]}
    error = assert_error(platform_api.put(url(node), body), status, "invalid")
    assert any(key.startswith("placements[1].addresses") for key in error["fields"]), error
    if says != "outside the node's pod CIDRs":
        assert says in str(error), error
    assert snapshot() == before


def test_an_address_held_by_another_app_is_refused_without_naming_it(platform_api, world, make_node):
    node1, a, b = world["node1"], world["a"], world["b"]
    # Bob's app runs on a node whose pods share the range (e.g. a node replaced under the same subnet).
    twin = make_node("node-twin", pod_cidrs=[POD1])
    assert platform_api.put(url(twin), {"placements": [{"app": b.pk, "addresses": ["198.18.64.16/28"]}]}).status_code == 200
    before = snapshot()
    for claim in (["198.18.64.17/32"], ["198.18.64.0/24"], ["198.18.64.31"]):
        response = platform_api.put(url(node1), {"placements": [{"app": a.pk, "addresses": claim}]})
        error = assert_error(response, 409, "placement_conflict")
        assert error["message"].startswith("placements[0].addresses[0]"), error
        assert "bob" not in str(response.json()).lower() and f"app {b.pk}" not in error["message"]
        assert snapshot() == before
    # Bob's own app may be placed there on another node too (it is the same app: a move in progress).
    assert platform_api.put(url(node1), {"placements": [{"app": b.pk, "addresses": ["198.18.64.17/32"]}]}).status_code == 200
    # Within one report, two apps cannot share an address either.
    body = {"placements": [{"app": a.pk, "addresses": ["198.18.64.40/32"]}, {"app": b.pk, "addresses": ["198.18.64.32/28"]}]}
    before = snapshot()
    error = assert_error(platform_api.put(url(node1), body), 400, "invalid")
    assert "overlaps" in str(error) and snapshot() == before


def test_other_regions_are_independent(platform_api, world, make_node, make_app, alice, make_gateway):
    other = services.region_create(slug="test-2")
    far_node = make_node("far-node", reg=other, pod_cidrs=[POD1])
    far_app = make_app(alice, "far-app", reg=other, cidrs=[])
    node1, b = world["node1"], world["b"]
    same = ["198.18.64.17/32"]
    assert platform_api.put(url(node1), {"placements": [{"app": b.pk, "addresses": same}]}).status_code == 200
    assert platform_api.put(url(far_node), {"placements": [{"app": far_app.pk, "addresses": same}]}).status_code == 200
    # An app of another region cannot be placed on this node.
    before = snapshot()
    body = {"placements": [{"app": far_app.pk, "addresses": ["198.18.64.9/32"]}]}
    error = assert_error(platform_api.put(url(node1), body), 400)
    assert "placements[0].app" in error["fields"]
    assert snapshot() == before


@pytest.mark.parametrize(
    "body,field",
    [
        ({"placements": "198.18.64.17/32"}, "placements"),
        ({}, "placements"),
        ({"placements": [{"app": "x", "addresses": ["198.18.64.17/32"]}]}, "placements[0].app"),
        ({"placements": [{"app": 999999, "addresses": ["198.18.64.17/32"]}]}, "placements[0].app"),
        ({"placements": [{"addresses": ["198.18.64.17/32"]}]}, "placements[0].app"),
        ({"placements": [{"app": 1, "addresses": ["198.18.64.17/32"], "owner": "bob"}]}, "placements[0].app"),
        ({"placements": ["198.18.64.17/32"]}, "placements[0].app"),
    ],
)
def test_malformed_reports_are_refused(platform_api, world, body, field):
    before = snapshot()
    error = assert_error(platform_api.put(url(world["node1"]), body), 400, "invalid")
    assert field in error["fields"], error
    assert snapshot() == before


def test_an_app_listed_twice_is_refused(platform_api, world):
    a = world["a"]
    body = {"placements": [{"app": a.pk, "addresses": ["198.18.64.17/32"]}, {"app": a.pk, "addresses": ["198.18.64.18/32"]}]}
    before = snapshot()
    error = assert_error(platform_api.put(url(world["node1"]), body), 400)
    assert "placements[1].app" in error["fields"] and snapshot() == before


def test_too_many_addresses_are_refused(platform_api, world, settings):
    settings.EGRESS_MAX_PLACEMENTS_PER_NODE = 4
    a, b = world["a"], world["b"]
    ok = {"placements": [{"app": a.pk, "addresses": ["198.18.64.1/32", "198.18.64.2/32"]},
                         {"app": b.pk, "addresses": ["198.18.64.3/32", "198.18.64.4/32"]}]}
    assert platform_api.put(url(world["node1"]), ok).status_code == 200
    before = snapshot()
    ok["placements"][1]["addresses"].append("198.18.64.5/32")
    error = assert_error(platform_api.put(url(world["node1"]), ok), 400, "invalid")
    assert "the limit is 4" in error["fields"]["placements"][0]
    assert snapshot() == before


def test_tenants_cannot_read_or_report_placements(api_as, alice, bob, world, anon, platform_api):
    node, a = world["node1"], world["a"]
    platform_api.put(url(node), {"placements": [{"app": world["b"].pk, "addresses": ["198.18.64.200/32"]}]})
    before = snapshot()
    for user in (alice, bob):
        tenant = api_as(user)
        assert_error(tenant.get(url(node)), 403, "permission_denied")
        error = assert_error(
            tenant.put(url(node), {"placements": [{"app": a.pk, "addresses": ["198.18.64.200/32"]}]}), 403
        )
        assert "platform" in error["message"]
        assert_error(tenant.get("/api/v1/nodes/"), 403)
    assert_error(anon.put(url(node), {"placements": []}), 401)
    assert snapshot() == before
    assert_error(platform_api.get("/api/v1/nodes/999999/placements/"), 404)
    # The platform may read nodes (it reports by node id) but not change them.
    assert platform_api.get("/api/v1/nodes/").status_code == 200
    assert_error(platform_api.patch(f"/api/v1/nodes/{node.pk}/", {"enabled": False}), 403)


def test_staff_may_report_and_model_permissions_count(staff_api, api_as, make_user, world):
    a = world["a"]
    body = {"placements": [{"app": a.pk, "addresses": ["198.18.64.17/32"]}]}
    assert staff_api.put(url(world["node1"]), body).status_code == 200
    # Staff without the permission on placements may not (Django model permissions are honoured).
    limited = make_user("limited-admin")
    limited.is_staff = True
    limited.save()
    assert_error(api_as(limited).put(url(world["node1"]), {"placements": []}), 403)
    assert Placement.objects.filter(app=a).exists()


def test_report_reconciles_only_the_node_and_the_gateways_of_dedicated_apps(platform_api, world, make_app, alice):
    node1, node2, b = world["node1"], world["node2"], world["b"]
    a = make_app(alice, "dedicated-app")
    platform_api.put(url(node1), {"placements": [{"app": a.pk, "addresses": ["198.18.64.17/32"]}]})
    services.egress_enable(app=a)
    HostSync.objects.all().delete()
    # Bob's shared app: no host owes anything.
    platform_api.put(url(node2), {"placements": [{"app": b.pk, "addresses": ["198.18.65.17/32"]}]})
    assert not HostSync.objects.exists()
    # Alice's dedicated app moves to node2: node2 and her gateways, never node1's other work.
    platform_api.put(url(node2), {"placements": [{"app": a.pk, "addresses": ["198.18.65.40/32"]},
                                                 {"app": b.pk, "addresses": ["198.18.65.17/32"]}]})
    gateways = set(a.egress_ips.values_list("gateway_id", flat=True))
    assert set(HostSync.objects.filter(app=a, node__isnull=False).values_list("node_id", flat=True)) == {node2.pk}
    assert set(HostSync.objects.filter(app=a, gateway__isnull=False).values_list("gateway_id", flat=True)) == gateways
    assert not HostSync.objects.filter(app=b).exists()


def test_a_node_cannot_lose_the_pod_cidr_its_placements_are_in(platform_api, world, staff):
    node1, a = world["node1"], world["a"]
    platform_api.put(url(node1), {"placements": [{"app": a.pk, "addresses": ["198.18.64.17/32"]}]})
    with pytest.raises(Exception) as refused:
        services.host_update(host=node1, pod_cidrs=["198.18.66.0/24"], actor=staff)
    assert "placement" in str(refused.value)
    node1.refresh_from_db()
    assert node1.pod_cidrs == [POD1]


def test_schema_documents_the_placements_endpoint(anon):
    schema = anon.get("/api/v1/schema/?format=json").json()
    operations = schema["paths"]["/api/v1/nodes/{id}/placements/"]
    assert set(operations) >= {"get", "put"}
    assert "409" in operations["put"]["responses"] and "403" in operations["put"]["responses"]


@pytest.mark.postgres
def test_the_database_itself_refuses_what_the_service_refuses(world, make_node):
    """Bypassing the service (a bug, a script): PostgreSQL's constraints and triggers are the last guard."""
    node1, node2, a, b = world["node1"], world["node2"], world["a"], world["b"]
    twin = make_node("node-twin", pod_cidrs=[POD1])
    Placement(region=world["region"], node=node1, app=a, cidr="198.18.64.16/28").save()
    cases = [
        Placement(region=world["region"], node=twin, app=b, cidr="198.18.64.17/32"),  # another app's address
        Placement(region=world["region"], node=node1, app=b, cidr="198.18.65.17/32"),  # outside the node's pods
        Placement(region=world["region"], node=node2, app=b, cidr="198.18.64.0/23"),  # too wide
    ]
    for row in cases:
        with pytest.raises(IntegrityError), transaction.atomic():
            row.save()
    other = services.region_create(slug="test-3")
    with pytest.raises(IntegrityError), transaction.atomic():
        Placement(region=other, node=node2, app=b, cidr="198.18.65.17/32").save()  # region mismatch
    with pytest.raises(IntegrityError), transaction.atomic():
        Node.objects.filter(pk=node1.pk).update(pod_cidrs=["198.18.66.0/24"])  # placements would be left outside
    assert connection.vendor == "postgresql"
    # The same app may overlap itself (a move in progress).
    Placement(region=world["region"], node=twin, app=a, cidr="198.18.64.17/32").save()

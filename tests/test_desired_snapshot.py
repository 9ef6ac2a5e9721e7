"""What the database gives the desired-state rules: a node's snapshot holds only what is placed on it,
a gateway's the placed addresses of the apps holding an address on it and every pool of its region;
the pool services ask the region's gateways to reconcile."""

from __future__ import annotations

from ipaddress import IPv4Network, ip_network

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from egressportal.core import services
from egressportal.core.desired import gateway_desired, node_desired, node_snapshot
from egressportal.core.models import EgressIP, HostSync, IPPool
from egressportal.core.services import reconcile
from tests.helpers import place

pytestmark = pytest.mark.django_db


def nets(*cidrs: str) -> set[IPv4Network]:
    return {IPv4Network(c) for c in cidrs}


def test_each_node_steers_only_its_own_placements(infra, make_app, alice, bob, settings):
    settings.EGRESS_QUOTA_ADDRESSES = 100
    node_a, node_b = infra["nodes"]
    mine = make_app(alice, "mine", cidrs=["198.18.128.16/28"])  # node-a
    shared_neighbour = make_app(bob, "neighbour", cidrs=["198.18.128.32/28"])  # node-a, shared egress
    theirs = [make_app(bob, f"theirs-{i}", cidrs=[f"198.18.192.{16 * i}/28"]) for i in range(1, 4)]  # node-b
    for app in [mine, *theirs]:
        services.egress_enable(app=app)
    # "mine" is being redeployed: a new instance on node-b already, the old one on node-a still.
    place(mine, ["198.18.200.16/28"], node=node_b)
    EgressIP.objects.filter(status="assigned").update(programmed=True)
    HostSync.objects.all().delete()

    assert set(node_desired(node_a).state.steering) == nets("198.18.128.16/28")
    assert set(node_desired(node_b).state.steering) == nets(
        "198.18.200.16/28", *(f"198.18.192.{16 * i}/28" for i in range(1, 4))
    )
    for gw in infra["gateways"]:
        # Every dedicated app has an address on both gateways: each SNATs all their placements, and
        # never the shared neighbour's.
        snat = gateway_desired(gw).state.snat
        assert set(snat) == nets(
            "198.18.128.16/28", "198.18.200.16/28", *(f"198.18.192.{16 * i}/28" for i in range(1, 4))
        )
        assert IPv4Network("198.18.128.32/28") not in snat
    assert shared_neighbour.placements.exists()


def test_a_nodes_snapshot_does_not_grow_with_apps_on_other_nodes(infra, make_app, alice, bob, settings):
    settings.EGRESS_QUOTA_ADDRESSES = 1000
    services.pool_create(region=infra["region"], name="more", cidr="203.0.113.128/25")
    node_a, _ = infra["nodes"]
    services.egress_enable(app=make_app(alice, "mine", cidrs=["198.18.128.16/28"]))
    EgressIP.objects.filter(status="assigned").update(programmed=True)

    def read_node_a() -> tuple[int, int, int, int]:
        with CaptureQueriesContext(connection) as queries:
            plan = node_desired(node_a)
        snapshot = node_snapshot(node_a)
        return len(plan.state.steering), len(snapshot.app_ips), len(snapshot.app_cidrs), len(queries.captured_queries)

    few = read_node_a()
    for i in range(1, 40):
        services.egress_enable(app=make_app(bob, f"theirs-{i}", cidrs=[f"198.18.{192 + i // 16}.{16 * (i % 16)}/28"]))
    EgressIP.objects.filter(status="assigned").update(programmed=True)
    assert read_node_a() == few == (1, 1, 1, few[3])


# -- steady pools: every gateway holds every pool of its region ------------------------------------


def prefixes(*cidrs: str) -> set:
    return {ip_network(c) for c in cidrs}


POOL_A = prefixes("203.0.113.1/32", "203.0.113.2/31", "203.0.113.4/30", "203.0.113.8/30", "203.0.113.12/31",
                  "203.0.113.14/32")  # infra's 203.0.113.0/28
POOL_B = prefixes("198.51.100.1/32", "198.51.100.2/31", "198.51.100.4/31", "198.51.100.6/32")  # 198.51.100.0/29
POOL_6 = prefixes("2001:db8:0:2:e::1/128", "2001:db8:0:2:e::2/127")  # 2001:db8:0:2:e::/126


def test_a_gateway_holds_every_pool_of_its_region_whatever_addresses_it_holds(infra, make_app, make_gateway, alice):
    region = infra["region"]
    services.pool_create(region=region, name="pool-b", cidr="198.51.100.0/29")
    services.pool_create(region=region, name="pool-6", cidr="2001:db8:0:2:e::/126")
    other = services.region_create(slug="elsewhere", name="Elsewhere")
    services.pool_create(region=other, name="pool-x", cidr="203.0.113.64/29")
    gw_a, gw_b = infra["gateways"]  # no IPv6 transit address
    gw6 = make_gateway("gw-6", transit_address6="2001:db8:1::6")
    # No address anywhere yet: the region's pools all the same (IPv6 ones where the gateway carries IPv6).
    assert set(gateway_desired(gw_a).state.pools) == POOL_A | POOL_B
    assert set(gateway_desired(gw6).state.pools) == POOL_A | POOL_B | POOL_6
    app = make_app(alice, "mine", cidrs=["198.18.128.16/28"])
    services.egress_enable(app=app)
    holders = set(EgressIP.objects.filter(app=app).values_list("gateway_id", flat=True))
    assert holders  # the pools of gateways holding its addresses and of those holding none are the same
    for gw in (gw_a, gw_b, gw6):
        gw.refresh_from_db()
        plan = gateway_desired(gw)
        v6 = POOL_6 if gw == gw6 or any(a.version == 6 for a in plan.state.addresses) else set()
        assert set(plan.state.pools) == POOL_A | POOL_B | v6, gw.name


def test_pool_changes_change_what_every_gateway_of_the_region_holds(infra):
    region = infra["region"]
    gw_a, gw_b = infra["gateways"]
    pool_b = services.pool_create(region=region, name="pool-b", cidr="198.51.100.0/29")
    services.pool_update(pool=pool_b, excluded=["198.51.100.2"])
    shrunk = prefixes("198.51.100.1/32", "198.51.100.3/32", "198.51.100.4/31", "198.51.100.6/32")
    for gw in (gw_a, gw_b):
        assert set(gateway_desired(gw).state.pools) == POOL_A | shrunk
    services.pool_update(pool=pool_b, excluded=[])
    assert set(gateway_desired(gw_a).state.pools) == POOL_A | POOL_B
    services.pool_delete(pool=pool_b)
    for gw in (gw_a, gw_b):
        assert set(gateway_desired(gw).state.pools) == POOL_A  # no route of the deleted pool is left


@pytest.fixture
def dispatched(monkeypatch):
    """The hosts every reconcile request asks for once its transaction commits: one set per request."""
    made: list[set[tuple[str, int]]] = []
    monkeypatch.setattr(reconcile, "reconcile_dispatch", lambda targets, **_: made.append(set(targets)))
    return made


def test_pool_create_update_and_delete_ask_every_gateway_of_the_region_to_reconcile(
    infra, make_gateway, dispatched, django_capture_on_commit_callbacks
):
    region = infra["region"]
    gateways = {("gateway", gw.pk) for gw in infra["gateways"]}
    off = make_gateway("gw-off")
    services.host_update(host=off, enabled=False)
    other = services.region_create(slug="elsewhere", name="Elsewhere")
    make_gateway("gw-elsewhere", reg=other)
    steps = [
        lambda: services.pool_create(region=region, name="pool-b", cidr="198.51.100.0/29"),
        lambda: services.pool_update(pool=IPPool.objects.get(name="pool-b"), excluded=["198.51.100.2"]),
        lambda: services.pool_delete(pool=IPPool.objects.get(name="pool-b")),
        lambda: services.pool_create(region=region, name="pool-6", cidr="2001:db8:0:2:e::/126"),
        lambda: services.pool_update(pool=IPPool.objects.get(name="pool-6"), excluded=["2001:db8:0:2:e::2"]),
        lambda: services.pool_delete(pool=IPPool.objects.get(name="pool-6")),
    ]
    for step in steps:
        dispatched.clear()
        with django_capture_on_commit_callbacks(execute=True):
            step()
        # The region's enabled gateways; not a disabled one, not another region's.
        assert set().union(*dispatched) == gateways, step
    # A change of the description alone changes nothing a gateway holds: no request.
    dispatched.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.pool_update(pool=infra["pool"], description="the lab's")
    assert dispatched == []


def test_a_gateways_snapshot_costs_the_same_queries_whatever_it_holds(infra, make_app, alice, bob, settings):
    settings.EGRESS_QUOTA_ADDRESSES = 1000
    region = infra["region"]
    gw = infra["gateways"][0]
    services.egress_enable(app=make_app(alice, "mine", cidrs=["198.18.128.16/28"]))

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            gateway_desired(gw)
        return len(captured.captured_queries)

    few = queries()
    services.pool_create(region=region, name="more", cidr="203.0.113.128/25")
    services.pool_create(region=region, name="pool-6", cidr="2001:db8:0:2:e::/80")
    for i in range(1, 40):
        services.egress_enable(app=make_app(bob, f"theirs-{i}", cidrs=[f"198.18.{192 + i // 16}.{16 * (i % 16)}/28"]))
    assert len(gateway_desired(gw).state.addresses) > 20
    assert queries() == few


def test_a_node_steers_by_its_gateways_health_and_never_to_a_disabled_one(infra, make_app, alice):
    node_a, _ = infra["nodes"]
    app = make_app(alice, "mine", cidrs=["198.18.128.16/28"])
    services.egress_enable(app=app)
    EgressIP.objects.filter(status="assigned").update(programmed=True)
    HostSync.objects.all().delete()
    active = EgressIP.objects.select_related("gateway").get(app=app, role="active").gateway
    standby = EgressIP.objects.select_related("gateway").get(app=app, role="standby").gateway
    source = IPv4Network("198.18.128.16/28")

    def steered() -> tuple[int | None, str | None]:
        plan = node_desired(node_a)
        return plan.state.steering.get(source), plan.steered.get(app.pk)

    assert steered() == (active.slot, active.name)
    type(active).objects.filter(pk=active.pk).update(health="unhealthy")  # failover to the healthy standby
    assert steered() == (standby.slot, standby.name)
    type(standby).objects.filter(pk=standby.pk).update(health="unhealthy")  # both down: the active one
    assert steered() == (active.slot, active.name)
    type(active).objects.filter(pk=active.pk).update(enabled=False)  # a disabled gateway is never steered to
    assert steered() == (standby.slot, standby.name)
    assert active.slot not in node_desired(node_a).state.gateways

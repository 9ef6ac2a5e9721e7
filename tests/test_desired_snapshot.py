"""What the database gives the desired-state rules: a node's snapshot holds only what is placed on it,
a gateway's the placed addresses of the apps holding an address on it."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from egressportal.core import services
from egressportal.core.desired import gateway_desired, node_desired, node_snapshot
from egressportal.core.models import EgressIP, HostSync
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

"""IPv6 in the desired-state rules (egressportal/core/rules/desired.py, issue 20), on plain values.

An app's IPv6 egress address rides on its IPv4 one (same gateway, same role, live together): the gateway
holds both and SNATs each family's placements to its own address; a node steers both families to the one
gateway it chose, IPv6 through that gateway's IPv6 transit address."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from egressportal.core.rules.desired import GatewayIP, GatewaySnapshot, NodeSnapshot, SteerIP, gateway_plan, node_plan
from egressportal.dataplane import DataplaneValueError

APP, OTHER = 11, 12
CIDR, CIDR6 = "198.18.64.16/28", "2001:db8:10:1::100/120"
OTHER_CIDR6 = "2001:db8:10:1::200/120"
NODES = [("198.18.32.11", ["198.18.64.0/20", "2001:db8:10:1::/64"]), ("198.18.32.12", ["198.18.96.0/20", "2001:db8:10:2::/64"])]


def gw_snap(*ips: GatewayIP, transits6=None, pending=()) -> GatewaySnapshot:
    return GatewaySnapshot(
        public_interface="eth1",
        pending=list(pending),
        ips=list(ips),
        apps_pending_on_nodes=frozenset(),
        app_cidrs={APP: [CIDR, CIDR6], OTHER: [OTHER_CIDR6]},
        region_nodes=NODES,
        node_transits6={"198.18.32.11": "2001:db8:0:1::21"} if transits6 is None else transits6,
    )


def test_gateway_holds_both_addresses_and_snats_each_family_to_its_own():
    plan = gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, True, "2001:db8:0:2::1"), pending=[(100, APP)]))
    assert plan.state.addresses == {IPv4Address("203.0.113.130"), IPv6Address("2001:db8:0:2::1")}
    assert dict(plan.state.snat) == {
        IPv4Network(CIDR): IPv4Address("203.0.113.130"),
        IPv6Network(CIDR6): IPv6Address("2001:db8:0:2::1"),
    }
    assert plan.settles == [100] and plan.live_ip_ids == [1]


def test_an_app_without_an_ipv6_address_gets_no_ipv6_snat_and_its_ipv6_pods_stay_guarded():
    plan = gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, True)))
    assert dict(plan.state.snat) == {IPv4Network(CIDR): IPv4Address("203.0.113.130")}
    assert IPv6Network("2001:db8:10:1::/64") in plan.state.guarded_sources


def test_ipv6_pods_route_back_through_the_nodes_ipv6_transit_or_not_at_all_but_are_always_guarded():
    plan = gateway_plan(gw_snap())
    assert dict(plan.state.return_routes) == {
        IPv4Network("198.18.64.0/20"): IPv4Address("198.18.32.11"),
        IPv4Network("198.18.96.0/20"): IPv4Address("198.18.32.12"),
        IPv6Network("2001:db8:10:1::/64"): IPv6Address("2001:db8:0:1::21"),
    }
    # node-b has no IPv6 transit address: no route back, but its IPv6 pods never leak either.
    assert IPv6Network("2001:db8:10:2::/64") in plan.state.guarded_sources


def test_a_disabled_app_leaves_no_ipv6_trace_on_the_gateway():
    plan = gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, False, "2001:db8:0:2::1")))
    assert plan.state.addresses == frozenset() and dict(plan.state.snat) == {}
    assert plan.removed_ip_ids == [1]


def node_snap(app_ips, *, gateways6=None, cidrs=(CIDR, CIDR6)) -> NodeSnapshot:
    return NodeSnapshot(
        pending=[],
        pending_dedicated=frozenset(),
        gateways={1: "198.18.32.1", 2: "198.18.32.2"},
        gateways6={1: "2001:db8:0:1::11", 2: "2001:db8:0:1::12"} if gateways6 is None else gateways6,
        app_ips={APP: app_ips},
        app_cidrs={APP: list(cidrs)},
        region_pod_cidrs=["198.18.64.0/20", "2001:db8:10:1::/64"],
        region_transit_addresses=["198.18.32.1", "2001:db8:0:1::11", "198.18.32.11"],
    )


def ip(slot, *, active, v6=True, programmed=True, unhealthy=False) -> SteerIP:
    return SteerIP(active, programmed, unhealthy, slot, f"gw{slot}", v6)


def test_node_steers_both_families_to_the_active_gateway():
    plan = node_plan(node_snap([ip(1, active=True), ip(2, active=False)]))
    assert dict(plan.state.steering) == {IPv4Network(CIDR): 1, IPv6Network(CIDR6): 1}
    assert dict(plan.state.gateways6) == {1: IPv6Address("2001:db8:0:1::11"), 2: IPv6Address("2001:db8:0:1::12")}
    assert IPv6Network("2001:db8:10:1::/64") in plan.state.internal
    assert IPv6Network("2001:db8:0:1::11/128") in plan.state.internal


def test_failover_moves_ipv6_with_ipv4_to_the_standby():
    plan = node_plan(node_snap([ip(1, active=True, unhealthy=True), ip(2, active=False)]))
    assert dict(plan.state.steering) == {IPv4Network(CIDR): 2, IPv6Network(CIDR6): 2}
    assert plan.steered == {APP: "gw2"}


@pytest.mark.parametrize(
    ("ips", "gateways6"),
    [
        pytest.param([ip(1, active=True, v6=False), ip(2, active=False)], None, id="no-ipv6-address-there"),
        pytest.param([ip(1, active=True), ip(2, active=False)], {2: "2001:db8:0:1::12"}, id="gateway-without-ipv6"),
    ],
)
def test_ipv6_is_not_steered_where_the_chosen_gateway_cannot_carry_it(ips, gateways6):
    plan = node_plan(node_snap(ips, gateways6=gateways6))
    assert dict(plan.state.steering) == {IPv4Network(CIDR): 1}  # IPv6 leaves from the node, as before enabling


def test_nothing_is_steered_before_the_address_pair_is_live():
    plan = node_plan(node_snap([ip(1, active=True, programmed=False)]))
    assert dict(plan.state.steering) == {}


def test_an_ipv6_only_app_is_steered_too():
    plan = node_plan(node_snap([ip(1, active=True)], cidrs=[CIDR6]))
    assert dict(plan.state.steering) == {IPv6Network(CIDR6): 1}


def test_the_dataplane_refuses_ipv6_steering_without_an_ipv6_gateway():
    # The rule above keeps this from happening; the state itself is the last guard.
    from egressportal.dataplane import NodeState

    with pytest.raises(DataplaneValueError, match="no IPv6 gateway"):
        NodeState.build(steering={CIDR6: 1}, gateways={1: "198.18.32.1"})


def test_a_partner_its_gateway_does_not_hold_yet_is_not_steered_and_the_node_still_owes_the_app():
    """An IPv6 backfill gives a live address its partner: until the gateway's reconcile applied it, IPv6
    keeps leaving from the node (steering it to the gateway would drop it there: make before break), and
    the node's sync row stays, so the node is asked again once the gateway holds it."""
    from dataclasses import replace

    waiting = SteerIP(True, True, False, 1, "gw1", True, True)
    snap = replace(node_snap([waiting, ip(2, active=False)]), pending=[(7, APP)], pending_dedicated=frozenset({APP}))
    plan = node_plan(snap)
    assert dict(plan.state.steering) == {IPv4Network(CIDR): 1}
    assert plan.settles == [] and plan.steered == {}
    plan = node_plan(replace(snap, app_ips={APP: [waiting._replace(v6_pending=False), ip(2, active=False)]}))
    assert dict(plan.state.steering) == {IPv4Network(CIDR): 1, IPv6Network(CIDR6): 1}
    assert plan.settles == [7] and plan.steered == {APP: "gw1"}
    # A gateway without IPv6 transit carries no IPv6 anyway: nothing to wait for.
    plan = node_plan(replace(snap, gateways6={2: "2001:db8:0:1::12"}))
    assert plan.settles == [7]

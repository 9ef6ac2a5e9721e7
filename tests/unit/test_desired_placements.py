"""The desired-state rules for placements, on plain values (egressportal/core/rules/desired.py):

- a node steers only the addresses placed on it, for dedicated apps with a live address;
- a pod placed for no app, or an app without dedicated egress, is never steered;
- a gateway SNATs the placed addresses (on any node) of the apps holding an address on it, and
  nothing for anyone else;
- a node that owes a dedicated app a reconcile but no longer runs it settles that debt by steering
  nothing for it (a redeploy elsewhere);
- a redeploy changes the sources, never the address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from egressportal.core.rules.desired import GatewayIP, GatewaySnapshot, NodeSnapshot, SteerIP, gateway_plan, node_plan

A, B, C = 11, 12, 13  # app ids
GW = {1: "198.18.32.1", 2: "198.18.32.2"}
PODS = ["198.18.64.0/24", "198.18.65.0/24"]


def live(slot: int = 1) -> list[SteerIP]:
    return [SteerIP(True, True, False, slot, f"gw{slot}"), SteerIP(False, True, False, 3 - slot, f"gw{3 - slot}")]


def node(app_ips, placed, *, pending=(), dedicated=()) -> NodeSnapshot:
    return NodeSnapshot(
        pending=list(pending),
        pending_dedicated=frozenset(dedicated),
        gateways=GW,
        app_ips=app_ips,
        app_cidrs=placed,
        region_pod_cidrs=PODS,
        region_transit_addresses=["198.18.32.1", "198.18.32.2", "198.18.32.11", "198.18.32.12"],
    )


def gateway(ips, placed, *, pending=(), on_nodes=()) -> GatewaySnapshot:
    return GatewaySnapshot(
        public_interface="eth1",
        pending=list(pending),
        ips=list(ips),
        apps_pending_on_nodes=frozenset(on_nodes),
        app_cidrs=placed,
        region_nodes=[("198.18.32.11", [PODS[0]]), ("198.18.32.12", [PODS[1]])],
    )


def test_a_node_steers_only_what_is_placed_on_it():
    # A and B are dedicated; only A is placed on this node (B runs on the other one: not in the snapshot).
    plan = node_plan(node({A: live(1)}, {A: ["198.18.64.16/28"]}))
    assert dict(plan.state.steering) == {IPv4Network("198.18.64.16/28"): 1}


def test_a_dedicated_app_placed_nowhere_here_is_not_steered_and_settles():
    """Its placement moved to the other node: this node owes it a reconcile (to stop steering it) and
    settles that by holding nothing for it."""
    plan = node_plan(node({B: live(2)}, {}, pending=[(7, B)], dedicated=[B]))
    assert dict(plan.state.steering) == {}
    assert plan.settles == [7]


def test_a_pod_placed_for_no_app_and_shared_apps_are_never_steered():
    # C runs here without dedicated egress: it has no addresses, so the snapshot brings no SteerIP for it.
    plan = node_plan(node({A: live(1)}, {A: ["198.18.64.16/28"], C: ["198.18.64.48/28"]}))
    assert set(plan.state.steering) == {IPv4Network("198.18.64.16/28")}


def test_a_gateway_snats_the_placed_addresses_of_its_apps_on_every_node():
    plan = gateway_plan(gateway(
        [GatewayIP(1, "203.0.113.130", A, True)],
        # A runs on both nodes (a redeploy under way); B is placed but holds nothing on this gateway.
        {A: ["198.18.64.16/28", "198.18.65.32/28"], B: ["198.18.65.16/28"]},
    ))
    assert dict(plan.state.snat) == {
        IPv4Network("198.18.64.16/28"): IPv4Address("203.0.113.130"),
        IPv4Network("198.18.65.32/28"): IPv4Address("203.0.113.130"),
    }


def test_a_redeploy_changes_the_sources_never_the_address():
    before = gateway_plan(gateway([GatewayIP(1, "203.0.113.130", A, True)], {A: ["198.18.64.16/28"]}))
    after = gateway_plan(gateway([GatewayIP(1, "203.0.113.130", A, True)], {A: ["198.18.65.32/28"]}))
    assert before.state.addresses == after.state.addresses == {IPv4Address("203.0.113.130")}
    assert set(after.state.snat) == {IPv4Network("198.18.65.32/28")}
    assert set(after.state.snat.values()) == {IPv4Address("203.0.113.130")}


def test_an_app_placed_nowhere_keeps_its_address_on_the_gateway():
    """Enabled before its first deploy: the address is held (and allow-listed), with nothing to SNAT yet."""
    plan = gateway_plan(gateway([GatewayIP(1, "203.0.113.130", A, True)], {}, pending=[(5, A)]))
    assert plan.state.addresses == {IPv4Address("203.0.113.130")} and dict(plan.state.snat) == {}
    assert plan.settles == [5]

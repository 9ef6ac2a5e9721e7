"""The desired-state rules on plain values (egressportal/core/rules/desired.py): no database, no host.

Each test names the rule it guards; docs/ARCHITECTURE.md lists how each was broken on purpose to see
it fail."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Network

from egressportal.core.rules.desired import (
    GatewayIP,
    GatewaySnapshot,
    NodeSnapshot,
    SteerIP,
    gateway_plan,
    node_plan,
    steering_choice,
)

APP, OTHER = 11, 12
CIDR, OTHER_CIDR = "198.18.64.16/28", "198.18.64.32/28"
NODES = [("198.18.32.11", ["198.18.64.0/20"]), ("198.18.32.12", ["198.18.96.0/20"])]


def gw_snap(*ips: GatewayIP, pending=(), on_nodes=(), draining=False) -> GatewaySnapshot:
    return GatewaySnapshot(
        public_interface="eth1",
        pending=list(pending),
        ips=list(ips),
        apps_pending_on_nodes=frozenset(on_nodes),
        app_cidrs={APP: [CIDR], OTHER: [OTHER_CIDR]},
        region_nodes=NODES,
        draining=draining,
    )


def node_snap(app_ips, *, pending=(), dedicated=(APP, OTHER)) -> NodeSnapshot:
    return NodeSnapshot(
        pending=list(pending),
        pending_dedicated=frozenset(a for _, a in pending if a in dedicated),
        gateways={1: "198.18.32.1", 2: "198.18.32.2"},
        app_ips=app_ips,
        app_cidrs={APP: [CIDR], OTHER: [OTHER_CIDR]},
        region_pod_cidrs=["198.18.64.0/20", "198.18.96.0/20"],
        region_transit_addresses=["198.18.32.1", "198.18.32.2", "198.18.32.11"],
    )


def active(slot=1, *, programmed=True, unhealthy=False) -> SteerIP:
    return SteerIP(True, programmed, unhealthy, slot, f"gw{slot}")


def standby(slot=2, *, programmed=True, unhealthy=False) -> SteerIP:
    return SteerIP(False, programmed, unhealthy, slot, f"gw{slot}")


# -- gateways ------------------------------------------------------------------------------------


def test_gateway_holds_and_snats_a_dedicated_apps_address():
    plan = gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, True), pending=[(100, APP)]))
    assert plan.state.addresses == {IPv4Address("203.0.113.130")}
    assert dict(plan.state.snat) == {IPv4Network(CIDR): IPv4Address("203.0.113.130")}
    assert plan.live_ip_ids == [1] and plan.removed_ip_ids == []
    assert plan.settles == [100]  # the address is held: the app's gateway sync is done


def test_make_before_break_gateway_keeps_a_disabling_apps_address_while_a_node_may_steer_to_it():
    plan = gateway_plan(
        gw_snap(GatewayIP(1, "203.0.113.130", APP, False), pending=[(100, APP)], on_nodes=[APP])
    )
    assert IPv4Address("203.0.113.130") in plan.state.addresses
    assert IPv4Network(CIDR) in plan.state.snat
    assert plan.removed_ip_ids == []
    assert plan.settles == []  # not removed yet: the gateway still owes this app


def test_gateway_removes_a_disabling_apps_address_once_no_node_steers_it():
    plan = gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, False), pending=[(100, APP)]))
    assert plan.state.addresses == frozenset()
    assert plan.removed_ip_ids == [1] and plan.live_ip_ids == []
    assert plan.settles == [100]


def test_gateway_routes_back_to_every_nodes_pods_and_guards_them():
    plan = gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, True)))
    assert dict(plan.state.return_routes) == {
        IPv4Network("198.18.64.0/20"): IPv4Address("198.18.32.11"),
        IPv4Network("198.18.96.0/20"): IPv4Address("198.18.32.12"),
    }
    # The app's sources lie inside the pods: guarded already (the state collapses what overlaps).
    assert plan.state.guarded_sources == {IPv4Network("198.18.64.0/20"), IPv4Network("198.18.96.0/20")}


def test_gateway_plan_names_every_app_it_concerns():
    plan = gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, True), pending=[(100, OTHER)]))
    assert plan.apps == {APP, OTHER}


def test_drain_a_drained_gateway_with_no_address_left_is_decommissioned():
    assert gateway_plan(gw_snap(draining=True)).decommission
    # Still holding an address (nodes not done with a disabling app, or a kept active): not yet.
    kept = gw_snap(GatewayIP(1, "203.0.113.130", APP, False), on_nodes=[APP], draining=True)
    assert not gateway_plan(kept).decommission
    assert not gateway_plan(gw_snap(GatewayIP(1, "203.0.113.130", APP, True), draining=True)).decommission
    # Not draining: an empty gateway keeps its table and routes.
    assert not gateway_plan(gw_snap()).decommission


# -- steering choice: failover and failback -------------------------------------------------------


def test_steers_to_the_active_gateway_while_it_is_healthy():
    assert steering_choice([standby(2), active(1)]) == (1, "gw1")


def test_failover_to_a_healthy_standby_when_the_active_gateway_is_unhealthy():
    assert steering_choice([active(1, unhealthy=True), standby(2)]) == (2, "gw2")


def test_failback_to_the_active_gateway_once_it_is_healthy_again():
    before = [active(1, unhealthy=True), standby(2)]
    after = [active(1), standby(2)]
    assert steering_choice(before) == (2, "gw2") and steering_choice(after) == (1, "gw1")


def test_all_gateways_down_keeps_the_active_one():
    assert steering_choice([standby(2, unhealthy=True), active(3, unhealthy=True)]) == (3, "gw3")


def test_failover_skips_an_unhealthy_standby_and_prefers_the_lowest_slot():
    ips = [active(1, unhealthy=True), standby(4), standby(2, unhealthy=True), standby(3)]
    assert steering_choice(ips) == (3, "gw3")


def test_make_before_break_no_steering_to_an_address_its_gateway_does_not_hold_yet():
    assert steering_choice([active(1, programmed=False), standby(2, programmed=False)]) is None
    # A failover never goes to an unprogrammed standby either.
    assert steering_choice([active(1, unhealthy=True), standby(2, programmed=False)]) == (1, "gw1")


# -- nodes ---------------------------------------------------------------------------------------


def test_make_before_break_node_steers_only_once_an_address_is_programmed():
    waiting = node_plan(node_snap({APP: [active(1, programmed=False)]}, pending=[(200, APP)]))
    assert dict(waiting.state.steering) == {}
    assert waiting.settles == []  # the node still owes this app its steering
    live = node_plan(node_snap({APP: [active(1)]}, pending=[(200, APP)]))
    assert dict(live.state.steering) == {IPv4Network(CIDR): 1}
    assert live.steered == {APP: "gw1"} and live.settles == [200]


def test_node_steers_to_the_standby_while_the_active_gateway_is_down():
    plan = node_plan(node_snap({APP: [active(1, unhealthy=True), standby(2)]}, pending=[(200, APP)]))
    assert dict(plan.state.steering) == {IPv4Network(CIDR): 2}
    assert plan.steered == {APP: "gw2"} and plan.settles == [200]


def test_node_using_a_fallback_while_the_preferred_gateway_is_configured_still_owes_the_app():
    # The active address is not live yet, the standby is: traffic may use the standby meanwhile, but the
    # node's sync must not settle (it owes the app steering towards the active gateway).
    plan = node_plan(node_snap({APP: [active(1, programmed=False), standby(2)]}, pending=[(200, APP)]))
    assert dict(plan.state.steering) == {IPv4Network(CIDR): 2}
    assert APP not in plan.steered and plan.settles == []


def test_a_disabling_apps_node_sync_settles_as_soon_as_the_node_stops_steering_it():
    # A disabling app is not dedicated: it has no addresses in app_ips and is not steered.
    plan = node_plan(node_snap({OTHER: [active(1)]}, pending=[(200, APP), (201, OTHER)], dedicated=(OTHER,)))
    assert IPv4Network(CIDR) not in plan.state.steering
    assert plan.settles == [200, 201]
    assert plan.apps == {APP, OTHER}


def test_node_never_steers_traffic_to_pods_or_hosts_of_the_platform():
    plan = node_plan(node_snap({APP: [active(1)]}))
    assert plan.state.internal == {
        IPv4Network("198.18.64.0/20"),
        IPv4Network("198.18.96.0/20"),
        IPv4Network("198.18.32.1/32"),
        IPv4Network("198.18.32.2/32"),
        IPv4Network("198.18.32.11/32"),
    }
    assert dict(plan.state.gateways) == {1: IPv4Address("198.18.32.1"), 2: IPv4Address("198.18.32.2")}


def test_gateway_holds_every_pool_of_its_region_as_anyip():
    snap = gw_snap(
        GatewayIP(1, "203.0.113.130", APP, True),
        GatewayIP(2, "203.0.113.9", OTHER, True),  # its pool excluded it since: its own /32
    )
    snap = GatewaySnapshot(**{**snap.__dict__, "pool_prefixes": {
        "203.0.113.128/25": ["203.0.113.129/32", "203.0.113.130/31"], "203.0.113.0/29": ["203.0.113.1/32"],
        "198.51.100.0/24": ["198.51.100.1/32"],
    }})
    state = gateway_plan(snap).state
    # Every pool of the region (198.51.100.0/24 holds none of the addresses), as its prefixes, not one per
    # address. Before the pools became steady, 198.51.100.0/24 was left out here.
    assert state.pools == {
        IPv4Network("203.0.113.129/32"), IPv4Network("203.0.113.130/31"), IPv4Network("203.0.113.1/32"),
        IPv4Network("198.51.100.1/32"), IPv4Network("203.0.113.9/32"),
    }
    assert state.legacy_addresses == set()
    # A disabling app's address that is released here leaves the pools as they were (before the pools
    # became steady it took its pool with it).
    released = GatewaySnapshot(**{**snap.__dict__, "ips": [GatewayIP(1, "203.0.113.130", APP, False)]})
    assert gateway_plan(released).state.pools == state.pools - {IPv4Network("203.0.113.9/32")}


def test_gateway_holds_the_ipv6_pools_of_its_region_with_its_partners():
    snap = gw_snap(
        GatewayIP(1, "203.0.113.130", APP, True, "2001:db8:0:2:e::5"),
        GatewayIP(2, "203.0.113.131", OTHER, True, "2001:db8:0:9::5"),  # in no IPv6 pool any more
    )
    snap = GatewaySnapshot(**{**snap.__dict__, "pool_prefixes": {"203.0.113.128/25": ["203.0.113.128/25"]},
                              "pool6_prefixes": {
        "2001:db8:0:2:e::/80": ["2001:db8:0:2:e::1/128", "2001:db8:0:2:e::2/127"],
        # No address of it held here: held all the same (before the pools became steady: no route).
        "2001:db8:0:3::/64": ["2001:db8:0:3::1/128"],
    }})
    state = gateway_plan(snap).state
    assert {p for p in state.pools if p.version == 6} == {
        IPv6Network("2001:db8:0:2:e::1/128"), IPv6Network("2001:db8:0:2:e::2/127"), IPv6Network("2001:db8:0:9::5/128"),
        IPv6Network("2001:db8:0:3::1/128"),
        # Outside the pool's usable prefixes (excluded since it was handed out): held as its own /128.
        IPv6Network("2001:db8:0:2:e::5/128"),
    }

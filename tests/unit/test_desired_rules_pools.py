"""Steady pools (egressportal/core/rules/desired.py, ``_anyip_pools``): a gateway holds every pool of its
region as anyIP whatever addresses it holds, so enabling or disabling an app never adds or removes a pool
route. IPv6 pools only when the gateway carries IPv6 (an IPv6 transit address, or an IPv6 partner held
there). On plain values: no database, no host."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

from egressportal.core.rules.desired import GatewayIP, GatewaySnapshot, gateway_plan
from egressportal.dataplane import render_gateway_nft

APP, OTHER = 11, 12
NODES = [("198.18.32.11", ["198.18.64.0/20", "2001:db8:5:1::/64"])]
POOLS = {
    "203.0.113.0/28": ["203.0.113.1/32", "203.0.113.2/31", "203.0.113.4/30", "203.0.113.8/30", "203.0.113.12/31",
                       "203.0.113.14/32"],
    "198.51.100.0/29": ["198.51.100.1/32", "198.51.100.2/31", "198.51.100.4/31", "198.51.100.6/32"],
}
POOLS6 = {"2001:db8:0:2:e::/126": ["2001:db8:0:2:e::1/128", "2001:db8:0:2:e::2/127"]}
ALL4 = {IPv4Network(p) for prefixes in POOLS.values() for p in prefixes}
ALL6 = {IPv6Network(p) for prefixes in POOLS6.values() for p in prefixes}


def snap(*ips: GatewayIP, transit6: bool = False, draining: bool = False, on_nodes=(), pools=None) -> GatewaySnapshot:
    return GatewaySnapshot(
        public_interface="eth1",
        pending=[],
        ips=list(ips),
        apps_pending_on_nodes=frozenset(on_nodes),
        app_cidrs={APP: ["198.18.64.16/28"], OTHER: ["198.18.64.32/28"]},
        region_nodes=NODES,
        draining=draining,
        node_transits6={"198.18.32.11": "2001:db8:1::11"},
        pool_prefixes=POOLS if pools is None else pools,
        pool6_prefixes=POOLS6,
        transit6=transit6,
    )


def pools(s: GatewaySnapshot) -> set:
    return set(gateway_plan(s).state.pools)


def test_a_gateway_with_no_address_holds_every_pool_of_its_region():
    plan = gateway_plan(snap())
    assert set(plan.state.pools) == ALL4
    assert plan.state.addresses == frozenset() and not plan.decommission


def test_the_pools_do_not_change_with_the_addresses_held():
    empty = pools(snap())
    one = pools(snap(GatewayIP(1, "203.0.113.5", APP, True)))
    # Both addresses in one pool: the other pool is held all the same.
    two = pools(snap(GatewayIP(1, "203.0.113.5", APP, True), GatewayIP(2, "203.0.113.6", OTHER, True)))
    # A disabling app's address released: the pool stays.
    released = pools(snap(GatewayIP(1, "203.0.113.5", APP, False)))
    assert empty == one == two == released == ALL4


def test_an_address_outside_its_pools_usable_prefixes_is_held_as_its_own_prefix():
    # 203.0.113.1 excluded after it was handed out: the pool's prefixes skip it.
    shrunk = {**POOLS, "203.0.113.0/28": ["203.0.113.2/31", "203.0.113.4/30", "203.0.113.8/30", "203.0.113.12/31",
                                          "203.0.113.14/32"]}
    s = snap(GatewayIP(1, "203.0.113.1", APP, True), GatewayIP(2, "203.0.113.4", OTHER, True), pools=shrunk)
    # Its own /32; 203.0.113.4 lies in a pool prefix and gets none.
    assert pools(s) == {IPv4Network(p) for ps in shrunk.values() for p in ps} | {IPv4Network("203.0.113.1/32")}
    # A pool grown or shrunk (its exclusions changed) changes what the gateway holds, addresses or not.
    assert pools(snap(pools=shrunk)) == {IPv4Network(p) for ps in shrunk.values() for p in ps}


def test_a_deleted_pool_leaves_no_route():
    remaining = {"198.51.100.0/29": POOLS["198.51.100.0/29"]}
    assert pools(snap(pools=remaining)) == {IPv4Network(p) for p in POOLS["198.51.100.0/29"]}


def test_ipv6_pools_only_when_the_gateway_carries_ipv6():
    # Neither an IPv6 transit address nor a partner: no IPv6 pool (as before steady pools: no sysctl step).
    assert {p for p in pools(snap(GatewayIP(1, "203.0.113.5", APP, True))) if p.version == 6} == set()
    assert {p for p in pools(snap()) if p.version == 6} == set()
    # An IPv6 transit address: every IPv6 pool, with or without addresses.
    assert {p for p in pools(snap(transit6=True)) if p.version == 6} == ALL6
    assert pools(snap(transit6=True)) == pools(snap(GatewayIP(1, "203.0.113.5", APP, True, "2001:db8:0:2:e::2"),
                                                    transit6=True))
    # A partner held by a gateway without IPv6 transit: every IPv6 pool too, and a /128 for a partner outside.
    outside = snap(GatewayIP(1, "203.0.113.5", APP, True, "2001:db8:0:2:e::1"),
                   GatewayIP(2, "203.0.113.6", OTHER, True, "2001:db8:0:9::5"))
    assert {p for p in pools(outside) if p.version == 6} == ALL6 | {IPv6Network("2001:db8:0:9::5/128")}


def test_a_drained_gateway_with_no_address_is_decommissioned_and_keeps_no_pool():
    plan = gateway_plan(snap(transit6=True, draining=True))
    assert plan.decommission and plan.state.pools == frozenset()
    # Still holding an address (a node still steers a disabling app): every pool stays.
    kept = gateway_plan(snap(GatewayIP(1, "203.0.113.5", APP, False), transit6=True, draining=True, on_nodes=[APP]))
    assert not kept.decommission and set(kept.state.pools) == ALL4 | ALL6


def test_the_arp_guard_covers_every_pool_and_answers_for_none_without_addresses():
    script = render_gateway_nft(gateway_plan(snap()).state)
    arp = script[script.index("table arp egressportal {\n"):]
    prefixes = arp[arp.index("set pool_prefixes"):arp.index("set egress_addresses")]
    for net in ALL4:
        assert str(net).removesuffix("/32") in prefixes, net
    ours = arp[arp.index("set egress_addresses"):arp.index("chain input")]
    assert "elements" not in ours  # no address of the pools is answered for
    assert "arp daddr ip @pool_prefixes arp daddr ip != @egress_addresses drop" in arp

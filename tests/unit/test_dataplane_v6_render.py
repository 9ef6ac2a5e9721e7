"""IPv6 rendering, planning and parsing: table ``ip6 egressportal`` and ``ip -6`` routes and rules beside the
IPv4 ones (which render exactly as before), round trips through the parser, hostile values in every field."""

from __future__ import annotations

import json

import pytest

from egressportal import dataplane as dp
from egressportal.dataplane import (
    DataplaneParseError,
    DataplaneValueError,
    GatewayState,
    NodeState,
    parse_gateway,
    parse_node,
    plan_gateway,
    plan_gateway_decommission,
    plan_node,
    render_gateway_nft,
    render_node_nft,
)

GW4 = dict(
    public_interface="eth1",
    addresses=["203.0.113.10"],
    snat={"198.19.1.0/24": "203.0.113.10"},
    return_routes={"198.19.1.0/24": "198.18.0.11"},
    guarded_sources=["198.19.0.0/16"],
)
GW6 = dict(
    public_interface="eth1",
    addresses=["203.0.113.10", "2001:db8:0:2::10", "2001:db8:0:2::11"],
    snat={
        "198.19.1.0/24": "203.0.113.10",
        "2001:db8:10:1::/64": "2001:db8:0:2::10",
        "2001:db8:10:2::5/128": "2001:db8:0:2::11",
    },
    return_routes={"198.19.1.0/24": "198.18.0.11", "2001:db8:10:1::/64": "2001:db8:0:1::11"},
    guarded_sources=["198.19.0.0/16", "2001:db8:10::/48"],
)
NODE4 = dict(steering={"198.19.1.0/24": 1}, gateways={1: "198.18.0.2"}, internal=["198.18.0.0/15"])
NODE6 = dict(
    steering={"198.19.1.0/24": 1, "2001:db8:10:1::/64": 1, "2001:db8:10:2::/96": 2},
    gateways={1: "198.18.0.2"},
    gateways6={1: "2001:db8:0:1::2", 2: "2001:db8:0:1::3"},
    internal=["198.18.0.0/15", "2001:db8::/32"],
)


# --- what the host reports, built the way nft 1.0.6 / iproute2 6.1 list what render.py writes ---------------
# (shapes captured from the kernel in a scratch netns; tests/integration/test_dataplane_kernel_v6.py checks
# the same round trips against the real kernel)


def _prefix(net) -> object:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else {
        "prefix": {"addr": str(net.network_address), "len": net.prefixlen}
    }


def _hdr(family: str) -> list[dict]:
    return [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": family, "name": "egressportal"}}]


def _set(family: str, name: str, typ: str, elems: list, data: str | None = None) -> dict:
    body = {"family": family, "name": name, "table": "egressportal", "type": typ}
    if data:
        body["map"] = data
    if elems:
        body["elem"] = elems
    return {"map" if data else "set": body}


def _chain(family: str, name: str, hook: dict | None = None) -> dict:
    return {"chain": {"family": family, "table": "egressportal", "name": name, **(hook or {})}}


def _rule(family: str, chain: str, expr: list) -> dict:
    return {"rule": {"family": family, "table": "egressportal", "chain": chain, "expr": expr}}


def _payload(proto: str, field: str) -> dict:
    return {"payload": {"protocol": proto, "field": field}}


def _match(op: str, left: dict, right: object) -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


FAMILY = {4: ("ip", "ipv4_addr", "ip"), 6: ("ip6", "ipv6_addr", "ip6")}


def host_gateway_nft(state: GatewayState, version: int) -> str | None:
    family, typ, proto = FAMILY[version]
    snat = [(k, x) for k, x in state.snat.items() if k.version == version]
    oif = _match("==", {"meta": {"key": "oifname"}}, state.public_interface)
    items = _hdr(family) + [
        _set(family, "snat_by_source", typ, [[_prefix(k), str(x)] for k, x in snat], typ),
        _set(family, "mapped_sources", typ, [_prefix(k) for k, _ in snat]),
        *([_set(family, "egress_addresses", typ, sorted(str(a) for a in state.addresses if a.version == 6))]
          if version == 6 else []),  # IPv4 addresses are recorded in the ARP guard (host_gateway_arp)
        _set(family, "guarded_sources", typ, [_prefix(n) for n in state.guarded_sources if n.version == version]),
        _chain(family, "postrouting", {"type": "nat", "hook": "postrouting", "prio": 90, "policy": "accept"}),
        _chain(family, "forward", {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}),
        _rule(family, "postrouting", [oif, {"snat": {"addr": {"map": {
            "key": _payload(proto, "saddr"), "data": "@snat_by_source"}}}}]),  # fmt: skip
        _rule(family, "forward", [
            oif, _match("==", _payload(proto, "saddr"), "@guarded_sources"),
            _match("!=", _payload(proto, "saddr"), "@mapped_sources"), {"drop": None},
        ]),  # fmt: skip
    ]
    return json.dumps({"nftables": items})


def host_gateway_arp(state: GatewayState) -> str:
    items = _hdr("arp") + [
        _set("arp", "pool_prefixes", "ipv4_addr", [_prefix(n) for n in sorted(dp.model.by_family(state.pools, 4))]),
        _set("arp", "egress_addresses", "ipv4_addr", sorted(str(a) for a in state.addresses if a.version == 4)),
        _chain("arp", "input", {"type": "filter", "hook": "input", "prio": 0, "policy": "accept"}),
        _rule("arp", "input", [
            _match("==", _payload("arp", "operation"), "request"),
            _match("==", _payload("arp", "daddr ip"), "@pool_prefixes"),
            _match("!=", _payload("arp", "daddr ip"), "@egress_addresses"), {"drop": None},
        ]),  # fmt: skip
    ]
    return json.dumps({"nftables": items})


def host_gateway_addr(state: GatewayState, version: int) -> str:
    fam, plen = ("inet", 32) if version == 4 else ("inet6", 128)
    # Egress addresses are pool routes (anyIP), not interface addresses, but for the old layout's.
    infos = [{"family": fam, "local": str(a), "prefixlen": plen} for a in state.legacy_addresses if a.version == version]
    if version == 6:  # always there, never ours
        infos.append({"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "253"})
    return json.dumps([{"ifname": state.public_interface, "addr_info": infos}])


def host_proxy6(state: GatewayState) -> str:
    # As iproute2 6.1 lists "ip -N -j -6 neigh show proxy dev IF" (one of another owner among them).
    entries = [{"dst": str(a), "proxy": None, "protocol": "250"}
               for a in state.addresses - state.legacy_addresses if a.version == 6]  # fmt: skip
    return json.dumps([*entries, {"dst": "2001:db8:0:2::99", "proxy": None}])


NDP_ON = "1\n0\n"


def host_routes(routes: dict, version: int, pools=()) -> str:
    local = [{"type": "2", "dst": str(n), "dev": "lo", "table": "255"} for n in pools if n.version == version]
    via = [{"dst": str(k), "gateway": str(x), "dev": "t0"} for k, x in routes.items() if k.version == version]
    return json.dumps(local + via)


def read_gateway(state: GatewayState) -> GatewayState:
    has6 = dp.render.gateway_has_ipv6(state)
    return parse_gateway(
        host_gateway_nft(state, 4), host_gateway_addr(state, 4), host_routes(state.return_routes, 4, state.pools),
        "eth1",
        nft6_json=host_gateway_nft(state, 6) if has6 else None, arp_json=host_gateway_arp(state),
        addr6_json=host_gateway_addr(state, 6), route6_json=host_routes(state.return_routes, 6, state.pools),
        proxy6_json=host_proxy6(state), ndp_text=NDP_ON,
    )  # fmt: skip


def host_node_nft(state: NodeState, version: int) -> str:
    family, typ, proto = FAMILY[version]
    steering = [(k, s) for k, s in state.steering.items() if k.version == version]
    items = _hdr(family) + [
        _set(family, "mark_by_source", typ, [[_prefix(k), {"goto": {"target": f"mark_slot_{s}"}}] for k, s in steering],
             "verdict"),  # fmt: skip
        _set(family, "internal", typ, [_prefix(n) for n in state.internal if n.version == version]),
        _chain(family, "prerouting", {"type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}),
        _rule(family, "prerouting", [
            _match("!=", _payload(proto, "daddr"), "@internal"),
            {"vmap": {"key": _payload(proto, "saddr"), "data": "@mark_by_source"}},
        ]),  # fmt: skip
    ]
    for s in sorted({s for _, s in steering}):
        items += [
            _chain(family, f"mark_slot_{s}"),
            _rule(family, f"mark_slot_{s}", [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {
                "|": [{"&": [{"meta": {"key": "mark"}}, 0xFF00FFFF | (s << 16)]}, s << 16]}}}]),  # fmt: skip
        ]
    return json.dumps({"nftables": items})


def host_rules(gateways: dict) -> str:
    return json.dumps([{"priority": 0, "src": "all", "table": "255"}] + [
        {"priority": 7100 + s, "src": "all", "fwmark": hex(s << 16), "fwmask": "0xff0000",
         "table": str(7100 + s), "protocol": "250"} for s in gateways
    ])  # fmt: skip


def host_slot_routes(gateways: dict) -> str:
    return json.dumps([{"dst": "default", "gateway": str(x), "table": str(7100 + s)} for s, x in gateways.items()])


def read_node(state: NodeState) -> NodeState:
    has6 = dp.render.node_has_ipv6(state)
    return parse_node(
        host_node_nft(state, 4), host_rules(state.gateways), host_slot_routes(state.gateways),
        nft6_json=host_node_nft(state, 6) if has6 else None,
        rule6_json=host_rules(state.gateways6), route6_json=host_slot_routes(state.gateways6),
    )  # fmt: skip


# --- rendering ------------------------------------------------------------------------------------------


def test_an_ipv4_only_state_renders_exactly_one_ip_table():
    for script in (render_gateway_nft(GatewayState.build(**GW4)), render_node_nft(NodeState.build(**NODE4))):
        assert "ip6" not in script and "ipv6_addr" not in script
        assert script.startswith("table ip egressportal {}\ndelete table ip egressportal\n")


def test_gateway_ipv6_table():
    script = render_gateway_nft(GatewayState.build(**GW6))
    v4, _, v6 = script.partition("table ip6 egressportal {}\n")
    assert "2001:db8" not in v4 and "203.0.113.10" not in v6
    assert "    type ipv6_addr : ipv6_addr\n" in v6
    assert "elements = { 2001:db8:10:1::/64 : 2001:db8:0:2::10,\n" in v6
    assert "2001:db8:10:2::5/128 : 2001:db8:0:2::11 }" in v6
    assert 'oifname "eth1" snat ip6 to ip6 saddr map @snat_by_source' in v6
    assert 'oifname "eth1" ip6 saddr @guarded_sources ip6 saddr != @mapped_sources drop' in v6
    assert "elements = { 2001:db8:0:2::10,\n" in v6  # egress_addresses


def test_node_ipv6_table_same_marks():
    script = render_node_nft(NodeState.build(**NODE6))
    _, _, v6 = script.partition("table ip6 egressportal {}\n")
    assert "ip6 daddr != @internal ip6 saddr vmap @mark_by_source" in v6
    assert "2001:db8:10:1::/64 : goto mark_slot_1" in v6
    assert "meta mark set meta mark & 0xff00ffff | 0x00020000" in v6


def test_plans_put_ipv6_commands_in_their_own_batch_in_make_before_break_order():
    plan = plan_gateway(None, GatewayState.build(**{**GW6, "pools": ["203.0.113.0/24", "2001:db8:0:2::/64"]}))
    # IPv6 anyIP: the pool route and one proxy NDP entry per address, before the nft transaction that SNATs
    # to them (nothing to guard: the kernel answers solicitations for its proxy entries only).
    assert plan.pre_ip6 == [
        "route replace local 2001:db8:0:2::/64 dev lo table 255 proto 250",
        "neigh add proxy 2001:db8:0:2::10 dev eth1 proto 250",
        "neigh add proxy 2001:db8:0:2::11 dev eth1 proto 250",
        "route replace 2001:db8:10:1::/64 via 2001:db8:0:1::11 proto 250",
    ]
    assert all("2001:" not in line for line in plan.pre_ip)
    assert [argv[:3] for argv, _ in plan.steps()] == [
        ["sysctl", "-q", "-w"], ["ip", "-batch", "-"], ["ip", "-6", "-batch"], ["nft", "-f", "-"],
        ["ip", "-batch", "-"],
    ]
    assert plan.announce[:3] == ("sh", "-c", dp.render.ANNOUNCE_SCRIPT)
    assert plan.sysctl == dp.ndp_sysctl_argv("eth1") == (
        "sysctl", "-q", "-w", "net/ipv6/conf/eth1/proxy_ndp=1", "net/ipv6/neigh/eth1/proxy_delay=0"
    )
    assert plan.post_ip == ["route replace local 203.0.113.0/24 dev lo table 255 proto 250"]  # IPv4: anyIP
    # ARP for the IPv4 address, an unsolicited neighbour advertisement for each IPv6 one.
    assert plan.announce[-3:] == ("203.0.113.10", "2001:db8:0:2::10", "2001:db8:0:2::11")
    # A desired IPv6 address outside the pools is refused (it would be answered but not local).
    with pytest.raises(DataplaneValueError, match="2001:db8:0:2::10 lies in none of this gateway's pools"):
        plan_gateway(None, GatewayState.build(**{**GW6, "pools": ["203.0.113.0/24", "2001:db8:0:3::/64"]}))
    node = plan_node(None, NodeState.build(**NODE6))
    assert node.pre_ip6 == [
        "route replace default via 2001:db8:0:1::2 table 7101 proto 250",
        "rule add fwmark 0x10000/0xff0000 lookup 7101 priority 7101 protocol 250",
        "route replace default via 2001:db8:0:1::3 table 7102 proto 250",
        "rule add fwmark 0x20000/0xff0000 lookup 7102 priority 7102 protocol 250",
    ]
    assert "+2 IPv6 gateways" in node.changes


def test_removing_every_ipv6_entry_drops_the_ip6_table_after_the_ip_commands():
    actual, desired = GatewayState.build(**GW6), GatewayState.build(**GW4)
    plan = plan_gateway(actual, desired)
    assert plan.post_ip6 == [
        "neigh del proxy 2001:db8:0:2::10 dev eth1",
        "neigh del proxy 2001:db8:0:2::11 dev eth1",
        "route del local 2001:db8:0:2::10/127 dev lo table 255 proto 250",  # the two /128 pools, collapsed
        "route del 2001:db8:10:1::/64 via 2001:db8:0:1::11 proto 250",
    ]
    # The nft step stops SNAT to them and drops the ip6 table (proxy entries are their own record: proto
    # 250), then the proxy entries and pool routes go.
    assert plan.nft.endswith("table ip6 egressportal {}\ndelete table ip6 egressportal\n")
    assert plan.post_nft is None
    assert [argv[1] for argv, _ in plan.steps()] == ["-f", "-6"]
    # The old layout's /128s stay recorded until post_ip6 removed them; the record written afterwards
    # drops the table.
    old = GatewayState.build(**{**GW6, "legacy_addresses": ["2001:db8:0:2::10", "2001:db8:0:2::11"]})
    plan = plan_gateway(old, desired)
    assert plan.post_ip6[:2] == ["addr del 2001:db8:0:2::10/128 dev eth1", "addr del 2001:db8:0:2::11/128 dev eth1"]
    assert "table ip6 egressportal {\n" in plan.nft
    assert plan.post_nft.endswith("table ip6 egressportal {}\ndelete table ip6 egressportal\n")
    node = plan_node(NodeState.build(**NODE6), NodeState.build(**NODE4))
    assert node.nft.endswith("table ip6 egressportal {}\ndelete table ip6 egressportal\n")
    assert node.post_ip6 == [
        "rule del fwmark 0x10000/0xff0000 lookup 7101 priority 7101 protocol 250",
        "route del default via 2001:db8:0:1::2 table 7101 proto 250",
        "rule del fwmark 0x20000/0xff0000 lookup 7102 priority 7102 protocol 250",
        "route del default via 2001:db8:0:1::3 table 7102 proto 250",
    ]


def test_ipv4_plans_unchanged_by_ipv6_support():
    plan = plan_gateway(GatewayState.build(**GW4), GatewayState.build(**{**GW4, "addresses": ["203.0.113.11"],
                                                                         "snat": {"198.19.1.0/24": "203.0.113.11"}}))
    assert plan.pre_ip6 == plan.post_ip6 == [] and "ip6" not in plan.nft and "ip6" not in plan.post_nft
    assert [argv[:2] for argv, _ in plan.steps()] == [["nft", "-f"], ["ip", "-batch"], ["nft", "-f"]]


def test_decommission_removes_both_families():
    plan = plan_gateway_decommission(GatewayState.build(**GW6), table_exists=True)
    assert plan.pre_ip6 == [
        "neigh del proxy 2001:db8:0:2::10 dev eth1",
        "neigh del proxy 2001:db8:0:2::11 dev eth1",
        "route del local 2001:db8:0:2::10/127 dev lo table 255 proto 250",  # the two /128 pools, collapsed
        "route del 2001:db8:10:1::/64 via 2001:db8:0:1::11 proto 250",
    ]
    assert plan.nft == (
        "delete table ip egressportal\ntable arp egressportal {}\ndelete table arp egressportal\n"
        "table ip6 egressportal {}\ndelete table ip6 egressportal\n"
    )
    # An empty ip6 table left alone: still removed.
    only6 = plan_gateway_decommission(GatewayState.build(public_interface="eth1"), table_exists=False, table6_exists=True)
    assert only6.nft.endswith("table ip6 egressportal {}\ndelete table ip6 egressportal\n")
    assert plan_gateway_decommission(GatewayState.build(public_interface="eth1"), table_exists=False).is_empty


def test_unrouted6_is_never_desired():
    with pytest.raises(DataplaneValueError, match=":: is not a valid gateway transit address"):
        plan_node(None, NodeState.build(gateways6={1: "::"}))


# --- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [GW4, GW6, {**GW6, "snat": {}, "addresses": ["2001:db8:0:2::10"]}])
def test_gateway_round_trip(spec):
    state = GatewayState.build(**spec)
    assert read_gateway(state) == state
    assert plan_gateway(read_gateway(state), state).is_empty


@pytest.mark.parametrize("spec", [NODE4, NODE6, {**NODE6, "steering": {}}])
def test_node_round_trip(spec):
    state = NodeState.build(**spec)
    assert read_node(state) == state
    assert plan_node(read_node(state), state).is_empty


def test_parse_ipv6_rule_without_route_is_unrouted6_and_repaired_by_route_only():
    state = NodeState.build(**NODE6)
    actual = parse_node(
        host_node_nft(state, 4), host_rules(state.gateways), host_slot_routes(state.gateways),
        nft6_json=host_node_nft(state, 6), rule6_json=host_rules(state.gateways6),
        route6_json=host_slot_routes({1: state.gateways6[1]}),
    )  # fmt: skip
    assert actual.gateways6[2] == dp.UNROUTED6
    assert plan_node(actual, state).pre_ip6 == ["route replace default via 2001:db8:0:1::3 table 7102 proto 250"]


def test_a_broken_ipv6_guard_is_reported_absent():
    state = GatewayState.build(**GW6)
    doc = json.loads(host_gateway_nft(state, 6))
    doc["nftables"] = [i for i in doc["nftables"] if i.get("rule", {}).get("chain") != "forward"]
    got = parse_gateway(
        host_gateway_nft(state, 4), host_gateway_addr(state, 4), "[]", "eth1",
        nft6_json=json.dumps(doc), addr6_json=host_gateway_addr(state, 6), route6_json="[]",
    )  # fmt: skip
    assert all(n.version == 4 for n in got.guarded_sources)
    assert "guarded sources 2" in plan_gateway(got, replace_routes(state, got)).changes


def replace_routes(state: GatewayState, got: GatewayState) -> GatewayState:
    return GatewayState.build(
        public_interface=state.public_interface, addresses=state.addresses, snat=state.snat,
        return_routes=got.return_routes, guarded_sources=state.guarded_sources,
    )  # fmt: skip


def test_an_ipv6_snat_to_an_address_the_host_lacks_is_not_reported():
    state = GatewayState.build(**GW6)
    got = parse_gateway(
        host_gateway_nft(state, 4), host_gateway_addr(state, 4), "[]", "eth1",
        nft6_json=host_gateway_nft(state, 6), addr6_json="[]", route6_json="[]",
    )  # fmt: skip
    assert all(k.version == 4 for k in got.snat) and all(a.version == 4 for a in got.addresses)


# --- hostile values -------------------------------------------------------------------------------------

HOSTILE = ["2001:db8::1; reboot", "$(reboot)", "2001:db8::1\nflush ruleset", "2001:db8::1 }", "`id`", "::ffff:0:0"]


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize(
    "field",
    ["address", "snat_key", "snat_value", "route_key", "route_value", "guarded", "steer", "gw6", "internal", "iface"],
)
def test_injection_in_every_state_field_is_refused(field, bad):
    build = {
        "address": lambda: GatewayState.build(public_interface="eth1", addresses=[bad]),
        "snat_key": lambda: GatewayState.build(public_interface="eth1", addresses=["2001:db8::1"],
                                               snat={bad: "2001:db8::1"}),
        "snat_value": lambda: GatewayState.build(public_interface="eth1", addresses=[bad],
                                                 snat={"2001:db8:10::/64": bad}),
        "route_key": lambda: GatewayState.build(public_interface="eth1", return_routes={bad: "2001:db8::2"}),
        "route_value": lambda: GatewayState.build(public_interface="eth1", return_routes={"2001:db8:10::/64": bad}),
        "guarded": lambda: GatewayState.build(public_interface="eth1", guarded_sources=[bad]),
        "steer": lambda: NodeState.build(steering={bad: 1}, gateways6={1: "2001:db8::2"}),
        "gw6": lambda: NodeState.build(gateways6={1: bad}),
        "internal": lambda: NodeState.build(internal=[bad]),
        "iface": lambda: GatewayState.build(public_interface=bad, addresses=["2001:db8::1"]),
    }[field]
    with pytest.raises(DataplaneValueError):
        build()


@pytest.mark.parametrize("bad", HOSTILE + ["fe80::1", "2001:db8::/8"])
def test_hostile_host_output_is_a_parse_error(bad):
    state = GatewayState.build(**GW6)
    nft = host_gateway_nft(state, 6).replace('"2001:db8:0:2::10"', json.dumps(bad))
    with pytest.raises(DataplaneParseError):
        parse_gateway(None, "[]", "[]", "eth1", nft6_json=nft, addr6_json="[]", route6_json="[]")
    with pytest.raises(DataplaneParseError):
        parse_gateway(None, "[]", "[]", "eth1",
                      route6_json=json.dumps([{"dst": bad, "gateway": "2001:db8:0:1::11"}]))  # fmt: skip
    with pytest.raises(DataplaneParseError):
        parse_node(None, "[]", "[]", rule6_json=host_rules({1: 0}),
                   route6_json=json.dumps([{"dst": "default", "gateway": bad, "table": "7101"}]))  # fmt: skip
    with pytest.raises(DataplaneParseError):
        parse_node(None, "[]", "[]", nft6_json=host_node_nft(NodeState.build(**NODE6), 6).replace(
            '"2001:db8:10:1::"', json.dumps(bad)))  # fmt: skip


def test_an_ipv4_table_listed_as_ipv6_is_refused():
    # The ip6 read must only ever see family ip6 objects (and vice versa).
    with pytest.raises(DataplaneParseError, match="outside table ip6 egressportal"):
        parse_gateway(None, "[]", "[]", "eth1", nft6_json=host_gateway_nft(GatewayState.build(**GW4), 4))
    with pytest.raises(DataplaneParseError, match="outside table ip egressportal"):
        parse_gateway(host_gateway_nft(GatewayState.build(**GW6), 6), "[]", "[]", "eth1")


# --- the IPv6 anyIP read-back: proxy entries and proxy NDP sysctls ------------------------------------------

POOLED = {**GW6, "pools": ["203.0.113.0/24", "2001:db8:0:2::/64"]}


def read_pooled(state: GatewayState, *, proxy6: str | None = None, ndp: str | None = NDP_ON) -> GatewayState:
    return parse_gateway(
        host_gateway_nft(state, 4), host_gateway_addr(state, 4), host_routes(state.return_routes, 4, state.pools),
        "eth1", nft6_json=host_gateway_nft(state, 6), arp_json=host_gateway_arp(state),
        addr6_json=host_gateway_addr(state, 6), route6_json=host_routes(state.return_routes, 6, state.pools),
        proxy6_json=host_proxy6(state) if proxy6 is None else proxy6, ndp_text=ndp,
    )  # fmt: skip


def test_ipv6_pools_count_only_while_proxy_ndp_answers_at_once():
    state = GatewayState.build(**POOLED)
    assert read_pooled(state) == state
    for ndp in (None, "", "0\n0\n", "1\n80\n", "1\n"):
        got = read_pooled(state, ndp=ndp)
        assert all(p.version == 4 for p in got.pools) and got.addresses == state.addresses
        plan = plan_gateway(got, state)
        assert plan.sysctl == dp.ndp_sysctl_argv("eth1")
        assert plan.pre_ip6 == ["route replace local 2001:db8:0:2::/64 dev lo table 255 proto 250"]


def test_only_our_proxy_entries_count_and_a_stray_one_is_removed():
    state = GatewayState.build(**POOLED)
    entries = json.loads(host_proxy6(state)) + [
        {"dst": "2001:db8:0:2::50", "proxy": None, "protocol": "250"},  # ours, not wanted here
        {"dst": "2001:db8:0:2::51", "proxy": None, "protocol": "4"},  # another owner's
        {"dst": "2001:db8:0:2::52", "dev": "eth9", "proxy": None, "protocol": "250"},  # another interface
    ]
    got = read_pooled(state, proxy6=json.dumps(entries))
    assert {str(a) for a in got.addresses if a.version == 6} == {"2001:db8:0:2::10", "2001:db8:0:2::11", "2001:db8:0:2::50"}
    assert plan_gateway(got, state).post_ip6 == ["neigh del proxy 2001:db8:0:2::50 dev eth1"]


@pytest.mark.parametrize("bad", HOSTILE + ["fe80::1", "2001:db8::/64", None, 7])
def test_hostile_proxy_output_is_a_parse_error(bad):
    with pytest.raises(DataplaneParseError):
        parse_gateway(None, "[]", "[]", "eth1", proxy6_json=json.dumps([{"dst": bad, "proxy": None, "protocol": "250"}]))
    with pytest.raises(DataplaneParseError):
        parse_gateway(None, "[]", "[]", "eth1", proxy6_json=json.dumps({"dst": "2001:db8::1"}))

"""Unit tests of the dataplane: validation, state model, rendering, planning, parsing (no server needed)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address

import pytest

import egressportal.dataplane.render as dp_render
from egressportal.dataplane import (
    ANNOUNCE_MAX,
    UNROUTED,
    DataplaneParseError,
    DataplaneValueError,
    GatewayState,
    NodeState,
    announce_argv,
    gateway_read_commands,
    ip_batch_script,
    node_read_commands,
    parse_gateway,
    parse_node,
    plan_gateway,
    plan_node,
    render_gateway_ip,
    render_gateway_nft,
    render_node_ip,
    render_node_nft,
)
from egressportal.dataplane import validate as v

# Captured from nft 1.0.6 / iproute2 6.1 (ip -N -j -4) in a scratch netns after applying rendered plans. The GW_*
# ones hold the old gateway layout (a /32 per address, recorded in the ip table), as older versions wrote it.
GW_NFT_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_vers'
    'ion": 1}}, {"table": {"family": "ip", "name": "egressportal", "handle": 13}}, {"map": {"family": "ip'
    '", "name": "snat_by_source", "table": "egressportal", "type": "ipv4_addr", "handle": 3, "map": "ipv4'
    '_addr", "flags": ["interval"], "elem": [[{"prefix": {"addr": "198.19.1.0", "len": 24}}, "203.0.113.1'
    '0"], [{"prefix": {"addr": "198.19.2.0", "len": 25}}, "203.0.113.11"], ["198.19.3.5", "203.0.113.11"]'
    ']}}, {"set": {"family": "ip", "name": "mapped_sources", "table": "egressportal", "type": "ipv4_addr"'
    ', "handle": 4, "flags": ["interval"], "elem": [{"prefix": {"addr": "198.19.1.0", "len": 24}}, {"pref'
    'ix": {"addr": "198.19.2.0", "len": 25}}, "198.19.3.5"]}}, {"set": {"family": "ip", "name": "egress_a'
    'ddresses", "table": "egressportal", "type": "ipv4_addr", "handle": 5, "elem": ["203.0.113.10", "203.'
    '0.113.11"]}}, {"set": {"family": "ip", "name": "guarded_sources", "table": "egressportal", "type": "'
    'ipv4_addr", "handle": 6, "flags": ["interval"], "elem": [{"prefix": {"addr": "198.19.0.0", "len": 16'
    '}}]}}, {"chain": {"family": "ip", "table": "egressportal", "name": "postrouting", "handle": 1, "type'
    '": "nat", "hook": "postrouting", "prio": 90, "policy": "accept"}}, {"chain": {"family": "ip", "table'
    '": "egressportal", "name": "forward", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "'
    'policy": "accept"}}, {"rule": {"family": "ip", "table": "egressportal", "chain": "postrouting", "han'
    'dle": 7, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}}, {"'
    'snat": {"addr": {"map": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@snat_by'
    '_source"}}}}]}}, {"rule": {"family": "ip", "table": "egressportal", "chain": "forward", "handle": 8,'
    ' "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}}, {"match": '
    '{"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@guarded_sources"}'
    '}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@mapp'
    'ed_sources"}}, {"drop": null}]}}]}'
)
GW_ADDR_JSON = (
    '[{"ifindex":3,"link":"eth0p","ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu"'
    ':1500,"qdisc":"noqueue","operstate":"UP","group":"0","txqlen":1000,"addr_info":[{"family":"inet","lo'
    'cal":"198.51.100.2","prefixlen":24,"scope":"0","label":"eth0","valid_life_time":4294967295,"preferre'
    'd_life_time":4294967295},{"family":"inet","local":"203.0.113.10","prefixlen":32,"scope":"0","label":'
    '"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"203.'
    '0.113.11","prefixlen":32,"scope":"0","label":"eth0","valid_life_time":4294967295,"preferred_life_tim'
    'e":4294967295}]}]'
)
GW_ROUTES_JSON = (
    '[{"dst":"198.19.1.0/24","gateway":"198.18.0.11","dev":"transit0","flags":[]},{"dst":"198.19.2.0/24",'
    '"gateway":"198.18.0.12","dev":"transit0","flags":[]}]'
)
# The anyIP layout, captured the same way (plan_gateway(None, gw()) applied, then gateway_read_commands).
GW_ANYIP_NFT_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_vers'
    'ion": 1}}, {"table": {"family": "ip", "name": "egressportal", "handle": 2}}, {"map": {"family": "ip"'
    ', "name": "snat_by_source", "table": "egressportal", "type": "ipv4_addr", "handle": 3, "map": "ipv4_'
    'addr", "flags": ["interval"], "elem": [[{"prefix": {"addr": "198.19.1.0", "len": 24}}, "203.0.113.10'
    '"], [{"prefix": {"addr": "198.19.2.0", "len": 25}}, "203.0.113.11"], ["198.19.3.5", "203.0.113.11"]]'
    '}}, {"set": {"family": "ip", "name": "mapped_sources", "table": "egressportal", "type": "ipv4_addr",'
    ' "handle": 4, "flags": ["interval"], "elem": [{"prefix": {"addr": "198.19.1.0", "len": 24}}, {"prefi'
    'x": {"addr": "198.19.2.0", "len": 25}}, "198.19.3.5"]}}, {"set": {"family": "ip", "name": "guarded_s'
    'ources", "table": "egressportal", "type": "ipv4_addr", "handle": 5, "flags": ["interval"], "elem": ['
    '{"prefix": {"addr": "198.19.0.0", "len": 16}}]}}, {"chain": {"family": "ip", "table": "egressportal"'
    ', "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 90, "policy": "a'
    'ccept"}}, {"chain": {"family": "ip", "table": "egressportal", "name": "forward", "handle": 2, "type"'
    ': "filter", "hook": "forward", "prio": 0, "policy": "accept"}}, {"rule": {"family": "ip", "table": "'
    'egressportal", "chain": "postrouting", "handle": 6, "expr": [{"match": {"op": "==", "left": {"meta":'
    ' {"key": "oifname"}}, "right": "eth0"}}, {"snat": {"addr": {"map": {"key": {"payload": {"protocol": '
    '"ip", "field": "saddr"}}, "data": "@snat_by_source"}}}}]}}, {"rule": {"family": "ip", "table": "egre'
    'ssportal", "chain": "forward", "handle": 7, "expr": [{"match": {"op": "==", "left": {"meta": {"key":'
    ' "oifname"}}, "right": "eth0"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "fiel'
    'd": "saddr"}}, "right": "@guarded_sources"}}, {"match": {"op": "!=", "left": {"payload": {"protocol"'
    ': "ip", "field": "saddr"}}, "right": "@mapped_sources"}}, {"drop": null}]}}]}'
)
GW_ANYIP_ARP_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_vers'
    'ion": 1}}, {"table": {"family": "arp", "name": "egressportal", "handle": 4}}, {"set": {"family": "ar'
    'p", "name": "pool_prefixes", "table": "egressportal", "type": "ipv4_addr", "handle": 2, "flags": ["i'
    'nterval"], "elem": [{"prefix": {"addr": "203.0.113.10", "len": 31}}]}}, {"set": {"family": "arp", "n'
    'ame": "egress_addresses", "table": "egressportal", "type": "ipv4_addr", "handle": 3, "elem": ["203.0'
    '.113.10", "203.0.113.11"]}}, {"chain": {"family": "arp", "table": "egressportal", "name": "input", "'
    'handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"rule": {"family": '
    '"arp", "table": "egressportal", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left'
    '": {"payload": {"protocol": "arp", "field": "operation"}}, "right": "request"}}, {"match": {"op": "='
    '=", "left": {"payload": {"protocol": "arp", "field": "daddr ip"}}, "right": "@pool_prefixes"}}, {"ma'
    'tch": {"op": "!=", "left": {"payload": {"protocol": "arp", "field": "daddr ip"}}, "right": "@egress_'
    'addresses"}}, {"drop": null}]}}]}'
)
GW_ANYIP_ADDR_JSON = (
    '[{"ifindex":3,"link":"eth0p","ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu"'
    ':1500,"qdisc":"noqueue","operstate":"UP","group":"0","txqlen":1000,"addr_info":[{"family":"inet","lo'
    'cal":"198.51.100.2","prefixlen":24,"scope":"0","label":"eth0","valid_life_time":4294967295,"preferre'
    'd_life_time":4294967295}]}]'
)
GW_ANYIP_ROUTES_JSON = (
    '[{"dst":"198.19.1.0/24","gateway":"198.18.0.11","dev":"transit0","flags":[]},{"dst":"198.19.2.0/24",'
    '"gateway":"198.18.0.12","dev":"transit0","flags":[]},{"type":"2","dst":"203.0.113.10/31","dev":"lo",'
    '"table":"255","scope":"254","flags":[]}]'
)
NODE_NFT_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_vers'
    'ion": 1}}, {"table": {"family": "ip", "name": "egressportal", "handle": 16}}, {"map": {"family": "ip'
    '", "name": "mark_by_source", "table": "egressportal", "type": "ipv4_addr", "handle": 4, "map": "verd'
    'ict", "flags": ["interval"], "elem": [[{"prefix": {"addr": "198.19.1.0", "len": 24}}, {"goto": {"tar'
    'get": "mark_slot_1"}}], [{"prefix": {"addr": "198.19.2.0", "len": 25}}, {"goto": {"target": "mark_sl'
    'ot_2"}}]]}}, {"set": {"family": "ip", "name": "internal", "table": "egressportal", "type": "ipv4_add'
    'r", "handle": 5, "flags": ["interval"], "elem": [{"prefix": {"addr": "198.19.0.0", "len": 16}}, {"pr'
    'efix": {"addr": "198.18.250.0", "len": 24}}, {"prefix": {"addr": "198.18.0.0", "len": 24}}]}}, {"chai'
    'n": {"family": "ip", "table": "egressportal", "name": "mark_slot_1", "handle": 1}}, {"chain": {"fami'
    'ly": "ip", "table": "egressportal", "name": "mark_slot_2", "handle": 2}}, {"chain": {"family": "ip",'
    ' "table": "egressportal", "name": "prerouting", "handle": 3, "type": "filter", "hook": "prerouting",'
    ' "prio": -150, "policy": "accept"}}, {"rule": {"family": "ip", "table": "egressportal", "chain": "ma'
    'rk_slot_1", "handle": 6, "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"&"'
    ': [{"meta": {"key": "mark"}}, 4278321151]}, 65536]}}}]}}, {"rule": {"family": "ip", "table": "egress'
    'portal", "chain": "mark_slot_2", "handle": 7, "expr": [{"mangle": {"key": {"meta": {"key": "mark"}},'
    ' "value": {"|": [{"&": [{"meta": {"key": "mark"}}, 4278386687]}, 131072]}}}]}}, {"rule": {"family": '
    '"ip", "table": "egressportal", "chain": "prerouting", "handle": 8, "expr": [{"match": {"op": "!=", "'
    'left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@internal"}}, {"vmap": {"key": {'
    '"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@mark_by_source"}}]}}]}'
)
NODE_RULES_JSON = (
    '[{"priority":0,"src":"all","table":"255"},{"priority":7101,"src":"all","fwmark":"0x10000","fwmask":"'
    '0xff0000","table":"7101","protocol":"250"},{"priority":7102,"src":"all","fwmark":"0x20000","fwmask":'
    '"0xff0000","table":"7102","protocol":"250"},{"priority":7103,"src":"all","fwmark":"0x30000","fwmask"'
    ':"0xff0000","table":"7103","protocol":"250"},{"priority":32766,"src":"all","table":"254"},{"priority'
    '":32767,"src":"all","table":"253"}]'
)
NODE_ROUTES_JSON = (
    '[{"dst":"default","gateway":"198.18.0.1","dev":"transit0","table":"7101","flags":[]},{"dst":"default'
    '","gateway":"198.18.0.2","dev":"transit0","table":"7102","flags":[]},{"dst":"default","gateway":"198'
    '.18.0.3","dev":"transit0","table":"7103","flags":[]},{"dst":"198.19.2.0/24","gateway":"198.18.0.13",'
    '"dev":"transit0","flags":[]}]'
)
RANGE_SET_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_vers'
    'ion": 1}}, {"table": {"family": "ip", "name": "egressportal", "handle": 6}}, {"set": {"family": "ip"'
    ', "name": "internal", "table": "egressportal", "type": "ipv4_addr", "handle": 1, "flags": ["interval'
    '"], "elem": [{"range": ["198.18.20.1", "198.18.20.6"]}, {"range": ["198.18.21.0", "198.18.21.255"]}, {"prefix": '
    '{"addr": "198.18.22.0", "len": 25}}, {"prefix": {"addr": "198.18.22.128", "len": 25}}]}}]}'
)


def gw(**kw) -> GatewayState:
    base = dict(
        public_interface="eth0",
        addresses=["203.0.113.10", "203.0.113.11"],
        snat={"198.19.1.0/24": "203.0.113.10", "198.19.2.0/25": "203.0.113.11", "198.19.3.5/32": "203.0.113.11"},
        return_routes={"198.19.1.0/24": "198.18.0.11", "198.19.2.0/24": "198.18.0.12"},
        guarded_sources=["198.19.0.0/16"],
    )
    base.update(kw)
    return GatewayState.build(**base)


def node(**kw) -> NodeState:
    base = dict(
        steering={"198.19.1.0/24": 1, "198.19.2.0/25": 2},
        gateways={1: "198.18.0.1", 2: "198.18.0.2", 3: "198.18.0.3"},
        internal=["198.19.0.0/16", "198.18.250.0/24", "198.18.0.0/24"],
    )
    base.update(kw)
    return NodeState.build(**base)


HOSTILE = ["eth0; rm -rf /", "$(reboot)", "eth0\n", "eth 0", 'eth0"', "eth0'", "éth0", "`id`", "", ".", "..",
           "a" * 16, "eth0\x00", "eth0|x"]  # fmt: skip


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_interface_names_rejected(name):
    with pytest.raises(DataplaneValueError):
        v.interface_name(name)
    with pytest.raises(DataplaneValueError):
        gw(public_interface=name)


@pytest.mark.parametrize("name", ["eth0", "ens3.100", "bond0-pub", "a" * 15, "wg_0"])
def test_valid_interface_names(name):
    assert v.interface_name(name) == name


@pytest.mark.parametrize("value", ["198.18.20.1; reboot", "$(reboot)", "198.18.20.1\n", " 198.18.20.1", "１.2.3.4",
                                   "010.0.0.1", "198.18.20.256", "10.0.0", 167772161, None])  # fmt: skip
def test_bad_addresses_rejected(value):
    with pytest.raises(DataplaneValueError):
        v.ipv4_address(value)


@pytest.mark.parametrize("value", ["2001:db8::1", IPv6Address("::1")])
def test_ipv6_address_rejected_with_clear_message(value):
    with pytest.raises(DataplaneValueError, match="IPv6 is not supported"):
        v.ipv4_address(value)


def test_ipv6_network_rejected():
    with pytest.raises(DataplaneValueError, match="IPv6 is not supported"):
        v.ipv4_network("2001:db8::/64")
    # States take IPv6 too, as strictly: a /8 is broader than any pod network.
    with pytest.raises(DataplaneValueError, match="prefix shorter than /16"):
        gw(guarded_sources=["fd00::/8"])


def test_network_with_host_bits_is_an_error():
    with pytest.raises(DataplaneValueError, match="host bits set.*198.19.1.0/24"):
        v.ipv4_network("198.19.1.7/24")
    with pytest.raises(DataplaneValueError):
        gw(snat={"198.19.1.7/24": "203.0.113.10"})


def test_network_accepts_plain_address_as_host_route():
    assert v.ipv4_network("198.18.20.1") == IPv4Network("198.18.20.1/32")


@pytest.mark.parametrize("value", [0, 251, -1, True, "1", 1.0, None])
def test_slot_range(value):
    with pytest.raises(DataplaneValueError):
        v.slot(value)


def test_errors_are_value_errors():
    assert issubclass(DataplaneValueError, ValueError)
    assert issubclass(DataplaneParseError, DataplaneValueError)


# --- model -------------------------------------------------------------------------------------------------


def test_states_are_hashable_and_compare_by_value():
    a, b = gw(), gw(snat=dict(reversed(list(gw().snat.items()))))
    assert a == b and hash(a) == hash(b)
    assert {a, b} == {a}
    assert node() == node() and hash(node()) == hash(node())
    assert gw() != gw(addresses=["203.0.113.10", "203.0.113.11", "203.0.113.12"])


def test_states_are_immutable():
    state = gw()
    with pytest.raises(AttributeError):
        state.public_interface = "eth1"  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.snat[IPv4Network("198.18.66.0/24")] = IPv4Address("203.0.113.10")  # type: ignore[index]


def test_direct_construction_validates_too():
    with pytest.raises(DataplaneValueError):
        GatewayState("eth0;x", frozenset(), {}, {}, frozenset())  # type: ignore[arg-type]


def test_snat_target_must_be_held_by_gateway():
    with pytest.raises(DataplaneValueError, match="not one of this gateway's addresses"):
        gw(snat={"198.19.1.0/24": "203.0.113.99"})


def test_overlapping_sources_rejected():
    with pytest.raises(DataplaneValueError, match="overlapping"):
        gw(snat={"198.19.0.0/16": "203.0.113.10", "198.19.1.0/24": "203.0.113.11"})
    with pytest.raises(DataplaneValueError, match="overlapping"):
        node(steering={"198.19.0.0/16": 1, "198.19.1.0/24": 2})


def test_steering_needs_a_gateway_for_its_slot():
    with pytest.raises(DataplaneValueError, match="slot has no gateway"):
        node(steering={"198.19.1.0/24": 9})


def test_sets_are_collapsed():
    state = gw(guarded_sources=["198.19.0.0/25", "198.19.0.128/25", "198.19.0.0/24", "198.18.128.0/17"])
    assert state.guarded_sources == {IPv4Network("198.19.0.0/24"), IPv4Network("198.18.128.0/17")}


# --- rendering ---------------------------------------------------------------------------------------------


def test_gateway_nft_structure():
    script = render_gateway_nft(gw())
    lines = script.splitlines()
    # Atomic replace that works whether or not the table exists.
    assert lines[:3] == ["table ip egressportal {}", "delete table ip egressportal", "table ip egressportal {"]
    assert "198.19.1.0/24 : 203.0.113.10" in script
    assert 'oifname "eth0" snat ip to ip saddr map @snat_by_source' in script
    assert "type nat hook postrouting priority srcnat - 10; policy accept;" in script
    assert 'oifname "eth0" ip saddr @guarded_sources ip saddr != @mapped_sources drop' in script
    assert script.count("table ip egressportal") == 3  # the only table we write
    assert script.endswith("}\n")


def test_gateway_nft_is_deterministic():
    a = gw()
    b = gw(snat=dict(reversed(list(a.snat.items()))), addresses=["203.0.113.11", "203.0.113.10"])
    assert render_gateway_nft(a) == render_gateway_nft(b)
    script = render_gateway_nft(a)
    assert script.index("198.19.1.0/24 :") < script.index("198.19.2.0/25 :") < script.index("198.19.3.5/32 :")


def test_empty_states_render_without_empty_elements():
    for script in (render_gateway_nft(GatewayState.build(public_interface="eth0")), render_node_nft(NodeState.build())):
        assert "elements" not in script
        assert "{ }" not in script


def test_node_nft_structure():
    script = render_node_nft(node())
    assert "type ipv4_addr : verdict" in script
    assert "198.19.1.0/24 : goto mark_slot_1" in script
    assert "meta mark set meta mark & 0xff00ffff | 0x00010000" in script
    assert "meta mark set meta mark & 0xff00ffff | 0x00020000" in script
    assert "mark_slot_3" not in script  # gateway slot 3 steers nothing yet
    assert "type filter hook prerouting priority mangle; policy accept;" in script
    assert "ip daddr != @internal ip saddr vmap @mark_by_source" in script


def test_gateway_ip_commands():
    cmds = render_gateway_ip(None, gw(pools=["203.0.113.0/24"]))
    # One route for the pool (anyIP, in table local, through lo), never an address per egress IP.
    assert ["ip", "route", "replace", "local", "203.0.113.0/24", "dev", "lo", "table", "255", "proto", "250"] in cmds
    assert not any(c[1] == "addr" for c in cmds)
    assert ["ip", "route", "replace", "198.19.1.0/24", "via", "198.18.0.11", "proto", "250"] in cmds
    assert render_gateway_ip(gw(), gw()) == []


def test_gateway_nft_guards_arp_of_the_pool_in_the_same_transaction():
    script = render_gateway_nft(gw(pools=["203.0.113.0/24"]))
    ip_part, arp_part = script.split("table arp egressportal {}")
    assert "egress_addresses" not in ip_part
    assert arp_part.startswith("\ndelete table arp egressportal\ntable arp egressportal {")
    assert "elements = { 203.0.113.0/24 }" in arp_part
    assert "elements = { 203.0.113.10,\n                 203.0.113.11 }" in arp_part
    assert "type filter hook input priority filter; policy accept;" in arp_part
    assert "arp operation request arp daddr ip @pool_prefixes arp daddr ip != @egress_addresses drop" in arp_part


def test_addresses_must_lie_in_a_pool():
    with pytest.raises(DataplaneValueError, match="lies in none of this gateway's pools"):
        gw(pools=["203.0.114.0/24"])
    # build() without pools: each address is its own pool.
    assert gw().pools == {IPv4Network("203.0.113.10/31")}
    with pytest.raises(DataplaneValueError):
        gw(legacy_addresses=["203.0.113.99"])  # a legacy /32 is one of the addresses


def test_node_ip_commands():
    cmds = render_node_ip(None, node(gateways={1: "198.18.0.1"}, steering={"198.19.1.0/24": 1}))
    assert cmds == [
        ["ip", "route", "replace", "default", "via", "198.18.0.1", "table", "7101", "proto", "250"],
        ["ip", "rule", "add", "fwmark", "0x10000/0xff0000", "lookup", "7101", "priority", "7101", "protocol", "250"],
    ]


def test_ip_batch_script():
    assert ip_batch_script([["ip", "addr", "replace", "203.0.113.10/32", "dev", "eth0"], ["route", "del", "x"]]) == (
        "addr replace 203.0.113.10/32 dev eth0\nroute del x\n"
    )
    with pytest.raises(DataplaneValueError):
        ip_batch_script([["addr", "add", "1.2.3.4/32", "dev", "eth0\nreboot"]])


# --- planning ----------------------------------------------------------------------------------------------


def test_noop_plans():
    for plan in (plan_gateway(gw(), gw()), plan_node(node(), node())):
        assert plan.is_empty
        assert plan.nft is None and plan.pre_ip == [] and plan.post_ip == []
        assert plan.summary() == "no changes"
        assert plan.steps() == []


def test_gateway_plan_from_scratch():
    desired = gw(pools=["203.0.113.0/24"])
    plan = plan_gateway(None, desired)
    assert plan.pre_ip == [
        "route replace 198.19.1.0/24 via 198.18.0.11 proto 250",
        "route replace 198.19.2.0/24 via 198.18.0.12 proto 250",
    ]
    # The pool route only once the ARP guard (in the nft transaction) covers it.
    assert plan.post_ip == ["route replace local 203.0.113.0/24 dev lo table 255 proto 250"]
    assert plan.nft == render_gateway_nft(desired)
    assert plan.post_nft is None
    # The announcement is no step: the exec script starts it after the read-back.
    assert [argv[:2] for argv, _ in plan.steps()] == [["ip", "-batch"], ["nft", "-f"], ["ip", "-batch"]]
    assert plan.announce[3:] == ("announce", dp_render.NA_SENDER, "eth0", "203.0.113.10", "203.0.113.11")
    assert plan.summary() == "+2 addresses, +1 pool route, snat 0->3 entries, +2 routes, guarded sources 1"


def test_gateway_plan_is_make_before_break():
    desired = gw(
        addresses=["203.0.113.11", "203.0.113.12"],
        snat={"198.19.2.0/25": "203.0.113.11", "198.19.4.0/24": "203.0.113.12"},
        return_routes={"198.19.2.0/24": "198.18.0.13"},
        pools=["203.0.113.11/32", "203.0.113.12/32"],
    )
    plan = plan_gateway(gw(), desired)
    assert plan.pre_ip == ["route replace 198.19.2.0/24 via 198.18.0.13 proto 250"]
    assert plan.post_ip == [
        "route replace local 203.0.113.11/32 dev lo table 255 proto 250",
        "route replace local 203.0.113.12/32 dev lo table 255 proto 250",
        "route del local 203.0.113.10/31 dev lo table 255 proto 250",
        "route del 198.19.1.0/24 via 198.18.0.11 proto 250",
    ]
    # The pool route that goes stays guarded until post_ip has removed it...
    assert "203.0.113.10/31" in plan.nft.split("table arp egressportal {}")[1]
    steps = [argv[0] for argv, _ in plan.steps()]
    assert steps == ["ip", "nft", "ip", "nft"]
    # ... then the guard is rewritten without it.
    assert "203.0.113.10" not in plan.post_nft and "203.0.113.12" in plan.post_nft
    assert plan.announce[5:] == ("eth0", "203.0.113.12")
    assert plan.summary() == (
        "+1 address, -1 address, +2 pool routes, -1 pool route, snat 3->2 entries, ~1 route, -1 route"
    )


def test_gateway_plan_migrates_the_old_layout_without_a_gap():
    old = gw(legacy_addresses=["203.0.113.10", "203.0.113.11"], pools=[])
    desired = gw(pools=["203.0.113.0/24"])
    plan = plan_gateway(old, desired)
    assert plan.pre_ip == []
    # The guard first (nft), then in one batch that stops at the first failure: the pool route, and only
    # then the /32s it now covers.
    assert plan.post_ip == [
        "route replace local 203.0.113.0/24 dev lo table 255 proto 250",
        "addr del 203.0.113.10/32 dev eth0",
        "addr del 203.0.113.11/32 dev eth0",
    ]
    assert plan.nft == render_gateway_nft(desired)
    assert plan.post_nft is None and plan.announce == ()  # same gateway, same MAC: nothing to announce
    assert plan.summary() == "+1 pool route, 2 /32 addresses moved to pool routes"
    with pytest.raises(DataplaneValueError, match="old layout"):
        plan_gateway(None, old)


def test_announce_is_bounded():
    many = [IPv4Address("203.0.112.0") + i for i in range(ANNOUNCE_MAX + 5)]
    many6 = [IPv6Address("2001:db8:0:2:e::") + i for i in range(ANNOUNCE_MAX + 5)]
    argv = announce_argv("eth0", many)
    assert len(argv) == 6 + ANNOUNCE_MAX and argv[6] == "203.0.112.0"
    # At most ANNOUNCE_MAX of each family: ARP for IPv4, an unsolicited neighbour advertisement for IPv6.
    both = announce_argv("eth0", many6 + many)
    assert len(both) == 6 + 2 * ANNOUNCE_MAX and both[6] == "203.0.112.0" and both[6 + ANNOUNCE_MAX] == "2001:db8:0:2:e::"
    assert announce_argv("eth0", []) == ()


def test_gateway_route_only_change_skips_nft():
    plan = plan_gateway(gw(), gw(return_routes={"198.19.1.0/24": "198.18.0.11"}))
    assert plan.nft is None
    assert plan.post_ip == ["route del 198.19.2.0/24 via 198.18.0.12 proto 250"]


def test_node_plan_ordering():
    desired = node(steering={"198.19.1.0/24": 3}, gateways={3: "198.18.0.4"})
    plan = plan_node(node(), desired)
    assert plan.pre_ip == ["route replace default via 198.18.0.4 table 7103 proto 250"]
    assert plan.post_ip == [
        "rule del fwmark 0x10000/0xff0000 lookup 7101 priority 7101 protocol 250",
        "route del default via 198.18.0.1 table 7101 proto 250",
        "rule del fwmark 0x20000/0xff0000 lookup 7102 priority 7102 protocol 250",
        "route del default via 198.18.0.2 table 7102 proto 250",
    ]
    assert plan.nft is not None


def test_node_plan_new_standby_gateway_does_not_touch_nft():
    plan = plan_node(node(), node(gateways={1: "198.18.0.1", 2: "198.18.0.2", 3: "198.18.0.3", 4: "198.18.0.9"}))
    assert plan.nft is None
    assert plan.pre_ip == [
        "route replace default via 198.18.0.9 table 7104 proto 250",
        "rule add fwmark 0x40000/0xff0000 lookup 7104 priority 7104 protocol 250",
    ]


def test_node_plan_unrouted_slot_readds_route_not_rule():
    actual = node(gateways={1: "198.18.0.1", 2: UNROUTED, 3: "198.18.0.3"})
    plan = plan_node(actual, node())
    assert plan.pre_ip == ["route replace default via 198.18.0.2 table 7102 proto 250"]
    with pytest.raises(DataplaneValueError):
        plan_node(None, actual)


# --- parsing -----------------------------------------------------------------------------------------------


def test_parse_real_gateway_output():
    state = parse_gateway(
        GW_ANYIP_NFT_JSON, GW_ANYIP_ADDR_JSON, GW_ANYIP_ROUTES_JSON, "eth0", arp_json=GW_ANYIP_ARP_JSON
    )
    assert state == gw()
    assert plan_gateway(state, gw()).is_empty


def test_parse_old_layout_output_reports_legacy_addresses():
    state = parse_gateway(GW_NFT_JSON, GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state == gw(legacy_addresses=["203.0.113.10", "203.0.113.11"], pools=[])
    assert plan_gateway(state, gw()).post_ip[-2:] == ["addr del 203.0.113.10/32 dev eth0", "addr del 203.0.113.11/32 dev eth0"]


def test_parse_pool_addresses_count_only_behind_an_intact_arp_guard():
    args = (GW_ANYIP_NFT_JSON, GW_ANYIP_ADDR_JSON, GW_ANYIP_ROUTES_JSON, "eth0")
    assert parse_gateway(*args, arp_json=None).addresses == set()  # no guard: not held
    doc = json.loads(GW_ANYIP_ARP_JSON)
    rule = next(o["rule"] for o in doc["nftables"] if "rule" in o)
    rule["expr"][2]["match"]["op"] = "=="  # someone "fixed" the guard: it now drops the wrong requests
    assert parse_gateway(*args, arp_json=json.dumps(doc)).addresses == set()
    # A pool route the guard does not cover (added by hand, or left over): the guard is not what we wrote.
    routes = json.loads(GW_ANYIP_ROUTES_JSON) + [{"type": "2", "dst": "203.0.113.64/26", "dev": "lo", "table": "255"}]
    state = parse_gateway(*args[:2], json.dumps(routes), "eth0", arp_json=GW_ANYIP_ARP_JSON)
    assert state.addresses == set() and IPv4Network("203.0.113.64/26") in state.pools
    assert "route del local 203.0.113.64/26 dev lo table 255 proto 250" in plan_gateway(state, gw()).post_ip


def test_parse_real_node_output():
    state = parse_node(NODE_NFT_JSON, NODE_RULES_JSON, NODE_ROUTES_JSON)
    assert state == node()
    by_table = {7101: json.dumps([r for r in json.loads(NODE_ROUTES_JSON) if r.get("table") == "7101"])}
    gateways = parse_node(NODE_NFT_JSON, NODE_RULES_JSON, by_table).gateways
    assert gateways == {1: IPv4Address("198.18.0.1"), 2: UNROUTED, 3: UNROUTED}


def test_parse_missing_table():
    state = parse_gateway(None, GW_ADDR_JSON, "[]", "eth0")
    # Addresses on the interface that are not recorded in our table are not ours.
    assert state == GatewayState.build(public_interface="eth0")
    assert parse_node("", "[]", {}) == NodeState.build()


def test_parse_ranges_and_adjacent_prefixes():
    doc = json.loads(RANGE_SET_JSON)
    state = parse_node(json.dumps(doc), "[]", {})
    assert state.internal == {
        IPv4Network("198.18.20.1/32"), IPv4Network("198.18.20.2/31"),
        IPv4Network("198.18.20.4/31"), IPv4Network("198.18.20.6/32"),
        IPv4Network("198.18.21.0/24"), IPv4Network("198.18.22.0/24"),
    }  # fmt: skip


def test_parse_ignores_foreign_rules_and_routes():
    rules = json.loads(NODE_RULES_JSON) + [
        {"priority": 7105, "src": "all", "fwmark": "0x50000", "fwmask": "0xff0000", "table": "7105"},  # not proto 250
        {"priority": 100, "src": "198.18.20.0", "srclen": 8, "table": "100", "protocol": "250"},
    ]
    state = parse_node(NODE_NFT_JSON, json.dumps(rules), NODE_ROUTES_JSON)
    assert set(state.gateways) == {1, 2, 3}


def _edit_nft(text: str, fn) -> str:
    doc = json.loads(text)
    fn(doc["nftables"])
    return json.dumps(doc)


def test_tampered_snat_rule_parses_as_no_snat_and_no_guard():
    def drop_snat_rule(items):
        items[:] = [i for i in items if i.get("rule", {}).get("chain") != "postrouting"]

    state = parse_gateway(_edit_nft(GW_NFT_JSON, drop_snat_rule), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state.snat == {} and state.guarded_sources == frozenset()
    assert plan_gateway(state, gw()).nft is not None


def test_tampered_mark_chain_parses_as_not_steered():
    def change_mark(items):
        for i in items:
            if i.get("rule", {}).get("chain") == "mark_slot_1":
                i["rule"]["expr"][0]["mangle"]["value"]["|"][1] = 0x20000

    state = parse_node(_edit_nft(NODE_NFT_JSON, change_mark), NODE_RULES_JSON, NODE_ROUTES_JSON)
    assert state.steering == {IPv4Network("198.19.2.0/25"): 2}


def test_rule_without_route_is_unrouted():
    routes = [r for r in json.loads(NODE_ROUTES_JSON) if r.get("table") != "7102"]
    state = parse_node(NODE_NFT_JSON, NODE_RULES_JSON, json.dumps(routes))
    assert state.gateways[2] == UNROUTED


@pytest.mark.parametrize(
    "nft_json",
    [
        "not json",
        "[]",
        '{"nftables": 5}',
        '{"nftables": [{"table": {"family": "ip", "name": "other"}}]}',
        '{"nftables": [{"table": {"family": "ip", "name": "egressportal"}}, {"set": {"family": "ip", '
        '"table": "egressportal", "name": "guarded_sources", "type": "ipv4_addr", "elem": [{"prefix": 5}]}}]}',
        '{"nftables": [{"table": {"family": "ip", "name": "egressportal"}}, {"set": {"family": "ip", '
        '"table": "egressportal", "name": "guarded_sources", "type": "ipv4_addr", "elem": ["eth0; reboot"]}}]}',
        '{"nftables": [{"table": {"family": "ip", "name": "egressportal"}}, {"map": {"family": "ip", '
        '"table": "egressportal", "name": "snat_by_source", "type": "ipv4_addr", "map": "ipv4_addr", '
        '"elem": [["198.18.0.0/15"]]}}]}',
        '{"nftables": [{"set": {"family": "ip", "table": "egressportal", "name": "guarded_sources", '
        '"type": "ipv4_addr", "elem": [{"range": ["198.18.20.9", "198.18.20.1"]}]}}]}',
        '{"nftables": [{"table": {"family": "ip", "name": "egressportal"}}, {"set": {"family": "ip", '
        '"table": "egressportal", "name": "guarded_sources", "type": "ipv4_addr", "elem": ["2001:db8::/64"]}}]}',
    ],
)
def test_garbage_nft_raises_parse_error(nft_json):
    with pytest.raises(DataplaneParseError):
        parse_gateway(nft_json, "[]", "[]", "eth0")


@pytest.mark.parametrize("addr_json", ["{", "{}", '[{"ifname": "eth0", "addr_info": [{"family": "inet", '
                                                  '"local": "x", "prefixlen": 32}]}]', "[5]"])  # fmt: skip
def test_garbage_ip_output_raises_parse_error(addr_json):
    with pytest.raises(DataplaneParseError):
        parse_gateway(GW_NFT_JSON, addr_json, "[]", "eth0")


def test_garbage_rules_raise_parse_error():
    with pytest.raises(DataplaneParseError):
        parse_node(None, '[{"priority": "x", "protocol": "250", "src": "all", "table": "7101"}]', {})
    with pytest.raises(DataplaneParseError):
        parse_node(None, "[]", '[{"dst": "default", "gateway": "1.2.3.4", "table": "main?"}]')


def test_read_commands():
    cmds = gateway_read_commands("eth0")
    assert cmds["nft"].argv == ("nft", "-j", "list", "table", "ip", "egressportal")
    assert cmds["ip4"].argv == ("ip", "-N", "-j", "-4", "-batch", "-")
    assert cmds["ip4"].stdin.splitlines()[0] == "addr show dev eth0"
    assert node_read_commands()["ip4"].stdin.splitlines()[1].split()[-4:] == ["table", "all", "proto", "250"]
    with pytest.raises(DataplaneValueError):
        gateway_read_commands("eth0;reboot")

"""Edges of reading a host's state back (found by mutation testing, docs/MUTATION.md): every shape check of the
parser decides whether the product trusts what a host reports, so each one is pinned here with the smallest
output that tells the right reading from a wrong one."""

from __future__ import annotations

import json
from dataclasses import replace
from fnmatch import fnmatchcase
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from egressportal.dataplane import (
    DataplaneParseError,
    HostRead,
    gateway_read_commands,
    host_read_texts,
    node_read_commands,
    parse_gateway,
    parse_host_reads,
    parse_node,
)
from egressportal.dataplane.parse import (
    is_missing_table_error,
    probe_gateway_links_command,
    probe_node_command,
    table_exists_command,
)
from tests.unit.test_dataplane import (
    GW_ADDR_JSON,
    GW_NFT_JSON,
    GW_ROUTES_JSON,
    NODE_NFT_JSON,
    NODE_ROUTES_JSON,
    NODE_RULES_JSON,
    gw,
    node,
)

TABLE = {"family": "ip", "table": "egressportal"}


def _nft(text: str, fn) -> str:
    doc = json.loads(text)
    fn(doc["nftables"])
    return json.dumps(doc)


def _named(items: list, kind: str, name: str) -> dict:
    return next(i[kind] for i in items if kind in i and i[kind].get("name") == name)


def _rule(items: list, chain: str) -> dict:
    return next(i["rule"] for i in items if i.get("rule", {}).get("chain") == chain)


# --- commands and errors ------------------------------------------------------------------------------


def test_read_commands_are_exactly_these():
    def batch(version, *lines):
        return HostRead(("ip", "-N", "-j", f"-{version}", "-batch", "-"), "".join(f"{line}\n" for line in lines))

    nft = {family: HostRead(("nft", "-j", "list", "table", family, "egressportal")) for family in ("ip", "arp", "ip6")}
    gateway = gateway_read_commands("eth0")
    assert {name: replace(read, parts=()) for name, read in gateway.items()} == {
        "nft": nft["ip"],
        "arp": nft["arp"],
        "nft6": nft["ip6"],
        "ip4": batch(4, "addr show dev eth0", "route show table all proto 250"),
        "ip6": batch(6, "addr show dev eth0", "route show table all proto 250", "neigh show proxy dev eth0"),
        "ndp": HostRead(("sysctl", "-n", "net/ipv6/conf/eth0/proxy_ndp", "net/ipv6/neigh/eth0/proxy_delay")),
    }
    assert gateway["ip4"].parts == ("addr", "routes") and gateway["ip6"].parts == ("addr6", "routes6", "proxy6")
    node = node_read_commands()
    assert {name: replace(read, parts=()) for name, read in node.items()} == {
        "nft": nft["ip"],
        "nft6": nft["ip6"],
        "ip4": batch(4, "rule show", "route show table all proto 250"),
        "ip6": batch(6, "rule show", "route show table all proto 250"),
    }
    assert node["ip4"].parts == ("rules", "routes") and node["ip6"].parts == ("rules6", "routes6")
    # The sudo path runs these argv: the README's sudo rules allow "ip -N -j -4 *" and "ip -N -j -6 *".
    assert all(r.argv[:4] in (("ip", "-N", "-j", "-4"), ("ip", "-N", "-j", "-6")) for r in (gateway["ip4"], node["ip6"]))


# --- batched ip reads -----------------------------------------------------------------------------------


def _answers(reads, **texts):
    # Every read answered: a missing table, no IPv6 (ndp), empty batches unless given.
    out = {name: (1, "Error: No such file or directory\n") for name in ("nft", "nft6", "arp") if name in reads}
    if "ndp" in reads:
        out["ndp"] = (255, "sysctl: cannot stat /proc/sys/net/ipv6/conf/eth0/proxy_ndp\n")
    for name, read in reads.items():
        if read.parts:
            out[name] = (0, "[]\n" * len(read.parts))
    return {**out, **texts}


def test_a_batch_answer_is_split_into_the_inputs_the_parser_takes():
    reads = gateway_read_commands("eth0")
    texts = host_read_texts(reads, _answers(reads, ip4=(0, f"{GW_ADDR_JSON}\n{GW_ROUTES_JSON}\n")))
    assert texts["addr"] == GW_ADDR_JSON and texts["routes"] == GW_ROUTES_JSON
    assert texts["addr6"] == texts["routes6"] == texts["proxy6"] == "[]"
    assert texts["nft"] is texts["nft6"] is texts["arp"] is texts["ndp"] is None
    assert parse_host_reads(reads, _answers(reads, nft=(0, GW_NFT_JSON)), public_interface="eth0") == (
        parse_gateway(GW_NFT_JSON, "[]", "[]", "eth0")
    )
    node_reads = node_read_commands()
    got = parse_host_reads(
        node_reads,
        _answers(node_reads, nft=(0, NODE_NFT_JSON), ip4=(0, f"{NODE_RULES_JSON}\n{NODE_ROUTES_JSON}\n")),
        public_interface=None,
    )
    assert got == parse_node(NODE_NFT_JSON, NODE_RULES_JSON, NODE_ROUTES_JSON) == node()


@pytest.mark.parametrize(
    "text",
    [
        "[]\n",  # a line short (a truncated answer)
        "[]\n[]\n[]\n",  # a line too many
        "[]\n[]",  # no end of line: cut off
        "[]\n\n",  # an empty line is not "nothing"
        " \n[]\n",
        "Warning: something\n[]\n",  # mixed with other output
        "[]\nWarning: x\n[]\n",
        "",
    ],
)
def test_a_garbled_batch_answer_raises(text):
    reads = gateway_read_commands("eth0")
    with pytest.raises(DataplaneParseError):
        parse_host_reads(reads, _answers(reads, ip4=(0, text)), public_interface="eth0")


@pytest.mark.parametrize("line", ["{}", "[][]", "[", "3", '"x"'])
def test_a_batch_line_that_is_not_a_json_list_raises(line):
    reads = node_read_commands()
    with pytest.raises(DataplaneParseError):
        parse_host_reads(reads, _answers(reads, ip6=(0, f"[]\n{line}\n")), public_interface=None)


def test_a_failing_batch_line_fails_the_read():
    # iproute2 stops at the failing line: the answers before it, its message, exit status 1.
    reads = gateway_read_commands("eth0")
    answer = (1, '[{"ifname": "eth0", "addr_info": []}]\n[]\nDevice "eth0" does not exist.\nCommand failed -:3\n')
    with pytest.raises(DataplaneParseError, match='^ip -N -j -6 failed: Device "eth0" does not exist.\nCommand failed -:3$'):
        parse_host_reads(reads, _answers(reads, ip6=answer), public_interface="eth0")


def test_an_answer_for_other_reads_raises():
    reads = gateway_read_commands("eth0")
    answers = _answers(reads)
    answers["addr"] = answers.pop("ip4")  # one of the batch's inputs, not the read that was asked
    with pytest.raises(DataplaneParseError, match="garbled"):
        host_read_texts(reads, answers)


def test_probe_commands_are_exactly_these():
    # The sudo rules in the README allow exactly these (a gateway's links and addresses; a node's "true").
    assert probe_gateway_links_command() == ["ip", "-j", "-4", "addr", "show"]
    assert probe_node_command() == ["true"]
    assert table_exists_command() == ["nft", "-j", "list", "table", "ip", "egressportal"]
    assert table_exists_command(6) == ["nft", "-j", "list", "table", "ip6", "egressportal"]


def test_missing_table_is_told_apart_from_other_failures():
    assert is_missing_table_error("Error: No such file or directory\nlist table ip egressportal\n")
    assert not is_missing_table_error("Error: Could not process rule: Operation not permitted")
    assert not is_missing_table_error("")


# --- nft objects ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {},  # no kind at all
        {"table": {"family": "ip", "name": "egressportal"}, "set": {**TABLE, "name": "x"}},  # two kinds in one
    ],
)
def test_an_nft_object_must_have_exactly_one_kind(item):
    with pytest.raises(DataplaneParseError, match="nft object with unexpected keys"):
        parse_gateway(json.dumps({"nftables": [item]}), "[]", "[]", "eth0")


def test_an_empty_set_has_no_elem_key_and_parses_as_empty():
    def empty_guard(items):
        _named(items, "set", "guarded_sources").pop("elem")

    assert parse_gateway(_nft(GW_NFT_JSON, empty_guard), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0").guarded_sources == set()


def test_sets_and_maps_of_another_type_are_not_ours():
    def retype(items):
        _named(items, "set", "egress_addresses")["type"] = "inet_service"

    state = parse_gateway(_nft(GW_NFT_JSON, retype), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state.addresses == set() and state.snat == {}

    def remap(items):
        _named(items, "map", "snat_by_source")["map"] = "verdict"

    assert parse_gateway(_nft(GW_NFT_JSON, remap), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0").snat == {}


def test_elements_with_timeouts_or_counters_are_unwrapped():
    def wrap(items):
        s = _named(items, "set", "guarded_sources")
        s["elem"] = [{"elem": {"val": e, "counter": {"packets": 1, "bytes": 60}}} for e in s["elem"]]

    state = parse_gateway(_nft(GW_NFT_JSON, wrap), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state.guarded_sources == {IPv4Network("198.19.0.0/16")}


def test_one_address_range_and_odd_elements():
    def single(items):
        _named(items, "set", "guarded_sources")["elem"] = [{"range": ["198.19.0.7", "198.19.0.7"]}]

    state = parse_gateway(_nft(GW_NFT_JSON, single), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state.guarded_sources == {IPv4Network("198.19.0.7/32")}

    def number(items):
        _named(items, "set", "guarded_sources")["elem"] = [5]

    with pytest.raises(DataplaneParseError, match="unexpected element 5"):
        parse_gateway(_nft(GW_NFT_JSON, number), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")


# --- gateway --------------------------------------------------------------------------------------------


def test_empty_ip_output_means_nothing_not_garbage():
    state = parse_gateway(GW_NFT_JSON, "", "", "eth0")
    assert state.addresses == set() and state.return_routes == {}


def test_old_layout_addresses_are_read_from_the_public_interface_as_32s():
    links = [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifname": "transit0"},  # a link without addresses
        *json.loads(GW_ADDR_JSON),
    ]
    old_layout = gw(legacy_addresses=["203.0.113.10", "203.0.113.11"], pools=[])
    assert parse_gateway(GW_NFT_JSON, json.dumps(links), GW_ROUTES_JSON, "eth0") == old_layout
    # 203.0.113.11 is recorded as ours but sits on the interface as a /24, which is not what we add.
    as_24 = json.loads(GW_ADDR_JSON)
    as_24[0]["addr_info"][2]["prefixlen"] = 24
    state = parse_gateway(GW_NFT_JSON, json.dumps(as_24), GW_ROUTES_JSON, "eth0")
    assert state.addresses == {IPv4Address("203.0.113.10")}
    assert set(state.snat.values()) == {IPv4Address("203.0.113.10")}  # SNAT to a missing address is not working


def test_pool_routes_are_ours_only_as_rendered():
    pool = {"type": "2", "dst": "203.0.113.10/31", "dev": "lo", "table": "255", "scope": "254", "flags": []}
    named = {**pool, "type": "local", "table": "local", "dst": "203.0.113.12/31"}
    not_ours = [
        {**pool, "dev": "eth0", "dst": "203.0.113.20/31"},  # not through lo
        {**pool, "table": "254", "dst": "203.0.113.22/31"},  # not in table local
        {**pool, "type": "1", "dst": "203.0.113.24/31"},  # unicast
    ]
    routes = json.dumps([pool, named, *not_ours])
    state = parse_gateway(None, "[]", routes, "eth0")
    assert state.pools == {IPv4Network("203.0.113.10/31"), IPv4Network("203.0.113.12/31")}
    assert state.return_routes == {} and state.addresses == set()


def test_an_address_of_ours_without_a_mapping_is_still_held():
    def unmap_11(items):
        m = _named(items, "map", "snat_by_source")
        m["elem"] = [e for e in m["elem"] if e[1] != "203.0.113.11"]

    state = parse_gateway(_nft(GW_NFT_JSON, unmap_11), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state.addresses == {IPv4Address("203.0.113.10"), IPv4Address("203.0.113.11")}


def test_guard_is_reported_only_with_its_rule_and_a_faithful_copy_of_the_map_keys():
    def stale_copy(items):
        _named(items, "set", "mapped_sources")["elem"].pop()

    state = parse_gateway(_nft(GW_NFT_JSON, stale_copy), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state.guarded_sources == set() and state.snat == gw().snat

    def no_snat_rule_and_empty_copy(items):
        items[:] = [i for i in items if i.get("rule", {}).get("chain") != "postrouting"]
        _named(items, "set", "mapped_sources").pop("elem")

    state = parse_gateway(_nft(GW_NFT_JSON, no_snat_rule_and_empty_copy), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert state.guarded_sources == set() and state.snat == {}


def test_only_plain_main_table_routes_are_return_routes():
    foreign = [
        {"dst": "198.19.7.0/24", "dev": "transit0", "protocol": "250"},  # no gateway: not a shape we write
        {"dst": "default", "gateway": "198.18.0.1", "protocol": "250"},
        {"dst": "198.19.8.0/24", "gateway": "198.18.0.13", "table": "7101", "protocol": "250"},
        *json.loads(GW_ROUTES_JSON),
        {"dst": "198.19.9.0/24", "gateway": "198.18.0.14", "table": "main"},
    ]
    state = parse_gateway(GW_NFT_JSON, GW_ADDR_JSON, json.dumps(foreign), "eth0")
    assert state.return_routes == {**gw().return_routes, IPv4Network("198.19.9.0/24"): IPv4Address("198.18.0.14")}


# --- node -----------------------------------------------------------------------------------------------


def _mangle(items, slot: int) -> dict:
    return _rule(items, f"mark_slot_{slot}")["expr"][0]["mangle"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda items: _rule(items, "mark_slot_1")["expr"].append({"accept": None}),  # a second statement
        lambda items: _mangle(items, 1).__setitem__("key", {"ct": {"key": "mark"}}),  # sets the conntrack mark
        lambda items: _mangle(items, 1)["value"]["|"][0]["&"].__setitem__(0, {"ct": {"key": "mark"}}),
        lambda items: _mangle(items, 1)["value"]["|"][0]["&"].__setitem__(1, 0),  # clobbers others' bits
        lambda items: _mangle(items, 1).__setitem__("value", 65536),  # not "mark & keep | ours"
    ],
)
def test_a_tampered_slot_chain_steers_nothing(tamper):
    state = parse_node(_nft(NODE_NFT_JSON, tamper), NODE_RULES_JSON, NODE_ROUTES_JSON)
    assert state.steering == {IPv4Network("198.19.2.0/25"): 2}


def test_verdicts_we_never_write_steer_nothing_and_do_not_hide_the_rest():
    def foreign_verdicts(items):
        m = _named(items, "map", "mark_by_source")
        m["elem"] = [
            [{"prefix": {"addr": "198.19.4.0", "len": 24}}, "accept"],
            [{"prefix": {"addr": "198.19.5.0", "len": 24}}, {"jump": {"target": "mark_slot_1"}}],
            [{"prefix": {"addr": "198.19.6.0", "len": 24}}, {"goto": {"target": "other_chn_1"}}],
            [{"prefix": {"addr": "198.19.7.0", "len": 24}}, {"goto": {}}],
            *m["elem"],
        ]

    state = parse_node(_nft(NODE_NFT_JSON, foreign_verdicts), NODE_RULES_JSON, NODE_ROUTES_JSON)
    assert state == node()


def _slot_250(items):
    chain = _named(items, "chain", "mark_slot_2")
    chain["name"] = "mark_slot_250"
    rule = _rule(items, "mark_slot_2")
    rule["chain"] = "mark_slot_250"
    rule["expr"][0]["mangle"]["value"] = {"|": [{"&": [{"meta": {"key": "mark"}}, 0xFF00FFFF]}, 250 << 16]}
    _named(items, "map", "mark_by_source")["elem"][1][1] = {"goto": {"target": "mark_slot_250"}}


def test_the_last_slot_is_a_slot():
    rules = [r for r in json.loads(NODE_RULES_JSON) if r.get("priority") != 7102] + [
        {"priority": 7350, "src": "all", "fwmark": "0xfa0000", "fwmask": "0xff0000", "table": "7350", "protocol": "250"}
    ]
    routes = json.loads(NODE_ROUTES_JSON) + [
        {"dst": "default", "gateway": "198.18.0.250", "dev": "transit0", "table": "7350"}
    ]
    state = parse_node(_nft(NODE_NFT_JSON, _slot_250), json.dumps(rules), json.dumps(routes))
    assert state.steering == {IPv4Network("198.19.1.0/24"): 1, IPv4Network("198.19.2.0/25"): 250}
    assert state.gateways[250] == IPv4Address("198.18.0.250")


@pytest.mark.parametrize(
    "rule",
    [
        {"priority": 7104, "src": "all", "iif": "eth0", "fwmark": "0x40000", "fwmask": "0xff0000", "table": "7104"},
        {"priority": 7104, "src": "198.18.20.0", "fwmark": "0x40000", "fwmask": "0xff0000", "table": "7104"},
        {"priority": 7104, "src": "all", "fwmark": "0x40000", "fwmask": "0xff0000", "table": "7105"},
        {"priority": 7104, "src": "all", "fwmark": "0x50000", "fwmask": "0xff0000", "table": "7104"},
        {"priority": 7104, "src": "all", "fwmark": "0x40000", "fwmask": "0xffffffff", "table": "7104"},
        {"priority": 7351, "src": "all", "fwmark": "0x40000", "fwmask": "0xff0000", "table": "7351"},
    ],
)
def test_rules_of_another_shape_are_not_ours(rule):
    rules = json.loads(NODE_RULES_JSON) + [{**rule, "protocol": "250"}]
    assert set(parse_node(NODE_NFT_JSON, json.dumps(rules), NODE_ROUTES_JSON).gateways) == {1, 2, 3}


def test_only_default_unicast_routes_with_a_gateway_route_a_slot():
    routes = [
        {"dst": "default", "gateway": "198.51.100.1", "dev": "eth0"},  # the main table's, in a "table all" listing
        {"dst": "default", "dev": "transit0", "table": "7101"},  # no gateway
        {"dst": "198.19.9.0/24", "gateway": "198.18.0.9", "dev": "transit0", "table": "7102"},  # not default
        {"type": "blackhole", "dst": "default", "gateway": "198.18.0.9", "table": "7103"},
        *json.loads(NODE_ROUTES_JSON),
    ]
    state = parse_node(NODE_NFT_JSON, NODE_RULES_JSON, json.dumps(routes))
    assert state.gateways == node().gateways


def test_per_table_listings_need_no_table_key():
    by_table = {7101 + i: json.dumps([{"dst": "default", "gateway": f"198.18.0.{i + 1}", "dev": "transit0"}])
                for i in range(3)}
    assert parse_node(NODE_NFT_JSON, NODE_RULES_JSON, by_table) == node()


# --- what a parse error says -------------------------------------------------------------------------------
# A host that answers garbage fails its reconcile with this text in the host's last error: it must say which
# output and which part of it was wrong.

def _one(kind: str, body: dict, elem: str) -> str:
    """An nft listing of our table holding one set or map whose elements are ``elem`` (raw JSON)."""
    doc = {"nftables": [{"table": {"family": "ip", "name": "egressportal"}}, {kind: {**TABLE, **body, "elem": None}}]}
    return json.dumps(doc).replace('"elem": null', f'"elem": {elem}')


def _set(elem: str) -> str:
    return _one("set", {"name": "guarded_sources", "type": "ipv4_addr"}, elem)


def _map(elem: str) -> str:
    return _one("map", {"name": "snat_by_source", "type": "ipv4_addr", "map": "ipv4_addr"}, elem)


@pytest.mark.parametrize(
    ("kind", "nft", "first", "second", "message"),
    [
        pytest.param(
            "gw", "{", "[]", "[]",
            'nft output: not JSON: ',
            id='nft not json',
        ),
        pytest.param(
            "gw", "[1]", "[]", "[]",
            'nft output: expected an object, got list',
            id='nft not object',
        ),
        pytest.param(
            "gw", '{"nftables": {}}', "[]", "[]",
            'nft output.nftables: expected a list, got dict',
            id='nftables not list',
        ),
        pytest.param(
            "gw", '{"nftables": [5]}', "[]", "[]",
            'nft object: expected an object, got int',
            id='nft item not object',
        ),
        pytest.param(
            "gw", '{"nftables": [{"set": 5}]}', "[]", "[]",
            'nft set: expected an object, got int',
            id='nft body not object',
        ),
        pytest.param(
            "gw", '{"nftables": [{"set": {"family": "ip", "table": "other", "name": "x"}}]}', "[]", "[]",
            'nft set outside table ip egressportal',
            id='outside',
        ),
        pytest.param(
            "gw", '{"nftables": [{"rule": {"family": "ip", "table": "egressportal", "chain": "x", "expr": 5}}]}', "[]", "[]",
            'nft rule.expr: expected a list, got int',
            id='rule expr',
        ),
        pytest.param(
            "gw", _set('5'), "[]", "[]",
            'nft guarded_sources.elem: expected a list, got int',
            id='elem not list',
        ),
        pytest.param(
            "gw", _set('[{"elem": 5}]'), "[]", "[]",
            'nft elem: expected an object, got int',
            id='wrapped elem not obj',
        ),
        pytest.param(
            "gw", _set('["x"]'), "[]", "[]",
            "nft set guarded_sources: invalid IPv4 network 'x'",
            id='bad str',
        ),
        pytest.param(
            "gw", _set('[{"prefix": 5}]'), "[]", "[]",
            'nft set guarded_sources: expected an object, got int',
            id='prefix not obj',
        ),
        pytest.param(
            "gw", _set('[{"prefix": {"addr": "198.19.0.0", "len": "x"}}]'), "[]", "[]",
            "nft set guarded_sources: not an integer: 'x'",
            id='prefix len',
        ),
        pytest.param(
            "gw", _set('[{"prefix": {"addr": "x", "len": 16}}]'), "[]", "[]",
            "nft set guarded_sources: invalid IPv4 network 'x/16'",
            id='prefix addr',
        ),
        pytest.param(
            "gw", _set('[{"range": 5}]'), "[]", "[]",
            'nft set guarded_sources: expected a list, got int',
            id='range not list',
        ),
        pytest.param(
            "gw", _set('[{"range": ["198.19.0.1"]}]'), "[]", "[]",
            "nft set guarded_sources: bad range ['198.19.0.1']",
            id='range len',
        ),
        pytest.param(
            "gw", _set('[{"range": ["x", "198.19.0.1"]}]'), "[]", "[]",
            "nft set guarded_sources: invalid IPv4 address 'x'",
            id='range addr',
        ),
        pytest.param(
            "gw", _set('[{"range": ["198.19.0.9", "198.19.0.1"]}]'), "[]", "[]",
            "nft set guarded_sources: bad range ['198.19.0.9', '198.19.0.1']",
            id='range order',
        ),
        pytest.param(
            "gw", _map('[5]'), "[]", "[]",
            'nft map snat_by_source element: expected a list, got int',
            id='map elem not list',
        ),
        pytest.param(
            "gw", _map('[["198.19.0.0/16"]]'), "[]", "[]",
            "nft map snat_by_source: bad element ['198.19.0.0/16']",
            id='map elem len',
        ),
        pytest.param(
            "gw", _map('[["x", "203.0.113.10"]]'), "[]", "[]",
            "nft map snat_by_source key: invalid IPv4 network 'x'",
            id='map key',
        ),
        pytest.param(
            "gw", _map('[["198.19.0.0/16", "x"]]'), "[]", "[]",
            "nft map snat_by_source value: invalid IPv4 address 'x'",
            id='map value',
        ),
        pytest.param(
            "gw", None, "{", "[]",
            'ip addr output: not JSON: ',
            id='addr not json',
        ),
        pytest.param(
            "gw", None, "{}", "[]",
            'ip addr output: expected a list, got dict',
            id='addr not list',
        ),
        pytest.param(
            "gw", None, "[5]", "[]",
            'ip addr link: expected an object, got int',
            id='addr link',
        ),
        pytest.param(
            "gw", None, '[{"ifname": "eth0", "addr_info": 5}]', "[]",
            'ip addr addr_info: expected a list, got int',
            id='addr info list',
        ),
        pytest.param(
            "gw", None, '[{"ifname": "eth0", "addr_info": [5]}]', "[]",
            'ip addr addr_info: expected an object, got int',
            id='addr info obj',
        ),
        pytest.param(
            "gw", None, '[{"ifname": "eth0", "addr_info": [{"family": "inet", "prefixlen": "x"}]}]', "[]",
            "prefixlen: not an integer: 'x'",
            id='addr prefixlen',
        ),
        pytest.param(
            "gw", None, '[{"ifname": "eth0", "addr_info": [{"family": "inet", "prefixlen": 32, "local": "x"}]}]', "[]",
            "ip addr local: invalid IPv4 address 'x'",
            id='addr local',
        ),
        pytest.param(
            "gw", None, "[]", "{",
            'ip route output: not JSON: ',
            id='routes not json',
        ),
        pytest.param(
            "gw", None, "[]", "{}",
            'ip route output: expected a list, got dict',
            id='routes not list',
        ),
        pytest.param(
            "gw", None, "[]", "[5]",
            'ip route output: expected an object, got int',
            id='route not obj',
        ),
        pytest.param(
            "gw", None, "[]", '[{"dst": "x", "gateway": "198.18.0.1"}]',
            "ip route dst: invalid IPv4 network 'x'",
            id='route dst',
        ),
        pytest.param(
            "gw", None, "[]", '[{"dst": "198.19.0.0/16", "gateway": "x"}]',
            "ip route gateway: invalid IPv4 address 'x'",
            id='route gw',
        ),
        pytest.param(
            "node", None, "{", "[]",
            'ip rule output: not JSON: ',
            id='rules not json',
        ),
        pytest.param(
            "node", None, "{}", "[]",
            'ip rule output: expected a list, got dict',
            id='rules not list',
        ),
        pytest.param(
            "node", None, "[5]", "[]",
            'ip rule: expected an object, got int',
            id='rule not obj',
        ),
        pytest.param(
            "node", None, '[{"protocol": "250", "src": "all", "priority": "x"}]', "[]",
            "rule priority: not an integer: 'x'",
            id='rule prio',
        ),
        pytest.param(
            "node", None, '[{"protocol": "250", "src": "all", "priority": 7101, "table": "x"}]', "[]",
            "rule table: not an integer: 'x'",
            id='rule table',
        ),
        pytest.param(
            "node", None, '[{"protocol": "250", "src": "all", "priority": 7101, "table": "7101", "fwmark": "x"}]', "[]",
            "rule fwmark: not an integer: 'x'",
            id='rule fwmark',
        ),
        pytest.param(
            "node", None, '[{"protocol": "250", "src": "all", "priority": 7101, "table": "7101", '
            '"fwmark": "0x10000", "fwmask": "x"}]', "[]",
            "rule fwmask: not an integer: 'x'",
            id='rule fwmask',
        ),
        pytest.param(
            "node", None, "[]", '[{"dst": "default", "gateway": "198.18.0.1", "table": "x"}]',
            "route table: not an integer: 'x'",
            id='node route table',
        ),
        pytest.param(
            "node", None, "[]", '[{"dst": "default", "gateway": "x", "table": "7101"}]',
            "ip route gateway: invalid IPv4 address 'x'",
            id='node route gw',
        ),
        pytest.param(
            "node",
            None,
            "[]",
            "{}",
            "ip route output: expected a list, got dict",
            id="node routes not list",
        ),
        pytest.param(
            "node",
            _nft(NODE_NFT_JSON, lambda items: _mangle(items, 1)["value"]["|"][0]["&"].__setitem__(1, "x")),
            NODE_RULES_JSON,
            NODE_ROUTES_JSON,
            "mark mask: not an integer: 'x'",
            id="mark mask",
        ),
        pytest.param(
            "node",
            _nft(NODE_NFT_JSON, lambda items: _mangle(items, 1)["value"]["|"].__setitem__(1, "x")),
            NODE_RULES_JSON,
            NODE_ROUTES_JSON,
            "mark value: not an integer: 'x'",
            id="mark value",
        ),
    ],
)
def test_parse_errors_say_which_output_and_which_part(kind, nft, first, second, message):
    with pytest.raises(DataplaneParseError) as info:
        parse_gateway(nft, first, second, "eth0") if kind == "gw" else parse_node(nft, first, second)
    assert str(info.value).startswith(message), str(info.value)
    if not message.endswith("not JSON: "):
        assert str(info.value) == message


def test_states_that_cannot_exist_are_parse_errors():
    def overlapping_snat(items):
        _named(items, "map", "snat_by_source")["elem"].append([{"prefix": {"addr": "198.19.1.0", "len": 25}},
                                                                "203.0.113.10"])

    with pytest.raises(DataplaneParseError) as info:
        parse_gateway(_nft(GW_NFT_JSON, overlapping_snat), GW_ADDR_JSON, GW_ROUTES_JSON, "eth0")
    assert str(info.value) == "gateway state: overlapping SNAT source CIDRs: 198.19.1.0/24 and 198.19.1.0/25"

    def overlapping_steering(items):
        _named(items, "map", "mark_by_source")["elem"].append([{"prefix": {"addr": "198.19.1.0", "len": 25}},
                                                                {"goto": {"target": "mark_slot_2"}}])

    with pytest.raises(DataplaneParseError) as info:
        parse_node(_nft(NODE_NFT_JSON, overlapping_steering), NODE_RULES_JSON, NODE_ROUTES_JSON)
    assert str(info.value) == "node state: overlapping steered source CIDRs: 198.19.1.0/24 and 198.19.1.0/25"


def test_the_public_interface_without_addresses():
    links = [{"ifname": "eth0", "flags": ["UP"]}]
    assert parse_gateway(GW_NFT_JSON, json.dumps(links), GW_ROUTES_JSON, "eth0").addresses == set()


def _readme_sudo_rules() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("NOPASSWD:", 1)[1].split("```", 1)[0]
    return [rule.strip() for rule in block.replace("\\\n", " ").split(",") if rule.strip()]


def test_the_readme_sudo_rules_allow_every_read():
    # The sudo path runs each read's argv as it is (sudo's "*" matches any characters, spaces included).
    rules = _readme_sudo_rules()
    tools = {"nft": "/usr/sbin/nft", "ip": "/usr/sbin/ip", "sysctl": "/usr/sbin/sysctl"}
    for read in [*gateway_read_commands("eth0.100").values(), *node_read_commands().values()]:
        command = " ".join([tools[read.argv[0]], *read.argv[1:]])
        assert any(fnmatchcase(command, rule) for rule in rules), command
    assert not any(fnmatchcase("/usr/sbin/ip -N -j -batch -", rule) for rule in rules)  # the check can fail

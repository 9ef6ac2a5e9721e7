"""The dataplane's fast paths give exactly what the slow ones gave: validation once per text (cached, errors
never cached), typed IPv4 values taken as they are, sorting and collapsing on integers."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, collapse_addresses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egressportal.dataplane import GatewayState, NodeState, parse_gateway
from egressportal.dataplane import model as m
from egressportal.dataplane import validate as v
from tests.unit import test_dataplane as td


def _random_nets(rng: random.Random, n: int, version: int = 4) -> list:
    out = []
    for _ in range(n):
        if version == 4:
            plen = rng.choice([16, 22, 24, 25, 30, 31, 32, 32, 32])
            base = int(IPv4Address("198.18.0.0")) + rng.randrange(1 << 17)
            out.append(IPv4Network((base >> (32 - plen) << (32 - plen), plen)))
        else:
            plen = rng.choice([48, 64, 120, 127, 128, 128])
            base = int(IPv6Address("2001:db8::")) + rng.randrange(1 << 80)
            out.append(IPv6Network((base >> (128 - plen) << (128 - plen), plen)))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_collapse_equals_ipaddress_collapse(seed):
    rng = random.Random(seed)
    for version in (4, 6):
        nets = _random_nets(rng, rng.randrange(0, 60), version)
        assert sorted(m._collapse(nets)) == list(collapse_addresses(nets))


def test_collapse_merges_adjacent_and_contained_and_keeps_gaps():
    nets = [IPv4Network(x) for x in ("198.18.20.0/25", "198.18.20.128/25", "198.18.20.7/32", "198.18.22.1/32")]
    assert sorted(m._collapse(nets)) == [IPv4Network("198.18.20.0/24"), IPv4Network("198.18.22.1/32")]
    assert m._collapse([IPv4Network("0.0.0.0/0"), IPv4Network("198.18.0.0/15")]) == [IPv4Network("0.0.0.0/0")]
    assert m._collapse([IPv4Network("198.18.0.0/32"), IPv4Network("198.18.0.1/32")]) == [
        IPv4Network("198.18.0.0/31")
    ]


@pytest.mark.parametrize("seed", range(20))
def test_family_key_orders_as_ipaddress_does(seed):
    rng = random.Random(seed)
    v4, v6 = _random_nets(rng, 50, 4), _random_nets(rng, 50, 6)
    mixed = v6 + v4
    rng.shuffle(mixed)
    assert sorted(mixed, key=m.family_key) == sorted(v4) + sorted(v6)
    addrs = [n.network_address for n in mixed]
    assert sorted(addrs, key=m.family_key) == sorted(a for a in addrs if a.version == 4) + sorted(
        a for a in addrs if a.version == 6
    )
    assert sorted([3, 1, 2], key=m.family_key) == [1, 2, 3]


@pytest.mark.parametrize(
    "keys",
    [
        ["198.19.0.0/16", "198.19.5.0/24"],  # same start region, contained
        ["198.19.0.0/24", "198.19.0.0/25"],  # same start, different prefix
        ["198.19.0.0/22", "198.19.1.0/24", "198.19.2.0/32"],  # contained, with one between
        ["198.19.0.0/24", "198.19.0.255/32"],  # last address
        ["2001:db8::/48", "2001:db8:0:1::/64"],
    ],
)
def test_overlapping_keys_are_found_on_the_fast_path(keys):
    with pytest.raises(v.DataplaneValueError, match="overlapping"):
        NodeState.build(steering={k: 1 for k in keys}, gateways={1: "198.18.0.1"}, gateways6={1: "2001:db8::1"})


def test_adjacent_keys_and_keys_of_two_families_do_not_overlap():
    state = NodeState.build(
        steering={"198.19.0.0/24": 1, "198.19.1.0/24": 1, "2001:db8::/64": 1, "0.0.0.0/32": 1},
        gateways={1: "198.18.0.1"},
        gateways6={1: "2001:db8::1"},
    )
    assert len(state.steering) == 4


def _gateway(addresses, snat, pools):
    return GatewayState.build(
        public_interface="eth0", addresses=addresses, snat=snat, guarded_sources=list(snat), pools=pools
    )


def test_typed_and_text_inputs_give_the_same_state():
    texts = _gateway(["203.0.113.10", "2001:db8:1::10"], {"198.19.1.0/24": "203.0.113.10",
                     "2001:db8:2::/64": "2001:db8:1::10"}, ["203.0.113.0/24"])
    typed = _gateway(
        [IPv4Address("203.0.113.10"), IPv6Address("2001:db8:1::10")],
        {IPv4Network("198.19.1.0/24"): IPv4Address("203.0.113.10"),
         IPv6Network("2001:db8:2::/64"): IPv6Address("2001:db8:1::10")},
        [IPv4Network("203.0.113.0/24")],
    )
    assert typed == texts
    assert GatewayState(**{f: getattr(typed, f) for f in typed.__dataclass_fields__}) == typed


@pytest.mark.parametrize("bad", ["198.19.1.1/24", "198.19.1.0/24\n", "0198.19.1.0/24", "198.19.1.0/33"])
def test_bad_text_fails_every_time_not_only_the_first(bad):
    for _ in range(3):
        with pytest.raises(v.DataplaneValueError):
            _gateway(["203.0.113.10"], {bad: "203.0.113.10"}, ["203.0.113.0/24"])


def test_typed_ipv6_values_are_still_checked_every_time():
    for _ in range(3):
        with pytest.raises(v.DataplaneValueError, match="reserved"):
            v.ipv6_address(IPv6Address("fe80::1"))
        with pytest.raises(v.DataplaneValueError, match="reserved"):
            v.ipv6_network(IPv6Network("::ffff:0:0/96"))
        with pytest.raises(v.DataplaneValueError, match="shorter"):
            v.ipv6_network(IPv6Network("2000::/3"))
        with pytest.raises(v.DataplaneValueError, match="zone"):
            v.ipv6_address(IPv6Address("2001:db8::1%eth0"))
        with pytest.raises(v.DataplaneValueError):
            _gateway([IPv6Address("fe80::1")], {}, [])


def test_a_text_validated_once_returns_the_same_value():
    assert v.ipv4_network("198.19.1.0/24") is v.ipv4_network("198.19.1.0/24")
    assert v.ip_address("2001:db8::1") == IPv6Address("2001:db8::1")
    assert v.ipv4_address("203.0.113.9") == IPv4Address("203.0.113.9")


def test_typed_ipv6_networks_in_a_state_are_checked():
    for _ in range(2):
        with pytest.raises(v.DataplaneValueError, match="reserved"):
            _gateway(["2001:db8:1::10"], {IPv6Network("fe80::/64"): "2001:db8:1::10"}, [])
        with pytest.raises(v.DataplaneValueError, match="shorter"):
            NodeState.build(steering={}, gateways={}, internal=[IPv6Network("2000::/3")])


def test_validation_messages_name_the_value_and_what_was_wanted():
    with pytest.raises(v.DataplaneValueError, match=r"^IPv6 address must be a string, got int$"):
        v.ipv6_address(5)
    with pytest.raises(v.DataplaneValueError, match=r"^IPv6 network must be a string, got int$"):
        v.ipv6_network(5)
    with pytest.raises(v.DataplaneValueError, match=r"^invalid IPv6 network IPv4Network\('198.18.0.0/24'\): is IPv4$"):
        v.ipv6_network(IPv4Network("198.18.0.0/24"))
    with pytest.raises(v.DataplaneValueError, match=r"IPv6Address\('2001:db8::1%eth0'\): has a zone$"):
        v.ipv6_address(IPv6Address("2001:db8::1%eth0"))


@pytest.mark.parametrize("text", ["2001:db8::1.2.3.4", "2001:db8::1%eth0", " 2001:db8::1"])
def test_ipv6_text_outside_hex_groups_is_refused_before_parsing(text):
    # ipaddress would take the embedded dotted quad and the zone; the text check refuses them first.
    for _ in range(2):
        with pytest.raises(v.DataplaneValueError, match=rf"^invalid IPv6 address {re.escape(repr(text))}$"):
            v.ipv6_address(text)


def test_state_messages_are_exact():
    with pytest.raises(v.DataplaneValueError, match=r"^a legacy /32 address must be one of the gateway's addresses$"):
        GatewayState.build(public_interface="eth0", addresses=["203.0.113.10"], pools=["203.0.113.0/24"],
                           legacy_addresses=["203.0.113.11"])
    with pytest.raises(v.DataplaneValueError, match=r"^SNAT 198\.19\.1\.0/24 -> 2001:db8:1::10: mixes IPv4 and IPv6$"):
        _gateway(["2001:db8:1::10"], {"198.19.1.0/24": "2001:db8:1::10"}, [])
    with pytest.raises(v.DataplaneValueError, match=r"^return route 198\.19\.1\.0/24 -> 2001:db8::1: mixes IPv4 and IPv6$"):
        GatewayState.build(public_interface="eth0", return_routes={"198.19.1.0/24": "2001:db8::1"})
    with pytest.raises(v.DataplaneValueError, match=r"^not a stored dataplane state$"):
        m.state_from_doc("gateway")
    with pytest.raises(v.DataplaneValueError, match=r"^not a stored dataplane state: .*public_interface"):
        m.state_from_doc({"kind": "gateway"})


def test_covered():
    prefixes = [IPv4Network("203.0.113.0/25"), IPv6Network("2001:db8::/64")]
    assert m.covered(IPv4Address("203.0.113.5"), prefixes)
    assert not m.covered(IPv4Address("203.0.113.200"), prefixes)
    assert m.covered(IPv6Address("2001:db8::5"), prefixes)
    assert not m.covered(IPv6Address("2001:db8:1::5"), prefixes)
    assert not m.covered(IPv4Address("203.0.113.5"), [])


# --- Exact-type fast paths against the general path, on random and hostile inputs ----------------------

_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Text(str):
    """A str subclass: the validators' exact-type fast paths never take it, so it shows the general path."""


class _Address(IPv4Address):
    pass


class _Network(IPv4Network):
    pass


def _outcome(fn, value):
    try:
        return ("ok", fn(value))
    except v.DataplaneValueError as exc:
        return ("error", str(exc))


_octet = st.sampled_from(["0", "1", "9", "10", "18", "19", "99", "113", "198", "203", "255", "256", "010", "999"])
_ipv4ish = st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", _octet, _octet, _octet, _octet)
_texts = st.one_of(
    _ipv4ish,
    st.builds(lambda t, n: f"{t}/{n}", _ipv4ish, st.integers(0, 40).map(str) | st.sampled_from(["", "x", "024"])),
    st.sampled_from(["2001:db8::1", "2001:db8::/64", "fe80::1", "::ffff:1.2.3.4", "1.2.3.4\n", " 1.2.3.4",
                     "1.2.3.4; reboot", "$(reboot)", "", "١.٢.٣.٤", "1.2.3.4/24/1", "0x1.2.3.4"]),
    st.text(alphabet="0123456789./:abcdef \n%", max_size=20),
)


@_settings
@given(_texts)
def test_text_fast_paths_equal_the_general_path(text):
    for fn in (v.ipv4_address, v.ipv4_network, v.ip_address, v.ip_network):
        assert _outcome(fn, text) == _outcome(fn, _Text(text))


@_settings
@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_typed_fast_paths_equal_the_general_path(n, plen):
    address, network = IPv4Address(n), IPv4Network((n >> (32 - plen) << (32 - plen), plen))
    assert v.ipv4_address(address) is address and v.ip_address(address) is address
    assert v.ipv4_network(network) is network and v.ip_network(network) is network
    assert _outcome(v.ipv4_address, address) == _outcome(v.ipv4_address, _Address(n))
    assert _outcome(v.ip_network, network) == _outcome(v.ip_network, _Network(network))
    for wrong in (v.ipv4_address, v.ip_address):
        with pytest.raises(v.DataplaneValueError):
            wrong(network)


def _reference_frozenmap(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        raise v.DataplaneValueError("duplicate keys")
    return tuple(sorted(d.items(), key=lambda kv: m.family_key(kv[0])))


_small_net = st.builds(
    lambda base, plen: IPv4Network((base >> (32 - plen) << (32 - plen), plen)),
    st.integers(0xC6130000, 0xC61300FF), st.sampled_from([24, 28, 30, 31, 32]),
)
_small_net6 = st.builds(
    lambda base, plen: IPv6Network((base >> (128 - plen) << (128 - plen), plen)),
    st.integers(0x20010DB8 << 96, (0x20010DB8 << 96) + 0xFF), st.sampled_from([120, 126, 128]),
)


@_settings
@given(st.lists(st.tuples(st.one_of(_small_net, _small_net6), st.integers(1, 3)), max_size=30))
def test_frozenmap_equals_a_dict_sorted_by_family(pairs):
    try:
        want = ("ok", _reference_frozenmap(pairs))
    except v.DataplaneValueError as exc:
        want = ("error", str(exc))
    got = _outcome(lambda p: tuple(m.FrozenMap(p).items()), pairs)
    assert got == want
    if want[0] == "ok":
        fm = m.FrozenMap(pairs)
        assert dict(fm) == dict(pairs) and fm == dict(pairs) and list(fm.values()) == [x for _, x in want[1]]
        assert all(fm[k] == x for k, x in pairs) and hash(fm) == hash(m.FrozenMap(dict(pairs)))


@_settings
@given(
    st.lists(st.integers(0xCB007100, 0xCB0071FF), max_size=40),
    st.lists(st.builds(lambda b, p: IPv4Network((b >> (32 - p) << (32 - p), p)),
                       st.integers(0xCB007100, 0xCB0071FF), st.sampled_from([25, 27, 30, 32])), max_size=6),
)
def test_uncovered_equals_a_membership_test(ints, prefixes):
    addresses = [IPv4Address(n) for n in ints] + [IPv6Address((0x20010DB8 << 96) + n) for n in ints[:3]]
    collapsed = list(collapse_addresses(prefixes))
    assert m.uncovered(addresses, collapsed) == [
        a for a in addresses if a.version == 4 and not any(a in p for p in collapsed)
    ]
    assert m.uncovered(addresses, collapsed, 6) == [a for a in addresses if a.version == 6]


def _gateway_inputs(ints, sources, targets, legacy_count):
    addresses = [IPv4Address(0xCB007100 + n) for n in ints]
    snat = {IPv4Network((0xC6130000 + s, 32)): IPv4Address(0xCB007100 + t)
            for s, t in zip(sources, targets, strict=False)}
    return addresses, snat, addresses[:legacy_count]


@_settings
@given(
    st.lists(st.integers(0, 300), max_size=30),
    st.lists(st.integers(0, 60), max_size=30, unique=True),
    st.lists(st.integers(0, 300), max_size=30),
    st.integers(0, 3),
    st.booleans(),
)
def test_a_state_from_typed_sets_equals_one_from_texts(ints, sources, targets, legacy_count, with_v6):
    """Typed sets are taken without rehashing and SNAT targets looked up by integer: the state (or the
    error) is exactly the one the same values give as texts, where every value is validated."""
    addresses, snat, legacy = _gateway_inputs(ints, sources, targets, legacy_count)
    six = [IPv6Address("2001:db8:1::10")] if with_v6 else []
    pools = ["203.0.113.0/24", "2001:db8:1::/64"]

    def build(addrs, snat_, legacy_):
        return GatewayState.build(public_interface="eth0", addresses=addrs, snat=snat_, pools=pools,
                                  guarded_sources=list(snat), legacy_addresses=legacy_)

    texts = _outcome(lambda _: build([str(a) for a in addresses + six], {str(k): str(x) for k, x in snat.items()},
                                     [str(a) for a in legacy]), None)
    held = set(addresses)
    if all(int(a) <= 0xCB0071FF for a in addresses):  # all in the pool: only SNAT targets can be wrong
        missing = [(k, x) for k, x in sorted(snat.items()) if x not in held]
        if missing:
            k, x = missing[0]
            assert texts == ("error", f"SNAT {k} -> {x}: {x} is not one of this gateway's addresses")
        else:
            assert texts[0] == "ok"
    for typed_addresses in (frozenset(addresses + six), set(addresses + six)):
        typed = _outcome(lambda a: build(a, snat, frozenset(legacy)), typed_addresses)
        assert typed == texts
    if texts[0] == "ok":
        state = texts[1]
        again = GatewayState(**{f: getattr(state, f) for f in state.__dataclass_fields__})
        # IPv4 addresses are taken as they are; an IPv6 one is validated again (reserved ranges).
        assert again == state and (with_v6 or again.addresses is state.addresses)


def _reference_doc(state):
    doc = {"kind": "gateway" if isinstance(state, GatewayState) else "node"}
    for name in state.__dataclass_fields__:
        value = getattr(state, name)
        if isinstance(value, str):
            doc[name] = value
        elif isinstance(value, Mapping):
            doc[name] = [[x if isinstance(x, (int, str)) else str(x) for x in pair] for pair in value.items()]
        else:
            doc[name] = sorted(str(x) for x in value)
    return doc


@_settings
@given(
    st.lists(st.integers(0, 250), min_size=1, max_size=30),
    st.lists(st.integers(0, 60), max_size=30, unique=True),
    st.booleans(),
)
def test_state_to_doc_equals_str_of_every_value(ints, sources, with_v6):
    addresses, _, _ = _gateway_inputs(ints, [], [], 0)
    snat = {IPv4Network((0xC6130000 + s, 32 - s % 3)): addresses[s % len(addresses)] for s in sources if s % 4 == 0}
    if with_v6:
        addresses.append(IPv6Address("2001:db8:1::10"))
        snat[IPv6Network("2001:db8:2::/64")] = addresses[-1]
    state = GatewayState.build(public_interface="eth0", addresses=addresses, snat=snat, pools=["203.0.113.0/24",
                               "2001:db8:1::/64"], guarded_sources=list(snat),
                               return_routes={IPv4Network(f"198.18.100.0/{p}"): IPv4Address("198.18.1.10")
                                              for p in (24, 25, 32)})
    node = NodeState.build(steering={k: 1 for k in snat if k.version == 4}, gateways={1: "198.18.0.1"},
                           internal=["198.18.100.0/24"])
    for s in (state, node, state):  # the second time from the text caches
        assert m.state_to_doc(s) == _reference_doc(s)
        assert m.state_from_doc(m.state_to_doc(s)) == s


@pytest.mark.parametrize("hostile", [IPv6Address("fe80::1"), IPv6Address("::ffff:203.0.113.10"), "203.0.113.10; reboot",
                                     IPv4Network("203.0.113.10/32"), _Text("203.0.113.1x"), 3232235777])
def test_a_set_with_one_value_not_valid_by_construction_is_validated_whole(hostile):
    for addresses in (frozenset([IPv4Address("203.0.113.10"), hostile]), {IPv4Address("203.0.113.10"), hostile}):
        with pytest.raises(v.DataplaneValueError):
            GatewayState(public_interface="eth0", addresses=addresses, snat={}, return_routes={},
                         guarded_sources=frozenset(), pools=frozenset([IPv4Network("203.0.113.0/24")]))
        with pytest.raises(v.DataplaneValueError):
            GatewayState.build(public_interface="eth0", addresses=[IPv4Address("203.0.113.10")],
                               legacy_addresses=addresses, pools=["203.0.113.0/24"])


def _wrapped(elem):
    # nft's form of an element with a timeout or counter: never a plain text or pair, so it takes the
    # parser's general path.
    return {"elem": {"val": elem, "counter": {"packets": 0, "bytes": 0}}}


def _anyip_nft(keys, targets, guarded, wrap):
    doc = json.loads(td.GW_ANYIP_NFT_JSON)
    for item in doc["nftables"]:
        body = item.get("map") or item.get("set") or {}
        elems = {"snat_by_source": [[k, x] for k, x in zip(keys, targets, strict=False)], "mapped_sources": list(keys),
                 "guarded_sources": list(guarded)}.get(body.get("name"))
        if elems is not None:
            body["elem"] = [_wrapped(e) for e in elems] if wrap else elems
    return json.dumps(doc)


_key_texts = st.one_of(
    st.builds(lambda n: str(IPv4Address(0xC6130100 + n)), st.integers(0, 40)),
    st.builds(lambda n, p: f"{IPv4Address(0xC6130100 + n)}/{p}", st.integers(0, 40), st.sampled_from([30, 31, 32])),
    _texts,
)


@_settings
@given(st.lists(_key_texts, max_size=12), st.lists(st.sampled_from(["203.0.113.10", "203.0.113.11", "203.0.113.12",
       "x"]), min_size=12, max_size=12), st.lists(_key_texts, max_size=4))
def test_plain_nft_elements_parse_as_the_general_path_parses_them(keys, targets, guarded):
    def parse(wrap):
        return _outcome(lambda nft: parse_gateway(nft, td.GW_ANYIP_ADDR_JSON, td.GW_ANYIP_ROUTES_JSON, "eth0",
                                                  arp_json=td.GW_ANYIP_ARP_JSON), _anyip_nft(keys, targets, guarded, wrap))

    assert parse(False) == parse(True)

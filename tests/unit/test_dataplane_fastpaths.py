"""The dataplane's fast paths give exactly what the slow ones gave: validation once per text (cached, errors
never cached), typed IPv4 values taken as they are, sorting and collapsing on integers."""

from __future__ import annotations

import random
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, collapse_addresses

import pytest

from egressportal.dataplane import GatewayState, NodeState
from egressportal.dataplane import model as m
from egressportal.dataplane import validate as v


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

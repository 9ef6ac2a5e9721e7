"""Dual-stack dataplane states: IPv6 validation as strict as IPv4, families never mixed within an entry."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest

from egressportal.dataplane import (
    UNROUTED6,
    DataplaneValueError,
    GatewayState,
    NodeState,
    state_from_doc,
    state_to_doc,
)
from egressportal.dataplane import validate as v

GW6 = dict(
    public_interface="eth1",
    addresses=["203.0.113.10", "2001:db8:0:2::10"],
    snat={"198.19.1.0/24": "203.0.113.10", "2001:db8:10:1::/64": "2001:db8:0:2::10"},
    return_routes={"198.19.1.0/24": "198.18.0.11", "2001:db8:10:1::/64": "2001:db8:0:1::11"},
    guarded_sources=["198.19.0.0/16", "2001:db8:10:1::/64", "2001:db8:10:2::/64"],
)
NODE6 = dict(
    steering={"198.19.1.0/24": 1, "2001:db8:10:1::/64": 2},
    gateways={1: "198.18.0.2"},
    gateways6={2: "2001:db8:0:1::3"},
    internal=["198.18.0.0/15", "2001:db8::/32"],
)


def test_dual_stack_states_build_and_normalise():
    gw = GatewayState.build(**GW6)
    assert IPv6Address("2001:db8:0:2::10") in gw.addresses
    assert gw.snat[IPv6Network("2001:db8:10:1::/64")] == IPv6Address("2001:db8:0:2::10")
    # Adjacent IPv6 networks collapse like IPv4 ones, each family on its own.
    assert IPv6Network("2001:db8:10::/62") not in gw.guarded_sources
    assert IPv6Network("2001:db8:10:2::/63") not in gw.guarded_sources
    assert GatewayState.build(**{**GW6, "guarded_sources": ["2001:db8:10::/64", "2001:db8:10:1::/64"]}
                              ).guarded_sources == {IPv6Network("2001:db8:10::/63")}  # fmt: skip
    node = NodeState.build(**NODE6)
    assert node.gateways6 == {2: IPv6Address("2001:db8:0:1::3")}
    # Iteration is deterministic: IPv4 keys first, then IPv6.
    assert [k.version for k in node.steering] == [4, 6]


def test_ipv4_only_callers_unchanged():
    node = NodeState.build(steering={"198.19.1.0/24": 1}, gateways={1: "198.18.0.2"})
    assert node.gateways6 == {}
    assert NodeState(node.steering, node.gateways, node.internal) == node


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("::ffff:198.51.100.1", "invalid IPv6 address"),  # dotted quad: never accepted
        ("::ffff:c633:6401", "inside reserved ::ffff:0:0/96"),  # v4-mapped in hex
        ("::c633:6401", "inside reserved ::/96"),  # v4-compatible
        ("::1", "inside reserved ::/96"),
        ("::", "inside reserved ::/96"),
        ("fe80::1", "inside reserved fe80::/10"),
        ("fec0::1", "inside reserved fec0::/10"),
        ("ff02::1", "inside reserved ff00::/8"),
        ("2001:db8::1%eth0", "invalid IPv6 address"),
        ("2001:db8::1/128", "invalid IPv6 address"),
        ("2001:db8::1 ", "invalid IPv6 address"),
        ("2001:db8::1\n", "invalid IPv6 address"),
        ("2001:db8::1;reboot", "invalid IPv6 address"),
        ("２001:db8::1", "invalid IPv6 address"),  # a fullwidth digit
        ("2001:db8:::1", "invalid IPv6 address"),
        ("2001:db8::g", "invalid IPv6 address"),
        (IPv4Address("198.51.100.1"), "is IPv4"),
        (5, "must be a string"),
    ],
)
def test_ipv6_address_rejections(value, message):
    with pytest.raises(DataplaneValueError, match=message.replace(".", r"\.").replace("/", "/")):
        v.ipv6_address(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001:db8::1/64", r"host bits set \(did you mean 2001:db8::/64\?\)"),
        ("2000::/8", "prefix shorter than /16"),
        ("::/0", "prefix shorter than /16"),
        ("::ffff:0:0/96", "inside reserved"),
        ("::ffff:0:0/112", "inside reserved"),
        ("fe80::/64", "inside reserved"),
        ("ff00::/16", "inside reserved"),
        ("2001:db8::/129", "invalid IPv6 network"),
        ("2001:db8::/64 ", "invalid IPv6 network"),
        ("2001:db8::/-1", "invalid IPv6 network"),
    ],
)
def test_ipv6_network_rejections(value, message):
    with pytest.raises(DataplaneValueError, match=message):
        v.ipv6_network(value)


def test_ipv6_accepts_global_and_unique_local():
    assert v.ipv6_network("2001:db8:10:1::/64") == IPv6Network("2001:db8:10:1::/64")
    assert v.ipv6_network("2001:db8::5") == IPv6Network("2001:db8::5/128")
    assert v.ipv6_address("FD00::1") == IPv6Address("fd00::1")
    assert v.ip_address("2001:db8::1").version == 6 and v.ip_address("198.51.100.1").version == 4
    assert v.ip_network("2001:db8::/32").version == 6 and v.ip_network("198.18.0.0/15").version == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"snat": {"2001:db8:10:1::/64": "203.0.113.10"}}, "mixes IPv6 and IPv4"),
        ({"snat": {"198.19.1.0/24": "2001:db8:0:2::10"}}, "mixes IPv4 and IPv6"),
        ({"return_routes": {"2001:db8:10:1::/64": "198.18.0.11"}}, "mixes IPv6 and IPv4"),
        ({"snat": {"2001:db8:10:1::/64": "2001:db8:0:2::99"}}, "not one of this gateway's addresses"),
        ({"snat": {"2001:db8:10::/48": "2001:db8:0:2::10", "2001:db8:10:1::/64": "2001:db8:0:2::10"}},
         "overlapping SNAT source CIDRs"),
        ({"addresses": ["fe80::1"]}, "inside reserved"),
        ({"guarded_sources": ["::ffff:0:0/96"]}, "inside reserved"),
        ({"public_interface": "eth1;reboot"}, "invalid interface name"),
    ],
)
def test_gateway_state_refuses(change, message):
    with pytest.raises(DataplaneValueError, match=message):
        GatewayState.build(**{**GW6, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # An IPv6 source steered to a slot that only has an IPv4 gateway would leave from the node's address.
        ({"steering": {"2001:db8:10:1::/64": 1}}, "slot has no IPv6 gateway"),
        ({"steering": {"198.19.1.0/24": 2}}, "slot has no gateway"),
        ({"gateways6": {2: "198.18.0.3"}}, "invalid IPv6 address"),
        ({"gateways": {1: "2001:db8:0:1::3"}}, "IPv6 is not supported"),
        ({"gateways6": {0: "2001:db8:0:1::3"}}, "out of range"),
        ({"internal": ["2001:db8::1/32"]}, "host bits set"),
    ],
)
def test_node_state_refuses(change, message):
    with pytest.raises(DataplaneValueError, match=message):
        NodeState.build(**{**NODE6, **change})


def test_unrouted6_only_as_itself():
    # A parsed host state may hold "::" for a slot's rule without route; nothing else reserved passes.
    assert NodeState.build(gateways6={3: "::"}).gateways6 == {3: UNROUTED6}
    with pytest.raises(DataplaneValueError):
        NodeState.build(gateways6={3: "::1"})


def test_doc_round_trip_and_old_docs():
    for state in (GatewayState.build(**GW6), NodeState.build(**NODE6)):
        assert state_from_doc(state_to_doc(state)) == state
    # A node doc stored before gateways6 existed still loads.
    old = state_to_doc(NodeState.build(steering={"198.19.1.0/24": 1}, gateways={1: "198.18.0.2"}))
    del old["gateways6"]
    assert state_from_doc(old).gateways6 == {}
    # ...but a missing required field is still an error.
    del old["steering"]
    with pytest.raises(DataplaneValueError):
        state_from_doc(old)

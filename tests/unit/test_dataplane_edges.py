"""Edges of the dataplane's pure code that the broader tests in test_dataplane.py leave open (found by mutation
testing, docs/MUTATION.md): what validation says when it refuses a value (these messages end up in an app's last
error and in the event timeline, so they must name the value and what was expected), the exact edges of ranges,
and the state model's maps."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from egressportal.dataplane import (
    DataplaneValueError,
    GatewayState,
    NodeState,
    ip_batch_script,
    plan_gateway,
    plan_gateway_decommission,
    plan_node,
    render_gateway_ip,
    render_gateway_nft,
    render_node_ip,
    render_node_nft,
)
from egressportal.dataplane import validate as v
from egressportal.dataplane.model import FrozenMap


def _message(func, *args) -> str:
    with pytest.raises(DataplaneValueError) as info:
        func(*args)
    return str(info.value)


@pytest.mark.parametrize(
    ("func", "value", "message"),
    [
        (v.interface_name, 7, "interface name must be a string, got int"),
        (v.interface_name, "eth0;x", "invalid interface name 'eth0;x': 1-15 characters of A-Z a-z 0-9 _ . -"),
        (v.ipv4_address, None, "IPv4 address must be a string, got NoneType"),
        (v.ipv4_address, "2001:db8::1", "invalid IPv4 address '2001:db8::1': IPv6 is not supported"),
        (v.ipv4_address, "198.18.0.1/32", "invalid IPv4 address '198.18.0.1/32'"),
        (v.ipv4_address, "198.18.0", "invalid IPv4 address '198.18.0'"),
        (v.ipv4_network, 3.5, "IPv4 network must be a string, got float"),
        (v.ipv4_network, "2001:db8::/32", "invalid IPv4 network '2001:db8::/32': IPv6 is not supported"),
        (v.ipv4_network, "198.18.0.0/", "invalid IPv4 network '198.18.0.0/'"),
        (v.ipv4_network, "198.18.20.1/24", "invalid IPv4 network '198.18.20.1/24': host bits set "
                                           "(did you mean 198.18.20.0/24?)"),
        (v.slot, "1", "gateway slot must be an integer, got '1'"),
        (v.slot, 251, "gateway slot 251 out of range 1..250"),
    ],
)
def test_refusals_say_what_and_why(func, value, message):
    assert _message(func, value) == message


def test_out_of_range_octets_name_the_value_and_the_reason():
    assert _message(v.ipv4_address, "198.18.0.256").startswith("invalid IPv4 address '198.18.0.256': ")
    assert _message(v.ipv4_network, "198.18.0.0/33").startswith("invalid IPv4 network '198.18.0.0/33': ")


def test_range_edges_are_inclusive():
    assert v.slot(1) == 1
    assert v.slot(v.MAX_SLOT) == v.MAX_SLOT == 250
    assert v.int_in_range(10, 10, 10, "x") == 10
    assert _message(v.int_in_range, 11, 10, 10, "table") == "table 11 out of range 10..10"


def test_typed_values_pass_through_and_an_address_is_a_host_network():
    address = IPv4Address("198.18.0.9")
    assert v.ipv4_address(address) is address
    network = IPv4Network("198.18.0.0/24")
    assert v.ipv4_network(network) is network
    assert v.ipv4_network(address) == IPv4Network("198.18.0.9/32")


def test_frozen_map_from_a_mapping_or_pairs_iterates_sorted():
    from_mapping = FrozenMap({"b": 2, "a": 1})
    from_pairs = FrozenMap([("b", 2), ("a", 1)])
    assert list(from_mapping.items()) == list(from_pairs.items()) == [("a", 1), ("b", 2)]
    assert from_mapping == from_pairs == {"a": 1, "b": 2}
    assert from_mapping["b"] == 2 and len(from_mapping) == 2
    assert hash(from_mapping) == hash(from_pairs)


def test_duplicate_keys_are_refused():
    assert _message(FrozenMap, [("a", 1), ("a", 2)]) == "duplicate keys"
    with pytest.raises(DataplaneValueError, match="^duplicate keys$"):
        GatewayState.build(
            public_interface="eth1", addresses=["203.0.113.10", "203.0.113.11"],
            snat=[("198.19.1.0/24", "203.0.113.10"), ("198.19.1.0/24", "203.0.113.11")],
        )


def test_overlaps_are_refused_naming_both_networks():
    with pytest.raises(DataplaneValueError) as info:
        GatewayState.build(
            public_interface="eth1", addresses=["203.0.113.10"],
            snat={"198.19.1.0/24": "203.0.113.10", "198.19.1.128/25": "203.0.113.10"},
        )
    assert str(info.value) == "overlapping SNAT source CIDRs: 198.19.1.0/24 and 198.19.1.128/25"
    with pytest.raises(DataplaneValueError) as info:
        NodeState.build(steering={"198.19.1.0/24": 1, "198.19.1.7/32": 1}, gateways={1: "198.18.8.1"})
    assert str(info.value) == "overlapping steered source CIDRs: 198.19.1.0/24 and 198.19.1.7/32"


# --- rendering: the exact text a host receives ----------------------------------------------------------
# The structure tests in test_dataplane.py check the parts that matter most; these pin the whole script, so
# that any change to what reaches a host is a deliberate one (both scripts pass `nft -c -f`, and the kernel
# tests in tests/integration/test_dataplane_kernel.py apply the renderer's output for real).

GATEWAY_NFT = """\
table ip egressportal {}
delete table ip egressportal
table ip egressportal {
  map snat_by_source {
    type ipv4_addr : ipv4_addr
    flags interval
    elements = { 198.19.1.0/24 : 203.0.113.10,
                 198.19.2.0/25 : 203.0.113.11,
                 198.19.3.5/32 : 203.0.113.11 }
  }
  set mapped_sources {
    type ipv4_addr
    flags interval
    elements = { 198.19.1.0/24,
                 198.19.2.0/25,
                 198.19.3.5/32 }
  }
  set guarded_sources {
    type ipv4_addr
    flags interval
    elements = { 198.19.0.0/16 }
  }
  chain postrouting {
    type nat hook postrouting priority srcnat - 10; policy accept;
    oifname "eth0" snat ip to ip saddr map @snat_by_source
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    oifname "eth0" ip saddr @guarded_sources ip saddr != @mapped_sources drop
  }
}
table arp egressportal {}
delete table arp egressportal
table arp egressportal {
  set pool_prefixes {
    type ipv4_addr
    flags interval
    elements = { 203.0.113.0/25 }
  }
  set egress_addresses {
    type ipv4_addr
    elements = { 203.0.113.10,
                 203.0.113.11 }
  }
  chain input {
    type filter hook input priority filter; policy accept;
    arp operation request arp daddr ip @pool_prefixes arp daddr ip != @egress_addresses drop
  }
}
"""

NODE_NFT = """\
table ip egressportal {}
delete table ip egressportal
table ip egressportal {
  map mark_by_source {
    type ipv4_addr : verdict
    flags interval
    elements = { 198.19.1.0/24 : goto mark_slot_1,
                 198.19.2.0/25 : goto mark_slot_2 }
  }
  set internal {
    type ipv4_addr
    flags interval
    elements = { 198.18.0.0/24,
                 198.18.250.0/24,
                 198.19.0.0/16 }
  }
  chain mark_slot_1 {
    meta mark set meta mark & 0xff00ffff | 0x00010000
  }
  chain mark_slot_2 {
    meta mark set meta mark & 0xff00ffff | 0x00020000
  }
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    ip daddr != @internal ip saddr vmap @mark_by_source
  }
}
"""


def _gateway(**kw) -> GatewayState:
    base = dict(
        public_interface="eth0",
        addresses=["203.0.113.10", "203.0.113.11"],
        snat={"198.19.1.0/24": "203.0.113.10", "198.19.2.0/25": "203.0.113.11", "198.19.3.5/32": "203.0.113.11"},
        return_routes={"198.19.1.0/24": "198.18.0.11", "198.19.2.0/24": "198.18.0.12"},
        guarded_sources=["198.19.0.0/16"],
        pools=["203.0.113.0/25"],
    )
    return GatewayState.build(**{**base, **kw})


def _node(**kw) -> NodeState:
    base = dict(
        steering={"198.19.1.0/24": 1, "198.19.2.0/25": 2},
        gateways={1: "198.18.0.1", 2: "198.18.0.2", 3: "198.18.0.3"},
        internal=["198.19.0.0/16", "198.18.250.0/24", "198.18.0.0/24"],
    )
    return NodeState.build(**{**base, **kw})


def test_gateway_script_is_exactly_this():
    assert render_gateway_nft(_gateway()) == GATEWAY_NFT


def test_node_script_is_exactly_this():
    assert render_node_nft(_node()) == NODE_NFT


def test_node_plan_summary_counts_each_kind_of_change():
    # What the node's "reconciled" event says (the admin's timeline): one entry per kind of change.
    assert plan_node(None, _node()).summary() == "+3 gateways, steering 0->2 entries, internal 3"
    changed = _node(gateways={1: "198.18.0.1", 2: "198.18.0.9", 4: "198.18.0.4"}, steering={"198.19.1.0/24": 1})
    plan = plan_node(_node(), changed)
    assert plan.summary() == "+1 gateway, ~1 gateway, -1 gateway, steering 2->1 entries"
    assert plan.pre_ip == [
        "route replace default via 198.18.0.9 table 7102 proto 250",
        "route replace default via 198.18.0.4 table 7104 proto 250",
        "rule add fwmark 0x40000/0xff0000 lookup 7104 priority 7104 protocol 250",
    ]
    assert plan.post_ip == [
        "rule del fwmark 0x30000/0xff0000 lookup 7103 priority 7103 protocol 250",
        "route del default via 198.18.0.3 table 7103 proto 250",
    ]
    assert render_node_ip(_node(), changed) == [line.split() for line in ["ip " + x for x in plan.pre_ip + plan.post_ip]]
    two_gateways_changed = _node(gateways={1: "198.18.0.7", 2: "198.18.0.8", 3: "198.18.0.3"})
    assert plan_node(_node(), two_gateways_changed).summary() == "~2 gateways"
    assert plan_node(_node(), _node(gateways={1: "198.18.0.1", 2: "198.18.0.2"})).summary() == "-1 gateway"
    same_size = _node(steering={"198.19.1.0/24": 2, "198.19.2.0/25": 1})
    assert plan_node(_node(), same_size).summary() == "steering 2 entries changed"
    internal_only = plan_node(_node(), _node(internal=["198.19.0.0/16"]))
    assert internal_only.summary() == "internal 1" and internal_only.nft is not None
    assert plan_node(_node(), _node()).changes == ()


def test_gateway_plan_without_a_counted_change_says_the_table_was_rewritten():
    # An actual table whose contents differ only in what the counts do not see (here: a tampered snat
    # target of the same size) is rewritten, and the summary says so rather than "no changes".
    actual = _gateway(snat={"198.19.1.0/24": "203.0.113.11", "198.19.2.0/25": "203.0.113.11",
                            "198.19.3.5/32": "203.0.113.11"})
    plan = plan_gateway(actual, _gateway())
    assert plan.summary() == "snat 3 entries changed"
    interface_moved = plan_gateway(_gateway(public_interface="eth1"), _gateway())
    assert interface_moved.nft == GATEWAY_NFT and interface_moved.summary() == "nft table rewritten"


def test_old_layout_addresses_leave_the_interface_they_were_on():
    old = _gateway(legacy_addresses=["203.0.113.10", "203.0.113.11"])
    moved = _gateway(public_interface="eth1", addresses=["203.0.113.10"], snat={"198.19.1.0/24": "203.0.113.10"})
    assert render_gateway_ip(old, moved) == [
        ["ip", "addr", "del", "203.0.113.10/32", "dev", "eth0"],
        ["ip", "addr", "del", "203.0.113.11/32", "dev", "eth0"],
    ]


def test_plan_steps_feed_ip_batch_one_line_per_command():
    plan = plan_gateway(
        _gateway(addresses=["203.0.113.12", "203.0.113.13"], snat={}, return_routes={}, pools=["203.0.113.12/31"],
                 legacy_addresses=["203.0.113.13"]),
        _gateway(addresses=["203.0.113.10", "203.0.113.11"], snat={}, return_routes={"198.19.1.0/24": "198.18.0.11"}),
    )
    steps = plan.steps()
    assert steps[0] == (["ip", "-batch", "-"], "route replace 198.19.1.0/24 via 198.18.0.11 proto 250\n")
    assert steps[1][0] == ["nft", "-f", "-"]
    assert steps[2] == (
        ["ip", "-batch", "-"],
        "route replace local 203.0.113.0/25 dev lo table 255 proto 250\naddr del 203.0.113.13/32 dev eth0\n"
        "route del local 203.0.113.12/31 dev lo table 255 proto 250\n",
    )
    assert [argv[0] for argv, _ in steps] == ["ip", "nft", "ip", "nft"]  # the announcement is no step


def test_render_refusals_say_what_and_why():
    assert _message(ip_batch_script, [["addr", "add", "x y"]]) == "unsafe token in ip command: 'x y'"
    unrouted = NodeState.build(gateways={1: "0.0.0.0"})
    assert _message(render_node_ip, None, unrouted) == "0.0.0.0 is not a valid gateway transit address"


def test_decommission_without_a_table_only_removes_addresses_and_says_so():
    leftover = GatewayState.build(public_interface="eth0", addresses=["203.0.113.10"],
                                  return_routes={"198.19.1.0/24": "198.18.0.11"})
    plan = plan_gateway_decommission(leftover, table_exists=False)
    # Deleting a table that is not there would fail the whole teardown: the ip table is left alone, the
    # ARP table is deleted the way that works whether or not it exists.
    assert plan.nft == "table arp egressportal {}\ndelete table arp egressportal\n"
    assert plan.steps()[0] == (["ip", "-batch", "-"], "route del local 203.0.113.10/32 dev lo table 255 proto 250\n"
                                                       "route del 198.19.1.0/24 via 198.18.0.11 proto 250\n")
    assert plan.summary() == "drained: product tables, pool routes, addresses and routes removed"
    assert plan_gateway_decommission(GatewayState.build(public_interface="eth0"), table_exists=True).steps() == [
        (["nft", "-f", "-"], "delete table ip egressportal\ntable arp egressportal {}\ndelete table arp egressportal\n")
    ]

"""The lab's address plan: the default lab is the one every test and the demo know, and a fleet lab
(more gateways and nodes) keeps every address unique and inside the ranges the lab may use."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from workers.lab import plan
from workers.lab.topology import Lab, LabConfig


def test_the_default_lab_is_two_gateways_and_two_nodes_with_the_known_addresses():
    assert plan.HOST_PLAN == plan.host_plan() == plan.host_plan(2, 2)
    assert {n: (h.role, h.octet, str(h.public), str(h.pod_cidr)) for n, h in plan.HOST_PLAN.items()} == {
        "gw1": ("gateway", 11, "203.0.113.2", "None"),
        "gw2": ("gateway", 12, "203.0.113.3", "None"),
        "node1": ("node", 21, "203.0.113.21", "198.18.64.0/24"),
        "node2": ("node", 22, "203.0.113.22", "198.18.65.0/24"),
    }
    assert list(Lab(LabConfig(prefix="zq", index=1)).hosts) == ["gw1", "gw2", "node1", "node2"]


@pytest.mark.parametrize(("gateways", "nodes"), [(4, 40), (plan.MAX_GATEWAYS, plan.MAX_NODES)])
def test_a_fleet_keeps_every_address_unique_and_in_its_range(gateways, nodes):
    hosts = plan.host_plan(gateways, nodes)
    assert sum(h.role == "gateway" for h in hosts.values()) == gateways
    assert sum(h.role == "node" for h in hosts.values()) == nodes
    assert {n: h for n, h in hosts.items() if n in plan.HOST_PLAN} == plan.HOST_PLAN  # the first four unchanged
    mgmt = [h.mgmt_address(plan.MAX_INDEX) for h in hosts.values()]
    transit = [h.transit_address for h in hosts.values()]
    public = [h.public for h in hosts.values()]
    pods = [h.pod_cidr for h in hosts.values() if h.pod_cidr is not None]
    for addresses in (mgmt, transit, public):
        assert len(set(addresses)) == len(hosts)
    assert all(a in plan.mgmt_network(plan.MAX_INDEX) and a != plan.mgmt_bridge_address(plan.MAX_INDEX).ip for a in mgmt)
    assert all(a in plan.TRANSIT_NET for a in transit)
    # Public addresses: on the public segment, never the router's, never in the egress pool.
    assert all(a in plan.PUBLIC_NET and a != plan.ROUTER_PUBLIC.ip and a not in plan.EGRESS_POOL for a in public)
    assert len(pods) == nodes
    assert all(p.subnet_of(IPv4Network("198.18.64.0/18")) and not p.overlaps(plan.TRANSIT_NET) for p in pods)
    assert all(not a.overlaps(b) for i, a in enumerate(pods) for b in pods[i + 1:])


def test_fleet_sizes_out_of_range_are_refused():
    for gateways, nodes in ((0, 2), (2, 0), (plan.MAX_GATEWAYS + 1, 2), (2, plan.MAX_NODES + 1), (2.0, 2)):
        with pytest.raises(ValueError):
            LabConfig(prefix="zq", index=1, gateways=gateways, nodes=nodes)


def test_a_fleet_lab_knows_its_hosts():
    lab = Lab(LabConfig(prefix="zq", index=3, gateways=4, nodes=40))
    assert lab.netns("node40") == "zq-node40" and lab.netns("gw4") == "zq-gw4"
    assert lab.hosts["node40"].mgmt_address == "198.18.3.60"
    assert lab.hosts["node40"].public_address == str(IPv4Address("203.0.113.60"))
    assert [h for h in lab.hosts if lab.hosts[h].role == "gateway"] == ["gw1", "gw2", "gw3", "gw4"]

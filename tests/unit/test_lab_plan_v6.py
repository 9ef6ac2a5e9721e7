"""The lab's IPv6 plan: documentation prefix only, one pod /64 per node of any lab size, app /120s inside it."""

from __future__ import annotations

from ipaddress import IPv6Network

from egressportal.dataplane import validate as v
from workers.lab import plan

DOC = IPv6Network("2001:db8::/32")


def test_every_ipv6_network_and_address_is_documentation_space_and_valid_for_the_dataplane():
    hosts = plan.host_plan(plan.MAX_GATEWAYS, plan.MAX_NODES)
    for net in (plan.TRANSIT_NET6, plan.PUBLIC_NET6, plan.EGRESS_POOL6, plan.INTERNET_NET6, plan.POD_NET6_BASE):
        assert net.subnet_of(DOC)
        v.ipv6_network(net)
    for h in hosts.values():
        assert h.transit_address6 in plan.TRANSIT_NET6 and h.public6 in plan.PUBLIC_NET6
        assert h.public6 not in plan.EGRESS_POOL6 and h.public6 != plan.ROUTER_PUBLIC6.ip
        v.ipv6_address(h.transit_address6)
    pods = [h.pod_cidr6 for h in hosts.values() if h.role == "node"]
    assert all(p is not None and p.subnet_of(plan.POD_NET6_BASE) for p in pods)
    assert len(set(pods)) == len(pods)  # one /64 per node, 63 nodes


def test_app_networks_sit_inside_their_node_pod_network_and_never_on_the_bridge():
    for node in ("node1", "node2", f"node{plan.MAX_NODES}"):
        pods = plan.host_plan(1, plan.MAX_NODES)[node].pod_cidr6
        nets = [plan.app_net6(node, slot) for slot in range(16)]  # every /28 slot of the pod /24
        assert len({n for n, _ in nets}) == 16
        for net, address in nets:
            assert net.subnet_of(pods) and address in net and net.prefixlen == 120
            assert pods.network_address + 1 not in net  # the pod bridge's own address
            v.ipv6_network(net)

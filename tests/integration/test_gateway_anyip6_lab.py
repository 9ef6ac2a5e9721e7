"""The gateway's IPv6 address plan by packet in the lab (docs/ARCHITECTURE.md, "The gateway's address plan"):
the IPv6 pool as local routes through lo and one proxy NDP entry per address. Seen from the public segment
(the lab's router): a neighbour solicitation for an assigned address is answered by its own gateway only, one
for an unassigned pool address by nobody; an address that moves to the other gateway is reachable at once
(unsolicited neighbour advertisement); a gateway still on the /128 layout migrates while an app sends a
request every 100 ms, none lost.

Hand-built states (as tests/integration/test_ipv6_lab.py: the domain registers no IPv6 pool in the lab yet),
rendered by the product's renderer, applied and read back in one exec per host through the SSH session class.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from egressportal.core.ipam6 import usable_prefixes6
from egressportal.dataplane import GatewayState, NodeState, Plan
from tests.integration.test_gateway_anyip_lab import TRAFFIC, mac_of
from tests.integration.test_ipv6_lab import APP, GATEWAYS, SLOT, hosts, pods  # noqa: F401  (fixture)
from workers.lab import HOST_PLAN
from workers.lab import plan as lab_plan
from workers.lab.plan import IF

pytestmark = [pytest.mark.lab]

POOL6 = [str(n) for n in usable_prefixes6(lab_plan.EGRESS_POOL6)]
E1, E2, UNASSIGNED = "2001:db8:0:2:e::1", "2001:db8:0:2:e::2", "2001:db8:0:2:e::3"

# Runs on the router: a neighbour solicitation for argv[2] out of argv[1] (to the target's solicited-node
# group, as a router resolving it sends), then prints the link-layer addresses of every advertisement for
# that target heard within a second. Independent of the product: its own raw socket.
NS_PROBE = r"""
import fcntl, ipaddress, json, socket as S, struct, sys, time
i, t = sys.argv[1], sys.argv[2]
s = S.socket(S.AF_INET6, S.SOCK_RAW, S.IPPROTO_ICMPV6)
s.setsockopt(S.IPPROTO_IPV6, S.IPV6_MULTICAST_HOPS, 255)
x = S.if_nametoindex(i)
s.setsockopt(S.IPPROTO_IPV6, S.IPV6_MULTICAST_IF, x)
mac = fcntl.ioctl(s.fileno(), 0x8927, struct.pack("256s", i.encode()))[18:24]
tb = S.inet_pton(S.AF_INET6, t)
group = str(ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + tb[13:]))
ns = bytes([135, 0, 0, 0, 0, 0, 0, 0]) + tb + bytes([1, 1]) + mac
seen, end = set(), time.monotonic() + 1.0
s.sendto(ns, (group, 0, 0, x))
s.settimeout(0.05)
while time.monotonic() < end:
    try:
        data = s.recv(2048)
    except OSError:
        continue
    if len(data) >= 24 and data[0] == 136 and data[8:24] == tb:
        o = 24
        while o + 8 <= len(data) and data[o + 1]:
            if data[o] == 2:
                seen.add(data[o + 2:o + 8].hex(":"))
            o += data[o + 1] * 8
print(json.dumps(sorted(seen)))
"""


def ns_answers(lab, address: str) -> set[str]:
    """The MACs that answer a neighbour solicitation for ``address`` on the public segment (asked by the router)."""
    out = lab.host_exec("inet", [sys.executable, "-c", NS_PROBE, IF.PUBLIC, address]).stdout
    return set(json.loads(out))


def routes() -> dict[str, str]:
    nodes = [h for h, p in HOST_PLAN.items() if p.role == "node"]
    return {str(HOST_PLAN[n].pod_cidr6): str(HOST_PLAN[n].transit_address6) for n in nodes}


def gateway6(addresses: list[str], snat: dict[str, str] | None = None) -> GatewayState:
    """A gateway holding ``addresses`` of the lab's IPv6 pool (held as its usable prefixes)."""
    return GatewayState.build(
        public_interface=IF.PUBLIC, addresses=addresses, snat=snat or {}, return_routes=routes(),
        guarded_sources=pods(), pools=POOL6,
    )  # fmt: skip


def steer6(app, gw: str | None) -> NodeState:
    return NodeState.build(
        steering={app.cidr6: SLOT[gw]} if gw else {},
        gateways={SLOT[g]: str(HOST_PLAN[g].transit_address) for g in GATEWAYS},
        gateways6={SLOT[g]: str(HOST_PLAN[g].transit_address6) for g in GATEWAYS},
        internal=[str(lab_plan.TRANSIT_NET), str(lab_plan.TRANSIT_NET6), *pods()],
    )


def router_mac(lab, address: str) -> str:
    return lab.host_exec("inet", ["ip", "-j", "-6", "neigh", "show", address, "dev", IF.PUBLIC]).stdout.lower()


def test_solicitations_are_answered_only_by_the_gateway_that_holds_the_address(clean_lab, hosts):  # noqa: F811
    lab = clean_lab
    hosts["gw1"].converge(gateway6([E1]))
    hosts["gw2"].converge(gateway6([E2]))
    for gw in GATEWAYS:  # the pool as a few local routes, no /128 per address
        local = lab.host_exec(gw, ["ip", "-6", "route", "show", "table", "local", "proto", "250"]).stdout
        assert "dev lo" in local and len(local.splitlines()) == len(POOL6)
        assert "2001:db8:0:2:e:" not in lab.host_exec(gw, ["ip", "-6", "addr", "show", "dev", IF.PUBLIC]).stdout
    assert ns_answers(lab, E1) == {mac_of(lab, "gw1")}
    assert ns_answers(lab, E2) == {mac_of(lab, "gw2")}
    assert ns_answers(lab, UNASSIGNED) == set()
    # The probe hears every answer: with a proxy entry for E1 made by hand on gw2, both gateways answer.
    lab.host_exec("gw2", ["ip", "-6", "neigh", "add", "proxy", E1, "dev", IF.PUBLIC])
    try:
        assert ns_answers(lab, E1) == {mac_of(lab, "gw1"), mac_of(lab, "gw2")}
    finally:
        lab.host_exec("gw2", ["ip", "-6", "neigh", "del", "proxy", E1, "dev", IF.PUBLIC])
    # The address is local on its gateway (the pool route): a connection to a closed port is refused at
    # once (not forwarded back out, not left unanswered).
    probe = (
        "import socket,sys\ntry: socket.create_connection((sys.argv[1], 9), timeout=2)\n"
        "except OSError as e: print(type(e).__name__)"
    )
    assert lab.host_exec("inet", [sys.executable, "-c", probe, E1]).stdout.strip() == "ConnectionRefusedError"


def test_a_moved_ipv6_address_is_reachable_at_once(clean_lab, hosts):  # noqa: F811
    lab = clean_lab
    app = lab.apps[APP]
    node = hosts[app.node]
    hosts["gw1"].converge(gateway6([E1], {app.cidr6: E1}))
    node.converge(steer6(app, "gw1"))
    assert lab.seen_ip6(APP) == E1
    assert mac_of(lab, "gw1") in router_mac(lab, E1)  # the router resolved it to gw1 (reachable for ~30 s)
    # The address moves to gw2: gw1 lets it go, then gw2 takes it (and announces it), the node follows.
    hosts["gw1"].converge(gateway6([]))
    hosts["gw2"].converge(gateway6([E1], {app.cidr6: E1}))
    node.converge(steer6(app, "gw2"))
    deadline, seen = time.monotonic() + 0.4, ""
    while time.monotonic() < deadline:
        seen = router_mac(lab, E1)
        if mac_of(lab, "gw2") in seen:
            break
        time.sleep(0.02)
    assert mac_of(lab, "gw2") in seen, seen
    assert lab.seen_ip6(APP, retries=0) == E1
    assert ns_answers(lab, E1) == {mac_of(lab, "gw2")}


def to_old_layout6(lab, gw: str, addresses: list[str]) -> None:
    """What the previous version left: a /128 per address on the public interface (recorded in the ip6 table,
    which the new layout keeps writing), no pool route, no proxy entry. Built keeping the address reachable."""
    lab.host_exec(gw, ["ip", "-6", "-batch", "-"],
                  input="".join(f"addr add {a}/128 dev {IF.PUBLIC} nodad\n" for a in addresses))  # fmt: skip
    lines = [f"neigh del proxy {a} dev {IF.PUBLIC}" for a in addresses]
    lines += [f"route del local {p} dev lo table local" for p in POOL6]
    lab.host_exec(gw, ["ip", "-6", "-batch", "-"], input="".join(f"{line}\n" for line in lines))
    assert "proxy" not in lab.host_exec(gw, ["ip", "-6", "neigh", "show", "proxy"]).stdout


def test_a_gateway_on_the_ipv6_128_layout_migrates_without_losing_a_request(clean_lab, hosts):  # noqa: F811
    lab = clean_lab
    app = lab.apps[APP]
    gw = hosts["gw1"]
    desired = gateway6([E1], {app.cidr6: E1})
    gw.converge(desired)
    hosts[app.node].converge(steer6(app, "gw1"))
    to_old_layout6(lab, "gw1", [E1])
    gw.actual = gw.exec(Plan())  # read back only
    assert {str(a) for a in gw.actual.legacy_addresses} == {E1} and not gw.actual.pools
    assert lab.seen_ip6(APP, retries=0) == E1

    traffic = subprocess.Popen(
        ["ip", "netns", "exec", app.netns, sys.executable, "-c", TRAFFIC, str(lab_plan.ECHO_ADDRESS6), "6", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        gw.converge(desired)  # one exec: pool routes and proxy entry, then the /128 goes
        # The router forgets the address right after: the next request needs a fresh answer from the
        # migrated gateway (its proxy entry).
        lab.host_exec("inet", ["ip", "-6", "neigh", "del", E1, "dev", IF.PUBLIC], check=False)
        out, err = traffic.communicate(timeout=20)
    finally:
        if traffic.poll() is None:
            traffic.kill()
    requests = json.loads(out)
    assert [r for r in requests if r[1] != E1] == []  # none lost, none from another address
    assert len(requests) >= 45, err  # and they kept coming every 100 ms (a lost one waits 1 s)
    assert "2001:db8:0:2:e::1/128" not in lab.host_exec("gw1", ["ip", "-6", "addr", "show", "dev", IF.PUBLIC]).stdout
    assert ns_answers(lab, E1) == {mac_of(lab, "gw1")}

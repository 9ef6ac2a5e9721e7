"""The gateway's address plan in the lab: the pool as anyIP routes behind an ARP guard (docs/ARCHITECTURE.md,
"The gateway's address plan"). Proven from the public segment (the lab's router, 203.0.113.1): ARP is
answered for the addresses a gateway holds and for nothing else of the pool; a gateway still on the old
layout (a /32 per address) migrates while an app sends a request every 100 ms, none lost."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time

import pytest

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Gateway
from tests.integration.test_reconcile_lab import converge
from workers.lab import ECHO_ADDRESS, EGRESS_POOL
from workers.reconcile import host_read_actual, host_reconcile, host_session
from workers.verified import verified_forget

pytestmark = [pytest.mark.lab]

# Runs in an app's namespace: a request to the echo server every `interval` s for `seconds` s, each on a new
# connection (a new conntrack entry: SNAT looked up afresh); prints [[t, seen address or error], ...].
TRAFFIC = r"""
import json, socket, sys, time
host, seconds, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
out, start = [], time.monotonic()
while time.monotonic() - start < seconds:
    t = time.monotonic()
    try:
        with socket.create_connection((host, 80), timeout=1.0) as s:
            s.settimeout(1.0)
            s.sendall(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        out.append([round(t - start, 3), data.decode().split("\r\n\r\n", 1)[-1].strip()])
    except OSError as exc:
        out.append([round(t - start, 3), f"error: {exc}"])
    time.sleep(max(0.0, interval - (time.monotonic() - t)))
print(json.dumps(out))
"""


def mac_of(lab, host: str) -> str:
    link = json.loads(lab.host_exec(host, ["ip", "-j", "link", "show", "dev", "public0"]).stdout)[0]
    return link["address"].lower()


def arp_answers(lab, address: str) -> set[str]:
    """The MACs that answer an ARP request for ``address`` on the public segment (asked by the router)."""
    out = lab.host_exec("inet", ["arping", "-c", "2", "-w", "2", "-I", "public0", address], check=False).stdout
    return {m.lower() for m in re.findall(r"reply from \S+ \[([0-9A-Fa-f:]{17})\]", out)}


def enable(name: str) -> EgressIP:
    services.egress_enable(app=App.objects.get(name=name))
    converge()
    return EgressIP.objects.select_related("gateway").get(app__name=name, role="active")


def test_arp_is_answered_only_for_the_addresses_a_gateway_holds(lab, lab_world, redis_server):
    shop = enable("shop-api")
    billing = enable("billing")
    held = {shop.address: shop.gateway.name, billing.address: billing.gateway.name}
    # Pools hold free rows ahead of use: "taken" is what is not free.
    taken = set(EgressIP.objects.exclude(status="free").values_list("address", flat=True))
    unassigned = next(str(a) for a in EGRESS_POOL.hosts() if str(a) not in taken)
    for gw in Gateway.objects.all():
        # Each gateway holds its pool as one route per prefix, not an address per egress IP.
        routes = lab.host_exec(gw.name, ["ip", "-4", "route", "show", "table", "local", "proto", "250"]).stdout
        assert "dev lo" in routes, routes
        assert "/32" not in lab.host_exec(gw.name, ["ip", "-4", "addr", "show", "dev", "public0"]).stdout
    for address, gw in held.items():
        assert arp_answers(lab, address) == {mac_of(lab, gw)}, address
    assert arp_answers(lab, unassigned) == set()
    assert lab.seen_ip("shop-api") == shop.address and lab.seen_ip("billing") == billing.address


def pool_routes(lab, gw: str) -> str:
    """The gateway's anyIP routes (both families), as the kernel lists them."""
    return "".join(lab.host_exec(gw, ["ip", family, "route", "show", "table", "local", "proto", "250"]).stdout
                   for family in ("-4", "-6"))


def test_the_pools_are_held_before_any_app_and_a_toggle_changes_no_pool_route(lab, lab_world, redis_server):
    converge()  # no dedicated app yet: every gateway holds the region's pools all the same
    gateways = list(Gateway.objects.all())
    before = {gw.name: pool_routes(lab, gw.name) for gw in gateways}
    for gw in gateways:
        assert "dev lo" in before[gw.name] and ":" in before[gw.name], before[gw.name]  # IPv4 and IPv6 pools
    # A gateway holding no address answers ARP for none of its pools' addresses.
    free = [str(a) for a in list(EGRESS_POOL.hosts())[1:4]]
    for address in free:
        assert arp_answers(lab, address) == set(), address
    shop = enable("shop-api")
    assert {gw.name: pool_routes(lab, gw.name) for gw in gateways} == before
    assert arp_answers(lab, shop.address) == {mac_of(lab, shop.gateway.name)}
    services.egress_disable(app=App.objects.get(name="shop-api"))
    results = converge()
    assert not [r.summary for r in results if r and "pool route" in r.summary]
    assert {gw.name: pool_routes(lab, gw.name) for gw in gateways} == before
    assert arp_answers(lab, shop.address) == set()


def test_a_moved_address_is_announced_to_the_router_at_once(lab, lab_world, redis_server):
    shop = enable("shop-api")
    gw = shop.gateway
    # The router believes the address is somewhere else (as after a move from another gateway).
    lab.host_exec("inet", ["ip", "neigh", "replace", shop.address, "lladdr", "02:00:00:00:00:01", "dev", "public0",
                           "nud", "reachable"])
    # The gateway lost the address (drift) and gets it back: new on this gateway, so announced.
    lab.host_exec(gw.name, ["nft", "delete", "element", "arp", "egressportal", "egress_addresses", f"{{ {shop.address} }}"])
    assert host_reconcile(kind="gateway", pk=gw.pk).changed
    deadline = time.monotonic() + 0.4  # well inside the router's own reachable time (0.5 s at the least)
    seen = ""
    while time.monotonic() < deadline:
        seen = lab.host_exec("inet", ["ip", "-j", "neigh", "show", shop.address, "dev", "public0"]).stdout
        if mac_of(lab, gw.name) in seen.lower():
            break
        time.sleep(0.02)
    assert mac_of(lab, gw.name) in seen.lower(), seen
    assert lab.seen_ip("shop-api", retries=0) == shop.address


def to_old_layout(lab, gw: Gateway, addresses: list[str]) -> None:
    """What older versions left on a gateway: a /32 per address on the public interface, recorded in the ip
    table; no pool route, no ARP guard. Built in an order that keeps the addresses reachable throughout."""
    lines = [f"addr add {a}/32 dev {gw.public_interface}" for a in addresses]
    lab.host_exec(gw.name, ["ip", "-batch", "-"], input="".join(f"{line}\n" for line in lines))
    elements = ", ".join(addresses)
    lab.host_exec(gw.name, ["nft", "-f", "-"], input=(
        "add set ip egressportal egress_addresses { type ipv4_addr; }\n"
        f"add element ip egressportal egress_addresses {{ {elements} }}\n"
    ))
    routes = lab.host_exec(gw.name, ["ip", "-4", "route", "show", "table", "local", "proto", "250"]).stdout
    for line in routes.splitlines():
        lab.host_exec(gw.name, ["ip", "route", "del", *line.split(), "table", "local"])
    lab.host_exec(gw.name, ["nft", "delete", "table", "arp", "egressportal"])


def test_a_gateway_on_the_old_layout_migrates_without_losing_a_request(lab, lab_world, redis_server):
    shop = enable("shop-api")
    gw = shop.gateway
    held = list(EgressIP.objects.filter(gateway=gw, status="assigned").values_list("address", flat=True))
    to_old_layout(lab, gw, held)
    old = host_read_actual(host_session(gw), gw)
    # The lab is dual-stack: the gateway holds the addresses' IPv6 partners too, which this layout change
    # (IPv4's ARP guard) does not concern.
    old4 = {a for a in old.addresses if a.version == 4}
    assert old.legacy_addresses == old4 == {ipaddress.IPv4Address(a) for a in held}
    assert not [p for p in old.pools if p.version == 4]  # (its IPv6 pools stay: only IPv4 is on the old layout)
    assert lab.seen_ip("shop-api", retries=0) == shop.address
    verified_forget(gw)  # an upgraded worker cannot read an older version's record: it reads the host first

    traffic = subprocess.Popen(
        ["ip", "netns", "exec", lab.apps["shop-api"].netns, sys.executable, "-c", TRAFFIC, str(ECHO_ADDRESS), "6", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.0)
        result = host_reconcile(kind="gateway", pk=gw.pk)
        # The router forgets the address right after (as its cache would at any moment): the next request
        # needs a fresh ARP answer from the migrated gateway.
        lab.host_exec("inet", ["ip", "neigh", "del", shop.address, "dev", "public0"], check=False)
        out, err = traffic.communicate(timeout=20)
    finally:
        if traffic.poll() is None:
            traffic.kill()
    assert "moved to pool routes" in result.summary, result.summary
    requests = json.loads(out)
    assert [r for r in requests if r[1] != shop.address] == []  # none lost, none from another address
    assert len(requests) >= 45, err  # and they kept coming every 100 ms (a lost one waits 1 s)
    # The new layout, verified: pool routes, the ARP guard, no /32 left.
    after = host_read_actual(host_session(gw), gw)
    assert after.legacy_addresses == set() and after.pools and after.addresses == old.addresses
    assert "/32" not in lab.host_exec(gw.name, ["ip", "-4", "addr", "show", "dev", "public0"]).stdout
    assert arp_answers(lab, shop.address) == {mac_of(lab, gw.name)}
    assert not host_reconcile(kind="gateway", pk=gw.pk).changed

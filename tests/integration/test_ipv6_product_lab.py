"""Dual-stack dedicated egress through the whole product, proved by packet (issue 20): the REST API, the
broker, a real Celery worker with beat and a prober, real sshd and the kernel's nftables in the lab, which
lab_register fills with its IPv6 side (an IPv6 pool, IPv6 transit addresses, the nodes' IPv6 pod /64s, the
apps' IPv6 placements reported by the platform).

The echo server on the lab's IPv6 internet says which source address it saw, for IPv6 as for IPv4: the
node's own address before; the app's dedicated address after enabling; the same after the platform moves
the app to the other node; the standby's when the active gateway loses power, and the active's again when
it comes back empty (repaired before any node steers back: no IPv6 request lost); the standby's when the
active gateway is drained; the node's own address after disabling, and nothing of the app left on any host.

The packets decide; the API's view of the addresses is only used to know which address to expect."""

from __future__ import annotations

import re
import time
from ipaddress import ip_address

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from egressportal.core.models import App, EgressIP, Gateway, HostSync, Node
from tests.conftest import api_token_for
from tests.integration.test_failover import REQUEST_TIMEOUT, TrafficLoop
from tests.integration.worker_fixtures import wait_for
from workers.lab import HOST_PLAN
from workers.lab.plan import EGRESS_POOL, EGRESS_POOL6
from workers.lab_register import lab_platform_account

pytestmark = [pytest.mark.lab, pytest.mark.worker]

APP = "shop-api"  # a demo app of alice's, on node1


class TrafficLoop6(TrafficLoop):
    """TrafficLoop over IPv6: the source address the echo server sees for the app's IPv6 requests."""

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                seen = self.lab.seen_ip6(self.app, timeout=REQUEST_TIMEOUT, retries=0)
            except Exception:
                seen = None
            self.samples.append((time.monotonic(), seen))
            time.sleep(0.05)


def api_for(user) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_for(user)}")
    return api


def seen(lab) -> tuple[str, str]:
    """(IPv4, IPv6) source addresses the echo server sees for the app."""
    return lab.seen_ip(APP), lab.seen_ip6(APP)


def node_own(node: str) -> tuple[str, str]:
    return str(HOST_PLAN[node].public), str(HOST_PLAN[node].public6)


# A gateway holds every pool of its region as anyIP, with or without addresses (they stay after the app is
# gone): local routes through lo covering the whole pool (the /80's cover starts with ::1/128, ::2/127, ...).
# They say nothing about one address: which addresses the gateway answers for is its proxy NDP entries (ARP
# guard for IPv4), checked below.
ANYIP_POOL_ROUTE = re.compile(r"^local \S+ dev lo table local proto 250 ")


def app_traces(lab, values: set[str]) -> list[str]:
    """Where any of ``values`` (the app's egress addresses and source CIDRs) still shows on a lab host, as
    the host's own tools list it (not the product's parser): the whole nft ruleset, IPv6 addresses, IPv6
    rules, the IPv6 routes of every table and the proxy NDP entries (a gateway answers neighbour
    solicitations for the IPv6 addresses it holds)."""
    found = []
    for host in HOST_PLAN:
        for argv in (["nft", "list", "ruleset"], ["ip", "-6", "addr", "show"], ["ip", "-6", "rule", "show"],
                     ["ip", "-6", "route", "show", "table", "all"], ["ip", "-6", "neigh", "show", "proxy"]):
            out = lab.host_exec(host, argv).stdout
            for v in values:
                # A whole token: 2001:db8:0:2:e::1 is not a trace of 2001:db8:0:2:e::10.
                token = re.compile(rf"(?<![0-9a-f:.]){re.escape(v)}(?![0-9a-f:.])")
                found += [f"{host} {' '.join(argv)}: {line.strip()}" for line in out.splitlines()
                          if token.search(line) and not ANYIP_POOL_ROUTE.match(line)]
    return found


def test_dual_stack_egress_through_the_product(lab, worker):
    alice = get_user_model().objects.get(username="alice")
    owner = api_for(alice)
    platform = api_for(lab_platform_account())
    staff = api_for(get_user_model().objects.create_user("admin", is_staff=True, is_superuser=True))
    app = App.objects.get(name=APP)
    instance = lab.apps[APP]

    # The lab is registered dual-stack: the platform reported the app's IPv6 /120 beside its /28.
    assert owner.get(f"/api/v1/apps/{app.pk}/").json()["placements"] == [
        {"node": "node1", "addresses": [instance.cidr, instance.cidr6]}
    ]
    # Before: both families leave from the node's own addresses (the platform's shared egress).
    assert seen(lab) == node_own("node1")

    # Enable through the API: the app's dedicated IPv4 and IPv6 addresses, seen by the echo server.
    put = owner.put(f"/api/v1/apps/{app.pk}/egress/", {"type": "dedicated"}, format="json")
    assert put.status_code == 202, put.content

    def egress() -> dict:
        return owner.get(f"/api/v1/apps/{app.pk}/egress/").json()

    wait_for(lambda: egress()["status"] == "assigned", timeout=30, interval=0.05, what="assigned")
    body = egress()
    assert body["ipv6_available"] is True
    ips = {ip["role"]: ip for ip in body["ips"]}
    active, standby = ips["active"], ips["standby"]
    for ip in (active, standby):
        assert ip_address(ip["address"]) in EGRESS_POOL and ip_address(ip["address6"]) in EGRESS_POOL6, ip
    assert active["gateway"] != standby["gateway"]
    assert seen(lab) == (active["address"], active["address6"])
    # The trace finder finds the app while it is on (its gateway holds and maps the IPv6 address, its node
    # steers the /120): its empty answers at the end mean something.
    held = app_traces(lab, {active["address6"], instance.cidr6})
    assert any(t.startswith(f"{active['gateway']} ") and active["address6"] in t for t in held), held
    assert any(t.startswith("node1 ") and instance.cidr6 in t for t in held), held

    # The platform moves the app to node2 (a redeploy: new /28 and /120) through its API; node1 stops
    # reporting it. The app keeps its addresses: its owner does nothing.
    moved = lab.add_app(APP, "node2")
    node1, node2 = Node.objects.get(name="node1"), Node.objects.get(name="node2")
    for node, keep in ((node2, True), (node1, False)):
        entries = [e for e in platform.get(f"/api/v1/nodes/{node.pk}/placements/").json()["placements"]
                   if e["app"] != app.pk]
        if keep:
            entries.append({"app": app.pk, "addresses": [moved.cidr, moved.cidr6]})
        reported = platform.put(f"/api/v1/nodes/{node.pk}/placements/", {"placements": entries}, format="json")
        assert reported.status_code == 200, reported.content
    wait_for(lambda: seen(lab) == (active["address"], active["address6"]), timeout=20, interval=0.1,
             what=lambda: f"the same addresses from node2 (seen {seen(lab)})")
    wait_for(lambda: not HostSync.objects.exists(), timeout=20, what="the move settled")

    # The active gateway loses power: IPv6 traffic goes to the standby's IPv6 address, like IPv4.
    wait_for(lambda: Gateway.objects.filter(health="healthy").count() == 2, timeout=15, what="gateways healthy")
    loop6 = TrafficLoop6(lab, APP)
    loop6.start()
    try:
        wait_for(lambda: loop6.first_after(time.monotonic() - 0.2, active["address6"]), timeout=5, what="traffic")
        died = time.monotonic()
        lab.power_off(active["gateway"])
        wait_for(lambda: loop6.first_after(died, standby["address6"]), timeout=10, interval=0.05,
                 what="IPv6 traffic on the standby")
        print(f"power loss: IPv6 traffic on the standby after {loop6.first_after(died, standby['address6']) - died:.2f} s")
        assert lab.seen_ip(APP) == standby["address"]
        wait_for(lambda: egress()["status"] == "degraded", timeout=10, what="degraded")
        time.sleep(1)

        # Back, empty as after a reboot: repaired (its IPv6 addresses and SNAT too) before nodes steer back.
        back = time.monotonic()
        lab.power_on(active["gateway"], empty=True)
        wait_for(lambda: loop6.first_after(back, active["address6"]), timeout=15, interval=0.05,
                 what="IPv6 failback")
        returned = loop6.first_after(back, active["address6"])
        print(f"back: IPv6 traffic on the active address {returned - back:.2f} s after power came back")
        time.sleep(1)
    finally:
        loop6.stop()
        lab.power_on(active["gateway"], empty=False)  # a no-op when it is already back
    lost = [t for t, s in loop6.samples if t >= back and s is None]
    assert lost == [], f"{len(lost)} IPv6 requests lost around failback"
    after = {s for t, s in loop6.samples if t > returned + 0.3}
    assert after == {active["address6"]}, after
    wait_for(lambda: egress()["status"] == "assigned", timeout=15, what="assigned again")
    assert seen(lab) == (active["address"], active["address6"])

    # Drain the active gateway through the staff API: the app's IPv6 traffic moves with its IPv4 traffic to
    # the standby, an address its owner already allow-listed; the drained gateway keeps nothing of ours.
    drained = Gateway.objects.get(name=active["gateway"])
    assert staff.post(f"/api/v1/gateways/{drained.pk}/drain/", {"rehome": True}, format="json").status_code == 202
    wait_for(lambda: not HostSync.objects.exists() and not EgressIP.objects.filter(gateway=drained).exists(), timeout=40,
             what="drain settled")
    wait_for(lambda: seen(lab) == (standby["address"], standby["address6"]), timeout=15, interval=0.1,
             what=lambda: f"the standby's addresses after the drain (seen {seen(lab)})")
    wait_for(lambda: lab.host_exec(drained.name, ["nft", "list", "table", "ip6", "egressportal"],
                                   check=False).returncode != 0, timeout=15, what="the drained gateway's ip6 table gone")
    assert app_traces(lab, {active["address6"]}) == []
    assert staff.post(f"/api/v1/gateways/{drained.pk}/undrain/", {}, format="json").status_code == 202
    wait_for(lambda: not HostSync.objects.exists() and egress()["status"] == "assigned"
             and len(egress()["ips"]) == 2, timeout=40, what="undrain settled")
    assert {(ip["address"], ip["address6"]) for ip in egress()["ips"]} == {
        (active["address"], active["address6"]), (standby["address"], standby["address6"])
    }
    now_active = next(ip for ip in egress()["ips"] if ip["role"] == "active")
    assert seen(lab) == (now_active["address"], now_active["address6"])

    # Disable through the API: node2's own addresses again, and no trace of the app on any host.
    assert owner.put(f"/api/v1/apps/{app.pk}/egress/", {"type": "shared"}, format="json").status_code == 202
    wait_for(lambda: egress()["status"] == "disabled", timeout=30, interval=0.05, what="disabled")
    assert seen(lab) == node_own("node2")
    wait_for(lambda: not HostSync.objects.exists(), timeout=20, what="the disable settled")
    values = {active["address6"], standby["address6"], instance.cidr6, moved.cidr6, instance.cidr, moved.cidr}
    assert app_traces(lab, values) == []
    assert seen(lab) == node_own("node2")

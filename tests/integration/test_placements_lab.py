"""Placements against the real lab: packets prove that a tenant cannot claim another tenant's traffic,
that a redeploy keeps the app's IP without its owner doing anything, and each lab sshd's own log proves
that a toggle touches only the hosts where the app runs."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from egressportal.core import selectors, services
from egressportal.core.models import App, EgressIP, Node, Placement
from tests.conftest import api_token_for
from tests.integration.test_reconcile_lab import converge
from tests.integration.worker_fixtures import wait_for
from workers.lab_register import lab_place

pytestmark = [pytest.mark.lab]

NODE1_IP = "203.0.113.21"
NODE2_IP = "203.0.113.22"


def node_table(lab, host: str) -> str:
    return lab.host_exec(host, ["nft", "list", "table", "ip", "egressportal"], check=False).stdout


def placements_now() -> list[tuple]:
    return sorted(Placement.objects.values_list("node__name", "app__name", "cidr"))


def test_a_tenant_cannot_make_another_tenants_pod_leave_from_its_ip(lab, lab_world):
    """Bob's pod runs on node1 next to alice's app, placed for no app (e.g. a job the platform runs outside
    any app). Alice, with dedicated egress on, tries every way to claim its address: all refused, and the
    echo server keeps seeing node1's own address for Bob's pod."""
    bob_pod = lab.add_app("bob-pod", "node1")  # the platform reports it for no app
    alice = get_user_model().objects.get(username="alice")
    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop, actor=alice)
    converge()
    active = EgressIP.objects.get(app=shop, role="active").address
    assert lab.seen_ip("shop-api") == active
    assert lab.seen_ip("bob-pod") == NODE1_IP
    before = placements_now()
    node1 = Node.objects.get(name="node1")
    claims = [bob_pod.cidr, bob_pod.address, f"{bob_pod.address}/32", "0.0.0.0/0", "198.18.64.0/24"]

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_for(alice)}")
    for claim in claims:
        # App fields, on create and on change, under every name a source could go by.
        for field in ("source_cidrs", "placements", "source_addresses", "addresses", "cidrs"):
            created = api.post("/api/v1/apps/", {"name": "claim", "region": "lab", field: [claim]}, format="json")
            assert created.status_code == 400, created.content
            changed = api.patch(f"/api/v1/apps/{shop.pk}/", {field: [claim]}, format="json")
            assert changed.status_code == 400 and "platform reports" in changed.json()["error"]["message"]
        # The platform's own endpoint.
        body = {"placements": [{"app": shop.pk, "addresses": [claim]}]}
        assert api.put(f"/api/v1/nodes/{node1.pk}/placements/", body, format="json").status_code == 403
    assert api.get(f"/api/v1/nodes/{node1.pk}/placements/").status_code == 403

    # The portal, logged in as alice.
    portal = Client()
    portal.force_login(alice)
    for field in ("source_cidrs", "placements", "addresses"):
        response = portal.post(reverse("portal:app_egress", args=[shop.pk]), {"type": "dedicated", field: bob_pod.cidr})
        assert response.status_code == 400 and "platform reports" in response.content.decode()

    # The admin site as a non-staff user: not even let in.
    for url in (reverse("admin:core_app_change", args=[shop.pk]), reverse("admin:core_node_change", args=[node1.pk])):
        response = portal.post(url, {"name": "shop-api", "placements-0-cidr": bob_pod.cidr, "placements-TOTAL_FORMS": "1"})
        assert response.status_code == 302 and "/login/" in response["Location"]

    assert not App.objects.filter(name="claim").exists()
    assert placements_now() == before
    converge()
    # The packets: Bob's pod still leaves from node1's address, alice's app from hers; node1 steers
    # only what is placed on it.
    assert lab.seen_ip("bob-pod") == NODE1_IP
    assert lab.seen_ip("shop-api") == active
    table = node_table(lab, "node1")
    assert lab.apps["shop-api"].cidr in table
    assert bob_pod.cidr not in table and "0.0.0.0/0" not in table


def test_a_redeploy_on_the_other_node_keeps_the_dedicated_ip_with_no_owner_action(lab, lab_world):
    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop)
    converge()
    shop.refresh_from_db()
    active = EgressIP.objects.get(app=shop, role="active").address
    addresses = sorted(EgressIP.objects.filter(app=shop).values_list("address", flat=True))
    generation, owner_events = shop.egress_generation, shop.events.filter(actor=shop.owner).count()
    old = lab.apps["shop-api"]
    assert lab.seen_ip("shop-api") == active

    moved = lab_place(lab, name="shop-api", node="node2")  # the platform redeploys it and reports
    converge()
    assert lab.seen_ip("shop-api") == active
    assert lab.seen_ip("billing") == NODE1_IP  # the neighbour left behind is untouched
    shop.refresh_from_db()
    assert shop.egress_status == "assigned" and shop.egress_generation == generation
    assert sorted(EgressIP.objects.filter(app=shop).values_list("address", flat=True)) == addresses
    assert shop.events.filter(actor=shop.owner).count() == owner_events  # the owner did nothing
    assert selectors.app_placements(shop) == [{"node": "node2", "addresses": [moved.cidr, moved.cidr6]}]  # dual-stack
    # Each node's map holds only what runs on it.
    assert moved.cidr in node_table(lab, "node2") and moved.cidr not in node_table(lab, "node1")
    assert old.cidr not in node_table(lab, "node1")

    # And back: the same address again, on node1.
    lab_place(lab, name="shop-api", node="node1")
    converge()
    assert lab.seen_ip("shop-api") == active
    assert moved.cidr not in node_table(lab, "node2")


def _settled_counts(lab, hosts: list[str], quiet: float = 1.5, timeout: float = 30) -> dict[str, int]:
    """Remote commands per host once nothing has run for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    counts = {h: lab.remote_commands(h) for h in hosts}
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = {h: lab.remote_commands(h) for h in hosts}
        if now != counts:
            counts, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return counts
    raise AssertionError(f"hosts never went quiet: {counts}")


@pytest.mark.worker
def test_toggling_an_app_on_node1_runs_no_command_on_node2(lab, lab_world, start_worker):
    """Counted by each host's sshd: enabling and disabling shop-api (placed on node1) runs commands on its
    gateways and node1, and not a single one on node2, whatever node2's other apps."""
    hosts = ["gw1", "gw2", "node1", "node2"]
    shop = App.objects.get(name="shop-api")
    # Bob's crawler runs on node2 with dedicated egress too: node2 has steering of its own.
    crawler = App.objects.get(name="crawler")
    services.egress_enable(app=crawler)
    start_worker(beat=False)  # no sweep, no health probes: every command comes from a reconcile
    wait_for(lambda: App.objects.get(pk=crawler.pk).egress_status == "assigned", timeout=30, what="crawler assigned")
    before = _settled_counts(lab, hosts)

    services.egress_enable(app=shop)
    wait_for(lambda: App.objects.get(pk=shop.pk).egress_status == "assigned", timeout=30, what="shop-api assigned")
    enabled = _settled_counts(lab, hosts)
    active = EgressIP.objects.get(app=shop, role="active").address
    assert lab.seen_ip("shop-api") == active
    services.egress_disable(app=shop)
    wait_for(lambda: App.objects.get(pk=shop.pk).egress_status == "disabled", timeout=30, what="shop-api disabled")
    disabled = _settled_counts(lab, hosts)
    assert lab.seen_ip("shop-api") == NODE1_IP

    print(f"remote commands per host: before {before}, after enable {enabled}, after disable {disabled}")
    assert enabled["node2"] == before["node2"] and disabled["node2"] == before["node2"]
    assert enabled["node1"] > before["node1"] and disabled["node1"] > enabled["node1"]
    for gw in ("gw1", "gw2"):
        assert enabled[gw] > before[gw] and disabled[gw] > enabled[gw]
    assert lab.seen_ip("crawler") == EgressIP.objects.get(app=crawler, role="active").address

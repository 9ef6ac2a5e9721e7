"""The dataplane end to end against the real lab, calling the reconcile
service directly (no broker): the echo server must *see* the dedicated IP."""

from __future__ import annotations

import json

import pytest

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Event, Gateway, HostSync, Node
from egressportal.dataplane import DataplaneValueError
from workers.lab_register import lab_place
from workers.reconcile import host_reconcile
from workers.ssh import HostKeyMismatch

pytestmark = [pytest.mark.lab]

NODE1_IP = "203.0.113.21"
NODE2_IP = "203.0.113.22"


def converge(max_rounds: int = 6) -> list:
    """What the workers do, inline: gateways, then nodes, until nothing is owed."""
    results = []
    for _ in range(max_rounds):
        for gw in Gateway.objects.filter(enabled=True):
            results.append(host_reconcile(kind="gateway", pk=gw.pk))
        for node in Node.objects.filter(enabled=True):
            results.append(host_reconcile(kind="node", pk=node.pk))
        if not HostSync.objects.exists():
            return results
    raise AssertionError(f"not converged: {list(HostSync.objects.values('app__name', 'gateway__name', 'node__name'))}")


def gateway_table(lab, host: str) -> str:
    out = lab.host_exec(host, ["nft", "list", "table", "ip", "egressportal"], check=False)
    return out.stdout


def addresses_on(lab, host: str) -> set[str]:
    out = lab.host_exec(host, ["ip", "-j", "-4", "addr", "show"])
    return {a["local"] for link in json.loads(out.stdout) for a in link.get("addr_info", [])}


def test_enable_move_disable_seen_by_the_echo_server(lab, lab_world):
    shop = App.objects.get(name="shop-api")
    converge()
    # Before: both apps on node1 leave from node1's address (shared egress).
    assert lab.seen_ip("shop-api") == NODE1_IP
    assert lab.seen_ip("billing") == NODE1_IP

    services.egress_enable(app=shop)
    results = converge()
    shop.refresh_from_db()
    assert shop.egress_status == "assigned", shop.egress_message
    active = EgressIP.objects.get(app=shop, role="active")
    assert lab.seen_ip("shop-api") == active.address
    assert lab.seen_ip("billing") == NODE1_IP  # the neighbour is untouched
    assert any(r and r.changed for r in results)

    # Idempotent: another pass changes nothing and says so.
    again = [host_reconcile(kind="gateway", pk=g.pk) for g in Gateway.objects.all()] + [
        host_reconcile(kind="node", pk=n.pk) for n in Node.objects.all()
    ]
    assert all(r is not None and not r.changed and r.summary == "no changes" for r in again)

    # The platform redeploys the app on node2 and reports it: a new address, the same dedicated IP.
    moved = lab_place(lab, name="shop-api", node="node2")
    converge()
    assert lab.seen_ip("shop-api") == active.address

    # Disable: the node's IP again, and the gateways hold no trace of the app.
    services.egress_disable(app=shop)
    converge()
    shop.refresh_from_db()
    assert shop.egress_status == "disabled"
    assert lab.seen_ip("shop-api") == NODE2_IP
    held = list(EgressIP.objects.filter(last_app=shop).values_list("address", "status"))
    assert held and {s for _, s in held} == {"quarantined"}
    for gw in ("gw1", "gw2"):
        table = gateway_table(lab, gw)
        assert moved.cidr not in table
        for address, _ in held:
            assert address not in table
            assert address not in addresses_on(lab, gw)


def test_flushed_gateway_is_restored_by_one_reconcile(lab, lab_world):
    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop)
    converge()
    active = EgressIP.objects.get(app=shop, role="active")
    assert lab.seen_ip("shop-api") == active.address
    lab.flush_product_state(active.gateway.name)
    lab.flush_product_state("node1")
    assert lab.seen_ip("shop-api") == NODE1_IP  # the reboot lost the steering
    result = host_reconcile(kind="gateway", pk=active.gateway_id)
    assert result.changed
    result = host_reconcile(kind="node", pk=Node.objects.get(name="node1").pk)
    assert result.changed
    assert lab.seen_ip("shop-api") == active.address


def test_wrong_host_key_is_refused_and_nothing_is_written(lab, lab_world):
    gw = Gateway.objects.get(name="gw1")
    other = Gateway.objects.get(name="gw2").host_key
    Gateway.objects.filter(pk=gw.pk).update(host_key=other)  # as if gw1's key changed under us
    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop)
    before = gateway_table(lab, "gw1")
    with pytest.raises(HostKeyMismatch):
        host_reconcile(kind="gateway", pk=gw.pk)
    assert gateway_table(lab, "gw1") == before
    gw.refresh_from_db()
    assert gw.host_key_mismatch_at is not None
    ev = Event.objects.get(kind="host.key_mismatch", gateway=gw)
    assert "Nothing was sent" in ev.message and ev.level == "error"
    shop.refresh_from_db()
    assert shop.egress_status == "failed" and "security check" in shop.egress_message


def test_hostile_values_never_reach_a_host(lab, lab_world):
    gw = Gateway.objects.get(name="gw1")
    # Bypass every validator, as a compromised database or a bug might.
    Gateway.objects.filter(pk=gw.pk).update(public_interface="eth0;reboot")
    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop)
    before = gateway_table(lab, "gw1")
    with pytest.raises(DataplaneValueError):
        host_reconcile(kind="gateway", pk=gw.pk)
    assert gateway_table(lab, "gw1") == before
    gw.refresh_from_db()
    assert "Interface" in gw.last_reconcile_error or "interface" in gw.last_reconcile_error

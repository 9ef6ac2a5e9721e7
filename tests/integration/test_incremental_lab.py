"""The steady state's nft step against the lab, through workers/reconcile.py: a reconcile that starts from the
state verified last time (kept in Redis) changes the elements of the product's tables in place; one that
reads the host first, or repairs drift, writes them whole. A rule or a table deleted by hand since the last
verify is noticed by the same exec's read-back (or fails the transaction) and repaired."""

from __future__ import annotations

import json

import pytest

from egressportal.core import services
from egressportal.core.desired import gateway_desired, node_desired
from egressportal.core.models import App, EgressIP, Gateway, Node
from tests.integration.test_reconcile_lab import converge
from workers.reconcile import host_read_actual, host_session

pytestmark = [pytest.mark.lab]


def table_handles(lab, host: str) -> dict[str, int | None]:
    """The kernel's handle of each product table on ``host``: a table deleted and defined again gets a new one."""
    out = {}
    for family in ("ip", "arp"):
        r = lab.host_exec(host, ["nft", "-j", "list", "table", family, "egressportal"], check=False)
        tables = [x["table"] for x in json.loads(r.stdout)["nftables"] if "table" in x] if r.returncode == 0 else []
        out[family] = tables[0]["handle"] if tables else None
    return out


def holds_desired(host: Gateway | Node) -> bool:
    desired = gateway_desired(host).state if isinstance(host, Gateway) else node_desired(host).state
    return host_read_actual(host_session(host), host) == desired


def test_a_toggle_changes_elements_and_keeps_the_tables(lab, lab_world, redis_server):
    shop = App.objects.get(name="shop-api")
    converge()  # first contact: each host read, its tables written whole, verified
    hosts = [*Gateway.objects.all(), *Node.objects.all()]
    before = {h.name: table_handles(lab, h.name) for h in hosts}
    assert all(before[h.name]["ip"] is not None for h in hosts)

    services.egress_enable(app=shop)
    results = converge()
    active = EgressIP.objects.get(app=shop, role="active")
    assert lab.seen_ip("shop-api") == active.address
    assert {r.host for r in results if r.changed} >= {active.gateway.name, "node1"}
    assert {h.name: table_handles(lab, h.name) for h in hosts} == before
    assert all(holds_desired(h) for h in hosts)

    services.egress_disable(app=shop)
    converge()
    assert lab.seen_ip("shop-api") == "203.0.113.21"
    assert {h.name: table_handles(lab, h.name) for h in hosts} == before


def test_a_rule_deleted_by_hand_before_a_change_is_noticed_and_repaired(lab, lab_world, redis_server):
    shop = App.objects.get(name="shop-api")
    billing = App.objects.get(name="billing")
    services.egress_enable(app=shop)
    converge()
    gw = EgressIP.objects.get(app=shop, role="active").gateway
    handle = table_handles(lab, gw.name)["ip"]
    # The SNAT rule flushed by hand: the table and its map are there, nothing is translated. The next change's
    # element operations succeed, the read-back in the same exec shows the rule missing.
    lab.host_exec(gw.name, ["nft", "flush", "chain", "ip", "egressportal", "postrouting"])
    services.egress_enable(app=billing)
    results = converge()
    repaired = [r for r in results if r.host == gw.name and "repaired drift" in r.summary]
    assert repaired, [r.summary for r in results]
    assert holds_desired(Gateway.objects.get(pk=gw.pk))
    assert table_handles(lab, gw.name)["ip"] != handle  # the repair wrote the table whole
    assert lab.seen_ip("shop-api") == EgressIP.objects.get(app=shop, role="active").address
    assert lab.seen_ip("billing") == EgressIP.objects.get(app=billing, role="active").address


def test_a_table_deleted_by_hand_fails_the_change_which_is_then_repaired(lab, lab_world, redis_server):
    shop = App.objects.get(name="shop-api")
    converge()
    lab.host_exec("node1", ["nft", "delete", "table", "ip", "egressportal"])
    services.egress_enable(app=shop)
    results = converge()
    repaired = [r for r in results if r.host == "node1" and "repaired drift" in r.summary]
    assert repaired, [r.summary for r in results]
    assert holds_desired(Node.objects.get(name="node1"))
    assert lab.seen_ip("shop-api") == EgressIP.objects.get(app=shop, role="active").address

"""Round trips to the hosts, counted by the lab (every remote command goes through its login wrapper):
in the steady state a reconcile is ONE remote command per host (apply and read back in one exec, starting
from the state verified last time, kept in Redis); a host that drifted since its last verify is noticed and repaired."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Gateway, Node
from tests.integration.test_reconcile_lab import converge, gateway_table
from workers.reconcile import host_reconcile, host_session

pytestmark = [pytest.mark.lab]


def reconciles_per_host(results) -> Counter:
    return Counter(r.host for r in results if r is not None)


def test_a_steady_state_reconcile_is_one_remote_command_per_host(lab, lab_world, redis_server):
    shop = App.objects.get(name="shop-api")
    billing = App.objects.get(name="billing")
    converge()  # first contact: each host is read, then applied and read back

    lab.reset_command_counts()
    services.egress_enable(app=shop)
    results = converge()
    assert any(r.changed for r in results)
    assert lab.command_counts() == {h: n for h, n in reconciles_per_host(results).items()}
    active = EgressIP.objects.get(app=shop, role="active")
    assert lab.seen_ip("shop-api") == active.address

    # An unchanged host: one command that checks it.
    lab.reset_command_counts()
    again = [host_reconcile(kind="gateway", pk=g.pk) for g in Gateway.objects.all()]
    assert not any(r.changed for r in again)
    assert lab.command_counts() == {"gw1": 1, "gw2": 1, "node1": 0, "node2": 0}

    lab.reset_command_counts()
    services.egress_enable(app=billing)
    results = converge()
    assert lab.command_counts() == {h: n for h, n in reconciles_per_host(results).items()}
    assert lab.seen_ip("billing") == EgressIP.objects.get(app=billing, role="active").address


def test_a_rule_deleted_by_hand_since_the_last_verify_is_noticed_and_repaired(lab, lab_world, redis_server):
    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop)
    converge()
    active = EgressIP.objects.get(app=shop, role="active")
    gw = active.gateway
    assert lab.seen_ip("shop-api") == active.address

    # Someone removes the SNAT rule by hand: the table is there, the map too, nothing is translated.
    lab.host_exec(gw.name, ["nft", "flush", "chain", "ip", "egressportal", "postrouting"])
    assert "snat" not in gateway_table(lab, gw.name).split("chain postrouting", 1)[1]

    lab.reset_command_counts()
    result = host_reconcile(kind="gateway", pk=gw.pk)
    assert result.changed and "repaired drift" in result.summary, result.summary
    assert lab.command_counts()[gw.name] == 2  # the check that noticed, then the repair with its read-back
    assert lab.seen_ip("shop-api") == active.address

    lab.reset_command_counts()
    assert not host_reconcile(kind="gateway", pk=gw.pk).changed
    assert lab.command_counts()[gw.name] == 1


def test_a_pool_route_deleted_by_hand_is_restored_by_the_next_change(lab, lab_world, redis_server):
    # The next reconcile has work to do, planned from the state verified last time, which still lists the
    # address: the read-back in the same exec shows it missing, and the reconcile repairs it.
    shop = App.objects.get(name="shop-api")
    billing = App.objects.get(name="billing")
    services.egress_enable(app=shop)
    converge()
    active = EgressIP.objects.get(app=shop, role="active")
    # Its pool route deleted: the gateway no longer answers for it (a change that rewrites the nft tables
    # does not bring the route back by itself).
    lab.host_exec(active.gateway.name, ["ip", "route", "flush", "table", "local", "proto", "250"])

    services.egress_enable(app=billing)
    results = converge()
    repaired = [r for r in results if r.host == active.gateway.name and "repaired drift" in r.summary]
    assert repaired, [r.summary for r in results]
    assert lab.seen_ip("shop-api") == active.address
    assert lab.seen_ip("billing") == EgressIP.objects.get(app=billing, role="active").address


def test_the_lab_can_make_every_remote_command_cost_time(lab, lab_world, redis_server):
    node = Node.objects.get(name="node1")
    session = host_session(node)
    session.run(["true"])  # connected
    try:
        lab.set_command_cost(300)
        started = time.monotonic()
        session.run(["true"])
        assert time.monotonic() - started >= 0.3
    finally:
        lab.set_command_cost(0)
    started = time.monotonic()
    session.run(["true"])
    assert time.monotonic() - started < 0.3 or pytest.fail("a command still costs 300 ms after the reset")

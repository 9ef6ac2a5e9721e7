"""Element changes (plans with ``incremental=True``, from the state verified last time) applied to the real
kernel in a scratch netns through the one-exec reconcile script, read back with the product's read commands
and parser (root only; documentation and benchmark ranges only). The tables are changed in place (their
handles stay), what is read back is the desired state, and a host that is not as verified (a table or a rule
deleted by hand) fails the transaction or reads back differently, and is repaired by a full rewrite."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from egressportal import dataplane as dp
from egressportal.dataplane import GatewayState, NodeState
from tests.integration.test_dataplane_kernel import Netns, netns  # noqa: F401  (fixture)
from tests.integration.test_dataplane_kernel_v6 import exec_plan, gw_state, node_state, ns6  # noqa: F401  (fixture)
from tests.unit.test_dataplane_incremental import gateway_states, node_states

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"), reason="needs root, nft and ip"
)

GW_READS = dp.gateway_read_commands("eth0")
NODE_READS = dp.node_read_commands()

GW_A = GatewayState.build(
    public_interface="eth0",
    addresses=["203.0.113.10", "203.0.113.11", "2001:db8:0:2:e::1"],
    snat={"198.19.1.0/24": "203.0.113.10", "198.19.2.0/25": "203.0.113.11", "2001:db8:10:1::/64": "2001:db8:0:2:e::1"},
    return_routes={"198.19.1.0/24": "198.18.0.11"},
    guarded_sources=["198.19.0.0/17", "2001:db8:10::/48"],
    pools=["203.0.113.0/28", "2001:db8:0:2:e::/80"],
)
GW_B = GatewayState.build(  # an app added, one moved to another address, the guard grown (its /17s collapse)
    public_interface="eth0",
    addresses=["203.0.113.10", "203.0.113.11", "203.0.113.12", "2001:db8:0:2:e::1"],
    snat={"198.19.1.0/24": "203.0.113.11", "198.19.2.0/25": "203.0.113.11", "198.19.3.0/24": "203.0.113.12",
          "2001:db8:10:1::/64": "2001:db8:0:2:e::1"},  # fmt: skip
    return_routes={"198.19.1.0/24": "198.18.0.11"},
    guarded_sources=["198.19.0.0/16", "2001:db8:10::/48"],
    pools=["203.0.113.0/28", "2001:db8:0:2:e::/80"],
)
NODE_A = NodeState.build(
    steering={"198.19.1.0/24": 1, "198.19.2.0/25": 2, "2001:db8:10:1::/64": 1},
    gateways={1: "198.18.0.2", 2: "198.18.0.3", 3: "198.18.0.4"},
    gateways6={1: "2001:db8:0:1::2"},
    internal=["198.18.0.0/15", "2001:db8:10::/48"],
)
NODE_B = NodeState.build(  # failover of slot 2 to slot 3: a new slot chain, one no longer used
    steering={"198.19.1.0/24": 1, "198.19.2.0/25": 3, "198.19.3.0/24": 3, "2001:db8:10:1::/64": 1},
    gateways={1: "198.18.0.2", 2: "198.18.0.3", 3: "198.18.0.4"},
    gateways6={1: "2001:db8:0:1::2"},
    internal=["198.18.0.0/15", "2001:db8:10::/48"],
)


@pytest.fixture()
def host(ns6):  # noqa: F811
    """A scratch namespace set up for both families (test_dataplane_kernel_v6.ns6)."""
    return ns6


def handles(ns: Netns) -> dict[str, int | None]:
    """The kernel's handle of each product table: a table deleted and defined again gets a new one."""
    out = {}
    for family in ("ip", "ip6", "arp"):
        r = ns.run(["nft", "-j", "list", "table", family, "egressportal"], check=False)
        tables = [x["table"] for x in json.loads(r.stdout)["nftables"] if "table" in x] if r.returncode == 0 else []
        out[family] = tables[0]["handle"] if tables else None
    return out


def applied(ns: Netns, plan: dp.Plan, reads: dict[str, list[str]]) -> dict[str, str | None]:
    failures, out = exec_plan(ns, plan, reads)
    assert failures == [], failures
    return out


def test_gateway_elements_change_in_place_and_read_back_as_desired(host):
    assert gw_state(applied(host, dp.plan_gateway(None, GW_A), GW_READS)) == GW_A
    before = handles(host)
    assert None not in before.values()
    plan = dp.plan_gateway(GW_A, GW_B, incremental=True)
    assert "table" not in plan.nft.replace("egressportal", "")  # element statements only
    assert gw_state(applied(host, plan, GW_READS)) == GW_B
    assert handles(host) == before
    back = dp.plan_gateway(GW_B, GW_A, incremental=True)
    assert gw_state(applied(host, back, GW_READS)) == GW_A
    assert handles(host) == before
    # A full rewrite (what a plan from a host read does) replaces the tables.
    assert gw_state(applied(host, dp.plan_gateway(GW_A, GW_B), GW_READS)) == GW_B
    assert all(handles(host)[f] != before[f] for f in before)


def test_node_slot_chains_come_and_go_with_their_elements(host):
    assert node_state(applied(host, dp.plan_node(None, NODE_A), NODE_READS)) == NODE_A
    before = handles(host)
    plan = dp.plan_node(NODE_A, NODE_B, incremental=True)
    assert "add chain ip egressportal mark_slot_3" in plan.nft and "delete chain ip egressportal mark_slot_2" in plan.nft
    assert node_state(applied(host, plan, NODE_READS)) == NODE_B
    chains = host.run(["nft", "list", "chains", "ip"]).stdout
    assert "mark_slot_3" in chains and "mark_slot_2" not in chains
    assert node_state(applied(host, dp.plan_node(NODE_B, NODE_A, incremental=True), NODE_READS)) == NODE_A
    assert handles(host) == before


def test_a_table_deleted_by_hand_fails_the_transaction_and_a_rewrite_repairs_it(host):
    applied(host, dp.plan_gateway(None, GW_A), GW_READS)
    arp_before = host.run(["nft", "list", "table", "arp", "egressportal"]).stdout
    host.run(["nft", "delete", "table", "ip", "egressportal"])
    failures, out = exec_plan(host, dp.plan_gateway(GW_A, GW_B, incremental=True), GW_READS)
    assert [argv for argv, _ in failures] == [["nft", "-f", "-"]]
    assert "No such file or directory" in failures[0][1]
    # One transaction: the ARP guard's elements did not change either.
    assert host.run(["nft", "list", "table", "arp", "egressportal"]).stdout == arp_before
    drifted = gw_state(out)
    assert drifted != GW_B
    # What the reconcile does next: plan from what the host reported, written whole.
    assert gw_state(applied(host, dp.plan_gateway(drifted, GW_B), GW_READS)) == GW_B


def test_a_rule_deleted_by_hand_reads_back_differently_and_a_rewrite_repairs_it(host):
    applied(host, dp.plan_node(None, NODE_A), NODE_READS)
    host.run(["nft", "flush", "chain", "ip", "egressportal", "prerouting"])
    out = applied(host, dp.plan_node(NODE_A, NODE_B, incremental=True), NODE_READS)  # the elements go in...
    drifted = node_state(out)
    assert drifted != NODE_B and not {k for k in drifted.steering if k.version == 4}  # ...but nothing is steered
    assert node_state(applied(host, dp.plan_node(drifted, NODE_B), NODE_READS)) == NODE_B


# No shrinking: each step is real nft and ip commands (the unit tests' interpreter shrinks the same states).
SEQUENCE = settings(
    max_examples=4,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SEQUENCE
@given(st.lists(gateway_states(), min_size=20, max_size=30))
def test_random_gateway_changes_always_read_back_as_desired(host, states):
    # As the reconcile runs: a host read and a full plan first, then each plan from the state verified last.
    actual = gw_state(applied(host, dp.Plan(), GW_READS))
    out = applied(host, dp.plan_gateway(actual, states[0]), GW_READS)
    for before, desired in zip(states, states[1:], strict=False):
        assert gw_state(out) == before
        out = applied(host, dp.plan_gateway(before, desired, incremental=True), GW_READS)
    assert gw_state(out) == states[-1]


@SEQUENCE
@given(st.lists(node_states(), min_size=20, max_size=30))
def test_random_node_changes_always_read_back_as_desired(host, states):
    actual = node_state(applied(host, dp.Plan(), NODE_READS))
    out = applied(host, dp.plan_node(actual, states[0]), NODE_READS)
    for before, desired in zip(states, states[1:], strict=False):
        assert node_state(out) == before
        out = applied(host, dp.plan_node(before, desired, incremental=True), NODE_READS)
    assert node_state(out) == states[-1]

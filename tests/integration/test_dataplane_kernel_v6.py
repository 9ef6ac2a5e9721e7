"""Dual-stack plans applied to the real kernel in a scratch netns through the one-exec reconcile script
(render_exec_script: apply and read back in one ``sh -s``), parsed, compared, and removed without a trace
(root only; addresses from 2001:db8::/32 and the IPv4 documentation/benchmark ranges)."""

from __future__ import annotations

import pytest

from egressportal import dataplane as dp
from egressportal.dataplane import GatewayState, NodeState
from tests.integration.test_dataplane_kernel import Netns, netns  # noqa: F401  (fixture)

GW_BASE = dict(public_interface="eth0", guarded_sources=["198.19.0.0/16", "2001:db8:10::/48"])
GW_A = GatewayState.build(
    **GW_BASE,
    addresses=["203.0.113.10", "2001:db8:0:2::10"],
    snat={"198.19.1.0/24": "203.0.113.10", "2001:db8:10:1::/64": "2001:db8:0:2::10"},
    return_routes={"198.19.1.0/24": "198.18.0.11", "2001:db8:10:1::/64": "2001:db8:0:1::11"},
)
GW_B = GatewayState.build(  # the app moved to another IPv6 address, a second app, another node
    **GW_BASE,
    addresses=["203.0.113.10", "2001:db8:0:2::11", "2001:db8:0:2::12"],
    snat={"198.19.1.0/24": "203.0.113.10", "2001:db8:10:1::/64": "2001:db8:0:2::11",
          "2001:db8:10:2::7/128": "2001:db8:0:2::12"},  # fmt: skip
    return_routes={"198.19.1.0/24": "198.18.0.11", "2001:db8:10:2::/64": "2001:db8:0:1::12"},
)
GW_V4 = GatewayState.build(
    public_interface="eth0", addresses=["203.0.113.10"], snat={"198.19.1.0/24": "203.0.113.10"},
    return_routes={"198.19.1.0/24": "198.18.0.11"}, guarded_sources=["198.19.0.0/16"],
)  # fmt: skip
NODE_A = NodeState.build(
    steering={"198.19.1.0/24": 1, "2001:db8:10:1::/64": 1},
    gateways={1: "198.18.0.2"},
    gateways6={1: "2001:db8:0:1::2"},
    internal=["198.18.0.0/15", "2001:db8:0:1::/64", "2001:db8:10::/48"],
)
NODE_B = NodeState.build(  # failover: IPv6 steered to the standby's slot
    steering={"198.19.1.0/24": 1, "2001:db8:10:1::/64": 2},
    gateways={1: "198.18.0.2"},
    gateways6={1: "2001:db8:0:1::2", 2: "2001:db8:0:1::3"},
    internal=["198.18.0.0/15", "2001:db8:0:1::/64", "2001:db8:10::/48"],
)
NODE_V4 = NodeState.build(steering={"198.19.1.0/24": 1}, gateways={1: "198.18.0.2"}, internal=["198.18.0.0/15"])


@pytest.fixture()
def ns6(netns):  # noqa: F811
    netns.run(["ip", "-6", "addr", "add", "2001:db8:0:2::1/64", "dev", "eth0", "nodad"])
    netns.run(["ip", "-6", "addr", "add", "2001:db8:0:1::1/64", "dev", "transit0", "nodad"])
    return netns


def exec_plan(ns: Netns, plan: dp.Plan, reads: dict[str, list[str]]) -> tuple[list, dict[str, str | None]]:
    """Apply and read back in one exec, as workers/reconcile.py does."""
    steps = plan.steps()
    r = ns.run(dp.EXEC_ARGV, dp.render_exec_script(steps, reads), check=False)
    failures, out = [], {}
    for name, status, text in dp.parse_exec_output(r.stdout):
        kind, _, which = name.partition(":")
        if kind == "apply" and status:
            failures.append((steps[int(which)][0], text))
        elif kind == "read":
            if status and which in ("nft", "nft6", "arp") and dp.is_missing_table_error(text):
                out[which] = None
            else:
                assert status == 0, (which, text)
                out[which] = text
    return failures, out


def gw_state(out: dict[str, str | None]) -> GatewayState:
    return dp.parse_gateway(
        out["nft"], out["addr"] or "[]", out["routes"] or "[]", "eth0",
        nft6_json=out["nft6"], addr6_json=out["addr6"], route6_json=out["routes6"], arp_json=out["arp"],
    )  # fmt: skip


def node_state(out: dict[str, str | None]) -> NodeState:
    return dp.parse_node(
        out["nft"], out["rules"] or "[]", out["routes"] or "[]",
        nft6_json=out["nft6"], rule6_json=out["rules6"], route6_json=out["routes6"],
    )  # fmt: skip


def traces(ns: Netns) -> str:
    """Everything of ours the host could still hold, as text."""
    return "\n".join(
        ns.run(argv).stdout
        for argv in (
            ["nft", "list", "ruleset"],
            ["ip", "-6", "rule", "show"],
            ["ip", "-6", "route", "show", "table", "all", "proto", "250"],
            ["ip", "-4", "route", "show", "table", "all", "proto", "250"],
            ["ip", "-6", "addr", "show", "dev", "eth0"],
        )
    )


def test_gateway_dual_stack_through_the_exec_script(ns6):
    reads = dp.gateway_read_commands("eth0")
    _, out = exec_plan(ns6, dp.Plan(), reads)
    actual = gw_state(out)
    assert actual == GatewayState.build(public_interface="eth0")
    for desired in (GW_A, GW_B, GW_A, GW_V4):
        failures, out = exec_plan(ns6, dp.plan_gateway(actual, desired), reads)
        assert failures == []
        actual = gw_state(out)
        assert actual == desired
        assert dp.plan_gateway(actual, desired).is_empty
    # IPv6 gone entirely once the state has none: no ip6 table, no IPv6 address or route of ours.
    assert out["nft6"] is None
    left = traces(ns6)
    assert "ip6 egressportal" not in left and "2001:db8:0:2::1" not in left.replace("2001:db8:0:2::1/64", "")
    assert "2001:db8:10" not in left
    # Back to dual stack, then decommissioned: nothing at all.
    failures, out = exec_plan(ns6, dp.plan_gateway(actual, GW_B), reads)
    assert failures == [] and gw_state(out) == GW_B
    decommission = dp.plan_gateway_decommission(gw_state(out), table_exists=True, table6_exists=True)
    failures, out = exec_plan(ns6, decommission, reads)
    assert failures == [] and gw_state(out) == GatewayState.build(public_interface="eth0")
    left = traces(ns6)
    assert "egressportal" not in left and "proto 250" not in left and "2001:db8:0:2::1" not in left.replace(
        "2001:db8:0:2::1/64", ""
    )


def test_node_dual_stack_through_the_exec_script(ns6):
    reads = dp.node_read_commands()
    _, out = exec_plan(ns6, dp.Plan(), reads)
    actual = node_state(out)
    for desired in (NODE_A, NODE_B, NODE_A, NODE_V4, NodeState.build()):
        failures, out = exec_plan(ns6, dp.plan_node(actual, desired), reads)
        assert failures == []
        actual = node_state(out)
        assert actual == desired
        assert dp.plan_node(actual, desired).is_empty
        if desired is NODE_B:
            rules = ns6.run(["ip", "-6", "rule", "show"]).stdout
            assert "fwmark 0x20000/0xff0000 lookup 7102" in rules
    left = traces(ns6)
    assert "ip6 egressportal" not in left and "lookup 71" not in left and "proto 250" not in left


def test_an_ipv6_route_deleted_by_hand_is_seen_and_repaired(ns6):
    reads = dp.node_read_commands()
    _, out = exec_plan(ns6, dp.plan_node(None, NODE_A), reads)
    assert node_state(out) == NODE_A
    ns6.run(["ip", "-6", "route", "del", "default", "table", "7101"])
    _, out = exec_plan(ns6, dp.Plan(), reads)
    drifted = node_state(out)
    assert drifted.gateways6 == {1: dp.UNROUTED6}
    repair = dp.plan_node(drifted, NODE_A)
    assert repair.pre_ip6 == ["route replace default via 2001:db8:0:1::2 table 7101 proto 250"]
    failures, out = exec_plan(ns6, repair, reads)
    assert failures == [] and node_state(out) == NODE_A

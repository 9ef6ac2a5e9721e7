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
    netns.run(["ip", "link", "set", "lo", "up"])  # an IPv6 route through lo needs it up (a host's always is)
    netns.run(["ip", "-6", "addr", "add", "2001:db8:0:2::1/64", "dev", "eth0", "nodad"])
    netns.run(["ip", "-6", "addr", "add", "2001:db8:0:1::1/64", "dev", "transit0", "nodad"])
    return netns


def exec_plan(ns: Netns, plan: dp.Plan, reads: dict[str, dp.HostRead]) -> tuple[list, dict[str, str | None]]:
    """Apply and read back in one exec, as workers/reconcile.py does: the failed steps, and the parser's
    inputs by name (None: a missing table, proxy NDP keys absent)."""
    steps = plan.steps()
    r = ns.run(dp.EXEC_ARGV, dp.render_exec_script(steps, reads, announce=plan.announce))
    applied, outputs = dp.exec_results(r.stdout, steps=len(steps))
    return [(steps[i][0], text) for i, status, text in applied if status], dp.host_read_texts(reads, outputs)


def gw_state(out: dict[str, str | None]) -> GatewayState:
    return dp.parse_gateway(
        out["nft"], out["addr"] or "[]", out["routes"] or "[]", "eth0", nft6_json=out["nft6"],
        addr6_json=out["addr6"], route6_json=out["routes6"], arp_json=out["arp"], proxy6_json=out["proxy6"],
        ndp_text=out["ndp"],
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
            ["ip", "-6", "neigh", "show", "proxy"],
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


# --- the anyIP address plan (docs/ARCHITECTURE.md, "The gateway's address plan") ---------------------------

POOL6 = "2001:db8:0:2:e::/80"
GW_POOL = GatewayState.build(
    **GW_BASE,
    addresses=["203.0.113.10", "2001:db8:0:2:e::1", "2001:db8:0:2:e::2", "2001:db8:0:2:e::3"],
    snat={"198.19.1.0/24": "203.0.113.10", "2001:db8:10:1::/64": "2001:db8:0:2:e::1",
          "2001:db8:10:2::7/128": "2001:db8:0:2:e::2"},  # fmt: skip
    return_routes={"2001:db8:10:1::/64": "2001:db8:0:1::11"},
    pools=["203.0.113.0/24", POOL6],
)


def held6(ns: Netns) -> tuple[set[str], str, str]:
    """What the kernel itself lists: our proxy entries, our local routes, the interface's IPv6 addresses."""
    proxies = {line.split()[0] for line in ns.run(["ip", "-6", "neigh", "show", "proxy", "dev", "eth0"]).stdout.splitlines()
               if "proto 250" in line}  # fmt: skip
    local = ns.run(["ip", "-6", "route", "show", "table", "local", "proto", "250"]).stdout
    return proxies, local, ns.run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout


def sysctl(ns: Netns, key: str) -> str:
    return ns.run(["sysctl", "-n", key]).stdout.strip()


def test_ipv6_egress_addresses_are_a_pool_route_and_a_proxy_entry_each(ns6):
    reads = dp.gateway_read_commands("eth0")
    failures, out = exec_plan(ns6, dp.plan_gateway(None, GW_POOL), reads)
    assert failures == [] and gw_state(out) == GW_POOL
    proxies, local, addrs = held6(ns6)
    assert proxies == {"2001:db8:0:2:e::1", "2001:db8:0:2:e::2", "2001:db8:0:2:e::3"}
    assert f"local {POOL6} dev lo" in local
    assert "2001:db8:0:2:e::" not in addrs  # no /128 per address
    assert sysctl(ns6, "net.ipv6.conf.eth0.proxy_ndp") == "1" and sysctl(ns6, "net.ipv6.neigh.eth0.proxy_delay") == "0"
    assert dp.plan_gateway(gw_state(out), GW_POOL).is_empty
    # One address moves away, one comes: one proxy entry each way, the pool route stays.
    moved = GatewayState.build(
        **GW_BASE, addresses=["203.0.113.10", "2001:db8:0:2:e::1", "2001:db8:0:2:e::2", "2001:db8:0:2:e::4"],
        snat=GW_POOL.snat, return_routes=GW_POOL.return_routes, pools=["203.0.113.0/24", POOL6],
    )  # fmt: skip
    plan = dp.plan_gateway(gw_state(out), moved)
    assert plan.pre_ip6 == ["neigh add proxy 2001:db8:0:2:e::4 dev eth0 proto 250"]
    assert plan.post_ip6 == ["neigh del proxy 2001:db8:0:2:e::3 dev eth0"] and plan.sysctl == ()
    failures, out = exec_plan(ns6, plan, reads)
    assert failures == [] and gw_state(out) == moved
    # All gone: no proxy entry, no route of ours (another owner's proxy entry is left alone).
    ns6.run(["ip", "-6", "neigh", "add", "proxy", "2001:db8:0:2:e::99", "dev", "eth0"])
    failures, out = exec_plan(ns6, dp.plan_gateway(gw_state(out), GW_V4), reads)
    assert failures == [] and gw_state(out) == GW_V4
    proxies, local, _ = held6(ns6)
    assert proxies == set() and local == ""
    assert "2001:db8:0:2:e::99" in ns6.run(["ip", "-6", "neigh", "show", "proxy"]).stdout


@pytest.mark.parametrize("drift", ["proxy entry", "pool route", "proxy_ndp", "proxy_delay", "stray entry"])
def test_ipv6_drift_is_seen_and_repaired(ns6, drift):
    reads = dp.gateway_read_commands("eth0")
    _, out = exec_plan(ns6, dp.plan_gateway(None, GW_POOL), reads)
    assert gw_state(out) == GW_POOL
    ns6.run({
        "proxy entry": ["ip", "-6", "neigh", "del", "proxy", "2001:db8:0:2:e::2", "dev", "eth0"],
        "pool route": ["ip", "-6", "route", "del", "local", POOL6, "dev", "lo", "table", "local"],
        "proxy_ndp": ["sysctl", "-q", "-w", "net.ipv6.conf.eth0.proxy_ndp=0"],
        "proxy_delay": ["sysctl", "-q", "-w", "net.ipv6.neigh.eth0.proxy_delay=80"],
        # An entry of ours for an address this gateway must not answer for (a failed step, a hand edit).
        "stray entry": ["ip", "-6", "neigh", "add", "proxy", "2001:db8:0:2:e::9", "dev", "eth0", "proto", "250"],
    }[drift])
    _, out = exec_plan(ns6, dp.Plan(), reads)
    drifted = gw_state(out)
    assert drifted != GW_POOL, "the read-back must notice"
    failures, out = exec_plan(ns6, dp.plan_gateway(drifted, GW_POOL), reads)
    assert failures == [] and gw_state(out) == GW_POOL
    proxies, local, _ = held6(ns6)
    assert proxies == {"2001:db8:0:2:e::1", "2001:db8:0:2:e::2", "2001:db8:0:2:e::3"} and POOL6 in local
    assert sysctl(ns6, "net.ipv6.conf.eth0.proxy_ndp") == "1" and sysctl(ns6, "net.ipv6.neigh.eth0.proxy_delay") == "0"


def old_layout6(ns: Netns, addresses: list[str]) -> None:
    """What the previous version left: a /128 per IPv6 address (nodad), recorded in the ip6 table."""
    ns.run(["ip", "-6", "-batch", "-"], "".join(f"addr add {a}/128 dev eth0 nodad\n" for a in addresses))
    ns.run(["nft", "-f", "-"], "table ip6 egressportal {\n  set egress_addresses {\n    type ipv6_addr\n"
           f"    elements = {{ {', '.join(addresses)} }}\n  }}\n}}\n")  # fmt: skip


def test_a_gateway_on_the_old_ipv6_layout_migrates_make_before_break(ns6):
    reads = dp.gateway_read_commands("eth0")
    v6 = ["2001:db8:0:2:e::1", "2001:db8:0:2:e::2", "2001:db8:0:2:e::3"]
    old_layout6(ns6, v6)
    _, out = exec_plan(ns6, dp.Plan(), reads)
    old = gw_state(out)
    assert {str(a) for a in old.legacy_addresses} == set(v6) and not [p for p in old.pools if p.version == 6]
    plan = dp.plan_gateway(old, GW_POOL)
    # Make (pool route, proxy entries) before the nft step, break (the /128s) after it.
    assert plan.pre_ip6[:2] == [f"route replace local {POOL6} dev lo table 255 proto 250",
                                "neigh add proxy 2001:db8:0:2:e::1 dev eth0 proto 250"]  # fmt: skip
    assert plan.post_ip6 == [f"addr del {a}/128 dev eth0" for a in v6]
    assert "3 /128 addresses moved to pool routes" in plan.changes
    steps = [argv[:3] for argv, _ in plan.steps()]
    assert steps.index(["ip", "-6", "-batch"]) < steps.index(["nft", "-f", "-"])
    failures, out = exec_plan(ns6, plan, reads)
    assert failures == [] and gw_state(out) == GW_POOL
    proxies, local, addrs = held6(ns6)
    assert proxies == set(v6) and POOL6 in local and "2001:db8:0:2:e::" not in addrs


def test_a_failed_migration_keeps_the_128s(ns6):
    """The batch stops at its first failing line: a /128 never goes unless its replacement is in place."""
    reads = dp.gateway_read_commands("eth0")
    old_layout6(ns6, ["2001:db8:0:2:e::1"])
    _, out = exec_plan(ns6, dp.Plan(), reads)
    plan = dp.plan_gateway(gw_state(out), GW_POOL)
    # Break the make step: a proxy entry on an interface that does not exist.
    broken = dp.Plan(**{**plan.__dict__, "pre_ip6": [*plan.pre_ip6[:1], "neigh add proxy 2001:db8:0:2:e::1 dev nosuch0"]})
    failures, out = exec_plan(ns6, broken, reads)
    assert failures and failures[0][0][:2] == ["ip", "-6"]
    assert "2001:db8:0:2:e::1/128" in ns6.run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout

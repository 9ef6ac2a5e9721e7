"""Node-scoped steering at 10,000 apps: each node's map holds only the apps placed on it, and toggling an
app on node1 costs node1 the same whether node2 runs 0 or 10,000 dedicated apps (and node2 nothing).

Three configurations, the same toggle (enable shop-api on node1, then disable it) in each:
  A. only the demo apps;
  B. + 5,000 dedicated apps placed on node1 and 5,000 on node2 (10,000, spread over the lab's nodes);
  C. + 10,000 more dedicated apps placed on node2 (node1 unchanged, node2 15,000).
The toggle is reconciled inline (no broker: exactly the hosts the services marked, gateways then nodes,
as the workers would) so that each host's reconcile is timed on its own. Every synthetic app holds one
address on a gateway (they alternate), so the gateways grow with B and C by design: a gateway SNATs
the apps with an address on it, wherever they run. What must not grow is the node side.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BenchEnv, bulk_apps, log, pod_cidrs_add, print_table, subnets, summarize, target, write_result

NAME = "node_scope"
APP = "shop-api"
TOGGLES = int(os.environ.get("BENCH_SCOPE_TOGGLES", "5"))
NODE1_PODS, NODE2_PODS = "198.19.0.0/18", "198.19.64.0/18"  # room for the synthetic apps' /32s
POOL = "198.19.128.0/17"  # their egress addresses


def add_dedicated(node, count: int, offset: int, pods: str) -> None:
    """``count`` dedicated apps placed on ``node`` (one /32 each), each with one address on gw1 or gw2."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from egressportal.core.models import EgressIP, Gateway, IPPool

    owner = get_user_model().objects.get(username="bob")
    gateways = list(Gateway.objects.order_by("name"))
    pool = IPPool.objects.get(cidr=POOL)
    taken = EgressIP.objects.filter(pool=pool).exclude(status="free").count()
    sources = subnets(pods, 32, offset + count)[offset:]
    apps = bulk_apps(owner=owner, region=node.region, prefix=f"{node.name}-{offset}-", cidrs=sources, nodes=[node],
                     egress_type="dedicated", egress_status="assigned")
    first = int(ipaddress.IPv4Network(POOL).network_address) + 1 + taken
    now = timezone.now()
    EgressIP.objects.bulk_create([
        EgressIP(pool=pool, address=str(ipaddress.IPv4Address(first + i)), address_int=first + i, status="assigned",
                 app=app, gateway=gateways[i % len(gateways)], role="active", programmed=True, assigned_at=now,
                 last_app=app, last_owner=owner)
        for i, app in enumerate(apps)
    ], batch_size=1000, update_conflicts=True, unique_fields=["address"],  # the pool's free rows become these
        update_fields=["status", "app", "gateway", "role", "programmed", "assigned_at", "last_app", "last_owner"])


def reconcile_owed(host_reconcile) -> dict[str, float]:
    """What the workers would do: reconcile every host that owes an app work, gateways first, until none
    does. Returns seconds per host (summed over rounds)."""
    from egressportal.core.models import HostSync

    spent: dict[str, float] = {}
    for _ in range(8):
        owed = list(HostSync.objects.values_list("gateway_id", "node_id").distinct())
        if not owed:
            return spent
        for kind, pks in (("gateway", {g for g, _ in owed if g}), ("node", {n for _, n in owed if n})):
            for pk in sorted(pks):
                result = host_reconcile(kind=kind, pk=pk)
                if result is not None:
                    spent[result.host] = spent.get(result.host, 0.0) + result.duration
    raise RuntimeError("hosts still owe work after 8 rounds")


def converge_all(host_reconcile) -> None:
    from egressportal.core.models import Gateway, Node

    for gw in Gateway.objects.all():
        host_reconcile(kind="gateway", pk=gw.pk)
    for node in Node.objects.all():
        host_reconcile(kind="node", pk=node.pk)


def measure(env, host_reconcile, node_map_size, label: str) -> dict:
    from egressportal.core import services
    from egressportal.core.desired import node_desired
    from egressportal.core.models import App, Node, Placement

    lab = env.lab
    app = App.objects.get(name=APP)
    node1_before = lab.remote_commands("node1")
    node2_before = lab.remote_commands("node2")
    toggles: dict[str, list[float]] = {"enable": [], "disable": []}
    hosts: dict[str, list[float]] = {}
    for _ in range(TOGGLES):
        for kind in ("enable", "disable"):
            started = time.perf_counter()
            (services.egress_enable if kind == "enable" else services.egress_disable)(app=app)
            spent = reconcile_owed(host_reconcile)
            toggles[kind].append(time.perf_counter() - started)
            for host, seconds in spent.items():
                hosts.setdefault(f"{kind}: {host}", []).append(seconds)
            want = App.objects.get(pk=app.pk).egress_status
            if want != ("assigned" if kind == "enable" else "disabled"):
                raise RuntimeError(f"{label}: {kind} ended {want}")
    node2_commands = lab.remote_commands("node2") - node2_before  # before our own read of node2's map below
    node1_commands = lab.remote_commands("node1") - node1_before
    services.egress_enable(app=app)
    reconcile_owed(host_reconcile)
    # node1's desired state from the database, alone (what grew with every app of the region before).
    desired_ms = []
    for _ in range(20):
        started = time.perf_counter()
        plan = node_desired(Node.objects.get(name="node1"))
        desired_ms.append((time.perf_counter() - started) * 1000)
    steered = len(plan.state.steering)
    sizes = {n: node_map_size(n) for n in ("node1", "node2")}
    placed = {n: Placement.objects.filter(node__name=n, app__egress_type="dedicated").count() for n in ("node1", "node2")}
    services.egress_disable(app=app)
    reconcile_owed(host_reconcile)
    return {
        "toggle_ms": {k: summarize([s * 1000 for s in v]) for k, v in toggles.items()},
        "host_ms": {k: summarize([s * 1000 for s in v]) for k, v in sorted(hosts.items())},
        "map_entries": sizes,
        "dedicated_placements": placed,
        "node2_commands": node2_commands,
        "node1_commands": node1_commands,
        "node1_desired_ms": summarize(desired_ms),
        "node1_desired_entries": steered,
    }


def main() -> int:
    with BenchEnv(NAME, env={"EGRESS_RECONCILE_DISPATCH": "none"}) as env:
        from egressportal.core import services
        from egressportal.core.models import Node, Region
        from workers.reconcile import host_read_actual, host_reconcile, host_session

        lab = env.lab
        assert lab is not None
        region = Region.objects.get(slug="lab")
        services.pool_create(region=region, name="bench-scope", cidr=POOL)
        node1 = pod_cidrs_add(Node.objects.get(name="node1"), NODE1_PODS)
        node2 = pod_cidrs_add(Node.objects.get(name="node2"), NODE2_PODS)
        converge_all(host_reconcile)

        def node_map_size(name: str) -> int:
            node = Node.objects.get(name=name)
            return len(host_read_actual(host_session(node), node).steering)

        results = {}
        results["A: demo apps only"] = measure(env, host_reconcile, node_map_size, "A")
        log("B: 5,000 dedicated apps on each node")
        add_dedicated(node1, 5000, 0, NODE1_PODS)
        add_dedicated(node2, 5000, 0, NODE2_PODS)
        converge_all(host_reconcile)
        results["B: 5,000 on node1, 5,000 on node2"] = measure(env, host_reconcile, node_map_size, "B")
        log("C: 10,000 more on node2")
        add_dedicated(node2, 10000, 5000, NODE2_PODS)
        converge_all(host_reconcile)
        results["C: 5,000 on node1, 15,000 on node2"] = measure(env, host_reconcile, node_map_size, "C")
        vendor = env.vendor

    rows = []
    for name, r in results.items():
        node1 = r["host_ms"].get("enable: node1", {"p50": 0.0})
        rows.append((
            name, r["map_entries"]["node1"], r["dedicated_placements"]["node1"], r["map_entries"]["node2"],
            r["dedicated_placements"]["node2"], f"{r['toggle_ms']['enable']['p50']:.0f}", f"{node1['p50']:.0f}",
            f"{r['node1_desired_ms']['p50']:.1f}", f"{r['host_ms'].get('enable: gw1', {'p50': 0.0})['p50']:.0f}",
            r["node2_commands"],
        ))
    table = print_table(
        f"Toggle of {APP} (on node1) with apps on other nodes; {TOGGLES} enable/disable cycles per row, {vendor}",
        ["configuration", "node1 map", "node1 placed", "node2 map", "node2 placed", "enable p50 ms",
         "node1 reconcile p50 ms", "node1 desired state p50 ms", "gw1 reconcile p50 ms", "node2 commands"],
        rows,
    )
    a, c = results["A: demo apps only"], results["C: 5,000 on node1, 15,000 on node2"]
    b = results["B: 5,000 on node1, 5,000 on node2"]
    node1_b = b["host_ms"]["enable: node1"]["p50"]
    node1_c = c["host_ms"]["enable: node1"]["p50"]
    desired_b, desired_c = b["node1_desired_ms"]["p50"], c["node1_desired_ms"]["p50"]
    targets = [
        target("node1 desired state p50, 15,000 vs 5,000 on node2", (desired_c / desired_b - 1) * 100, 10, "%"),
        target("node1 reconcile p50, 15,000 vs 5,000 apps on node2", (node1_c / node1_b - 1) * 100, 10, "%"),
        target("commands on node2 during node1 toggles (all rows)", sum(r["node2_commands"] for r in results.values()),
               0, "commands"),
    ]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.1f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    print(f"node1 map in A: {a['map_entries']['node1']} entries")
    write_result(NAME, {"database": vendor, "table": table, "results": results, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())

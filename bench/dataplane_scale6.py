"""IPv6 dataplane scale: connection latency from an app namespace to the echo server's IPv6 address through
its gateway, with 10 and with 10,000 IPv6 mappings (SNAT66 map and guard on the gateway, steering map on the
node: one lookup each per new connection).

Django-free: hand-built dual-stack states rendered by the product's renderer (dataplane/render.py) and applied
to the lab's hosts in one exec each (render_exec_script), read back and compared, like a reconcile. The
configurations alternate per round, so drift in machine load hits both alike.

Then the gateway's IPv6 address plan at scale (anyIP: the pools as local routes, one proxy NDP entry per
address): switching gw1 between 10 and 10,000 IPv6 egress addresses (one exec each way, from the rounds
above), and the restore of a flushed gw1 holding 10,000 (read the host, then one apply-and-read-back exec,
compared, as a reconcile without a verified state does), with where its time goes.

Targets: latency at 10,000 IPv6 mappings within 10% of 10 (issue 20); restore <= 1 s (as issue 17's for IPv4).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import log, print_table, summarize, target, write_result

from egressportal import dataplane as dp
from egressportal.core.ipam6 import usable_prefixes6
from workers.lab import Lab, LabConfig
from workers.lab import plan as lab_plan
from workers.lab.plan import IF

NAME = "dataplane_scale6"
APP = "bench6"
BIG = int(os.environ.get("BENCH_SCALE_APPS", "10000"))
SMALL = 10
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "300"))
ROUNDS = 3
RESTORES = 3
FILLER_SOURCES = ipaddress.IPv6Network("2001:db8:20::/64")  # one /128 per synthetic app (on node1)
FILLER_POOL = ipaddress.IPv6Network("2001:db8:0:2:f::/80")  # their egress addresses, on gw1's public link
EGRESS = "2001:db8:0:2:e::1"
# The pools as the domain gives them to a gateway: the fewest prefixes covering what each can hand out.
POOLS = [str(n) for net in (lab_plan.EGRESS_POOL6, FILLER_POOL) for n in usable_prefixes6(net)]

PROBE = r"""
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for i in range(n + 10):
    t = time.perf_counter()
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
        while s.recv(4096):
            pass
    if i >= 10:  # warm-up: neighbour discovery, caches
        out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"""


def states(lab: Lab, app, mappings: int) -> tuple[dp.GatewayState, dp.NodeState]:
    """gw1 and node1 with the app plus ``mappings - 1`` synthetic IPv6 apps."""
    hp = lab.host_plan
    nodes = [h for h, p in hp.items() if p.role == "node"]
    fill = [
        (f"{FILLER_SOURCES.network_address + i + 1}/128", str(FILLER_POOL.network_address + i + 1))
        for i in range(mappings - 1)
    ]
    pods = [str(hp[n].pod_cidr6) for n in nodes] + [str(FILLER_SOURCES)]
    gw = dp.GatewayState.build(
        public_interface=IF.PUBLIC,
        addresses=[EGRESS, *(a for _, a in fill)],
        snat={app.cidr6: EGRESS, **dict(fill)},
        return_routes={str(hp[n].pod_cidr6): str(hp[n].transit_address6) for n in nodes},
        guarded_sources=pods,
        pools=POOLS,
    )
    node = dp.NodeState.build(
        steering={app.cidr6: 1, **{src: 1 for src, _ in fill}},
        gateways6={1: str(hp["gw1"].transit_address6)},
        internal=[str(lab_plan.TRANSIT_NET6), *pods],
    )
    return gw, node


class Host:
    def __init__(self, lab: Lab, name: str) -> None:
        self.lab, self.name = lab, name
        self.gateway = lab.host_plan[name].role == "gateway"
        self.reads = dp.gateway_read_commands(IF.PUBLIC) if self.gateway else dp.node_read_commands()
        self.actual = self.exec(dp.Plan())

    def exec(self, plan: dp.Plan):
        steps = plan.steps()
        script = dp.render_exec_script(steps, self.reads, announce=plan.announce)
        out = self.lab.host_exec(self.name, dp.EXEC_ARGV, input=script, timeout=300).stdout
        outputs: dict[str, tuple[int, str]] = {}
        for name, status, text in dp.parse_exec_output(out):
            kind, _, which = name.partition(":")
            if kind == "apply" and status:
                raise RuntimeError(f"{self.name}: {steps[int(which)][0]} failed: {text[:500]}")
            if kind == "read":
                outputs[which] = (status, text)
        # The reconcile's own reading of the answers.
        return dp.parse_host_reads(self.reads, outputs, public_interface=IF.PUBLIC if self.gateway else None)

    def converge(self, desired) -> float:
        started = time.perf_counter()
        plan = dp.plan_gateway(self.actual, desired) if self.gateway else dp.plan_node(self.actual, desired)
        self.actual = self.exec(plan)
        if self.actual != desired:
            raise RuntimeError(f"{self.name} does not hold the applied state")
        return time.perf_counter() - started


def probe(netns: str, n: int) -> list[float]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", PROBE, str(lab_plan.ECHO_ADDRESS6), "80", str(n)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return json.loads(out.stdout)


def main() -> int:
    index = int(os.environ.get("EGRESS_TEST_RUN_LAB_INDEX", "30"))
    lab = Lab(LabConfig(prefix="bsix", index=index), log=log)
    lab.down()
    lab.up()
    applies: dict[str, list[float]] = {}
    try:
        app = lab.add_app(APP, "node1")
        gw1, node1 = Host(lab, "gw1"), Host(lab, "node1")
        node_public6 = str(lab.host_plan["node1"].public6)
        assert lab.seen_ip6(APP) == node_public6
        configs = {f"{SMALL} IPv6 mappings": states(lab, app, SMALL), f"{BIG} IPv6 mappings": states(lab, app, BIG)}
        latencies: dict[str, list[float]] = {name: [] for name in configs}
        for rnd in range(ROUNDS):
            for name, (gw_state, node_state) in configs.items():
                # Gateway first (make before break), then the node: as a reconcile orders them.
                applies.setdefault(f"{name}: gateway", []).append(gw1.converge(gw_state))
                applies.setdefault(f"{name}: node", []).append(node1.converge(node_state))
                assert lab.seen_ip6(APP) == EGRESS, "the app does not leave from its dedicated IPv6 address"
                latencies[name] += probe(lab.apps[APP].netns, REQUESTS // ROUNDS)
            log(f"latency round {rnd + 1}/{ROUNDS} done")
        big_gw, big_node = configs[f"{BIG} IPv6 mappings"]
        gw1.converge(big_gw)
        node1.converge(big_node)
        restores: list[float] = []
        for _ in range(RESTORES):
            lab.flush_product_state("gw1")  # a reboot: tables, routes, proxy entries, sysctls gone
            started = time.perf_counter()
            gw1.actual = gw1.exec(dp.Plan())  # no verified state after a reboot: read first
            gw1.converge(big_gw)
            restores.append(time.perf_counter() - started)
            log(f"restore: {restores[-1] * 1000:.0f} ms")
            assert lab.seen_ip6(APP) == EGRESS
        # Where a restore's time goes: its apply steps one at a time on a flushed gw1.
        lab.flush_product_state("gw1")
        gw1.actual = gw1.exec(dp.Plan())
        parts: dict[str, float] = {}
        for argv, stdin in dp.plan_gateway(gw1.actual, big_gw).steps():
            t = time.perf_counter()
            lab.host_exec("gw1", argv, input=stdin, timeout=300)
            what = f"{stdin.count(chr(10))} lines" if stdin is not None else f"{len(argv)} args"
            name = " ".join(argv[:3])
            parts[f"{name} ({what})"] = time.perf_counter() - t
        gw1.actual = gw1.exec(dp.Plan())
        assert gw1.actual == big_gw
    finally:
        lab.down()

    stats = {name: summarize(values) for name, values in latencies.items()}
    base = stats[f"{SMALL} IPv6 mappings"]
    rows = [
        (name, s["n"], f"{s['p50']:.3f}", f"{s['p95']:.3f}", f"{(s['p50'] / base['p50'] - 1) * 100:+.1f}%",
         f"{(s['p95'] / base['p95'] - 1) * 100:+.1f}%")
        for name, s in stats.items()
    ]  # fmt: skip
    table = print_table(
        f"IPv6 connection latency through the gateway (connect + request + answer), ms; {ROUNDS} rounds",
        ["gateway and node hold", "n", "p50", "p95", "p50 vs 10", "p95 vs 10"], rows,
    )  # fmt: skip
    apply_rows = [(name, f"{summarize([v * 1000 for v in values])['p50']:.0f}") for name, values in applies.items()]
    table2 = print_table("Switching to that configuration: one exec per host (apply + read back + compare), ms p50",
                         ["step", "ms"], apply_rows)  # fmt: skip
    restore = summarize([r * 1000 for r in restores])
    switch_up = summarize([v * 1000 for v in applies[f"{BIG} IPv6 mappings: gateway"]])
    switch_down = summarize([v * 1000 for v in applies[f"{SMALL} IPv6 mappings: gateway"][1:]])  # 1st: from empty
    table3 = print_table(
        f"gw1's IPv6 address plan at {BIG} addresses (anyIP: {len(POOLS)} pool routes + a proxy entry each), ms",
        ["what", "ms"],
        [(f"restore of a flushed gateway (read + apply/read back + compare), p50 of {RESTORES}", f"{restore['p50']:.0f}"),
         ("restore, max", f"{restore['max']:.0f}"),
         (f"switch {SMALL} -> {BIG} (one exec), p50", f"{switch_up['p50']:.0f}"),
         (f"switch {BIG} -> {SMALL} (one exec), p50", f"{switch_down['p50']:.0f}"),
         *((f"restore step: {k}", f"{v * 1000:.0f}") for k, v in parts.items())],
    )  # fmt: skip
    big = stats[f"{BIG} IPv6 mappings"]
    targets = [
        target("IPv6 latency p50 at 10,000 vs 10 mappings", (big["p50"] / base["p50"] - 1) * 100, 10, "%"),
        target("restore of a flushed gateway with 10,000 IPv6 addresses (p50)", restore["p50"], 1000, "ms"),
    ]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.1f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")  # fmt: skip
    write_result(NAME, {"table": table + "\n\n" + table2 + "\n\n" + table3, "latency_ms": stats,
                        "apply_ms": {k: [v * 1000 for v in vs] for k, vs in applies.items()}, "restore_ms": restore,
                        "restore_parts_ms": {k: v * 1000 for k, v in parts.items()}, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())

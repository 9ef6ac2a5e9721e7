"""IPv6 dataplane scale: connection latency from an app namespace to the echo server's IPv6 address through
its gateway, with 10 and with 10,000 IPv6 mappings (SNAT66 map and guard on the gateway, steering map on the
node: one lookup each per new connection).

Django-free: hand-built dual-stack states rendered by the product's renderer (dataplane/render.py) and applied
to the lab's hosts in one exec each (render_exec_script), read back and compared, like a reconcile. The
configurations alternate per round, so drift in machine load hits both alike.

Target (issue 20): latency at 10,000 IPv6 mappings within 10% of 10.
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
from workers.lab import Lab, LabConfig
from workers.lab import plan as lab_plan
from workers.lab.plan import IF

NAME = "dataplane_scale6"
APP = "bench6"
BIG = int(os.environ.get("BENCH_SCALE_APPS", "10000"))
SMALL = 10
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "300"))
ROUNDS = 3
FILLER_SOURCES = ipaddress.IPv6Network("2001:db8:20::/64")  # one /128 per synthetic app (on node1)
FILLER_POOL = ipaddress.IPv6Network("2001:db8:0:2:f::/80")  # their egress addresses, on gw1's public link
EGRESS = "2001:db8:0:2:e::1"

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
        script = dp.render_exec_script(steps, self.reads)
        out = self.lab.host_exec(self.name, dp.EXEC_ARGV, input=script, timeout=300).stdout
        reads: dict[str, str | None] = {}
        for name, status, text in dp.parse_exec_output(out):
            kind, _, which = name.partition(":")
            if kind == "apply" and status:
                raise RuntimeError(f"{self.name}: {steps[int(which)][0]} failed: {text[:500]}")
            if kind == "read":
                reads[which] = None if status and dp.is_missing_table_error(text) else text
        if self.gateway:
            return dp.parse_gateway(reads["nft"], reads["addr"] or "[]", reads["routes"] or "[]", IF.PUBLIC,
                                    nft6_json=reads["nft6"], addr6_json=reads["addr6"], route6_json=reads["routes6"])
        return dp.parse_node(reads["nft"], reads["rules"] or "[]", reads["routes"] or "[]",
                             nft6_json=reads["nft6"], rule6_json=reads["rules6"], route6_json=reads["routes6"])

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
    big = stats[f"{BIG} IPv6 mappings"]
    targets = [target("IPv6 latency p50 at 10,000 vs 10 mappings", (big["p50"] / base["p50"] - 1) * 100, 10, "%")]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.1f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")  # fmt: skip
    write_result(NAME, {"table": table + "\n\n" + table2, "latency_ms": stats,
                        "apply_ms": {k: [v * 1000 for v in vs] for k, vs in applies.items()}, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Redeploy: an app with dedicated egress moves to the other node. Measured from the platform's
placement PUT for the new node (``PUT /api/v1/nodes/{id}/placements/``, as the scheduler sends it once
the new pod runs) to the first request the echo server sees from the app's dedicated IP out of the new
pod, through the API, the broker, a real worker, SSH and nft on the lab. The owner does nothing.

No target in DESIGN.md; the toggle's (p50 <= 500 ms, p95 <= 1.5 s) is the yardstick: a move is one
gateway phase (SNAT the new source) and one node phase (steer it), like an enable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BenchEnv, log, print_table, summarize, target, wait_for, write_result

NAME = "placement_move"
MOVES = int(os.environ.get("BENCH_MOVES", "20"))
APP = "shop-api"

# Runs inside the app's namespace: one request after another (fresh connection each, 200 ms timeout)
# until the echo server answers with the wanted address; prints the seconds since the start stamp.
PROBE = r"""
import socket, sys, time
host, want, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        with socket.create_connection((host, 80), timeout=0.2) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
            body = b""
            while chunk := s.recv(4096):
                body += chunk
        if body.split(b"\r\n\r\n", 1)[-1].strip().decode() == want:
            print(time.monotonic())
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.005)
sys.exit(1)
"""


def main() -> int:
    with BenchEnv(NAME) as env:
        from django.test import Client

        from egressportal.core import services
        from egressportal.core.models import App, EgressIP, Node
        from egressportal.tokens.models import ApiToken
        from workers.lab import ECHO_ADDRESS
        from workers.lab_register import lab_app_owner, lab_platform_account

        lab = env.lab
        assert lab is not None
        app = App.objects.get(name=APP)
        env.start_worker(concurrency=2)
        time.sleep(2)  # the first health round
        services.egress_enable(app=app)
        wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "assigned", timeout=30, what="assigned")
        active = EgressIP.objects.get(app=app, role="active").address
        assert lab.seen_ip(APP) == active
        token = ApiToken.objects.create(user=lab_platform_account(), expiry=dt.timedelta(days=1), name="bench-move")[1]
        headers = {"HTTP_AUTHORIZATION": f"Token {token}"}
        client = Client()
        nodes = {n.name: n for n in Node.objects.all()}

        def report(node_name: str) -> float:
            entries = []
            for name, lab_app in sorted(lab.apps.items()):
                owner = lab_app_owner(name, lab_app, app.region)
                if owner is not None and lab_app.node == node_name:
                    entries.append({"app": owner.pk, "addresses": [lab_app.cidr]})
            started = time.perf_counter()
            response = client.put(f"/api/v1/nodes/{nodes[node_name].pk}/placements/",
                                  data=json.dumps({"placements": entries}), content_type="application/json", **headers)
            if response.status_code != 200:
                raise RuntimeError(f"placement PUT {node_name}: {response.status_code} {response.content[:300]!r}")
            return (time.perf_counter() - started) * 1000

        seen_s: list[float] = []
        put_ms: list[float] = []
        for i in range(MOVES):
            current = lab.apps[APP].node
            target_node = "node2" if current == "node1" else "node1"
            moved = lab.add_app(APP, target_node)  # the new pod runs (left on its node's own IP until steered)
            probe = subprocess.Popen(
                ["ip", "netns", "exec", moved.netns, sys.executable, "-c", PROBE, str(ECHO_ADDRESS), active, "30"],
                stdout=subprocess.PIPE, text=True,
            )
            time.sleep(0.3)  # the probe runs (and sees the node's address) before the report
            started = time.monotonic()
            put_ms.append(report(target_node))
            put_ms.append(report(current))  # the old node no longer runs it
            out, _ = probe.communicate(timeout=40)
            if probe.returncode != 0:
                raise RuntimeError(f"move {i + 1}: the echo server never saw {active} from {target_node}")
            seen_s.append(float(out.strip()) - started)
            wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "assigned" and not app.host_syncs.exists(),
                     timeout=30, what="settled")
            log(f"move {i + 1}/{MOVES} to {target_node}: {seen_s[-1] * 1000:.0f} ms")
        vendor = env.vendor

    seen = summarize([s * 1000 for s in seen_s])
    put = summarize(put_ms)
    table = print_table(
        f"Placement PUT for the new node -> first request seen from the dedicated IP there ({MOVES} moves, {vendor})",
        ["measure", "n", "p50 ms", "p95 ms", "max ms"],
        [
            ("PUT to first request from the dedicated IP", seen["n"], f"{seen['p50']:.0f}", f"{seen['p95']:.0f}",
             f"{seen['max']:.0f}"),
            ("one placement PUT (HTTP answer)", put["n"], f"{put['p50']:.0f}", f"{put['p95']:.0f}", f"{put['max']:.0f}"),
        ],
    )
    targets = [
        target("move p50 (toggle yardstick)", seen["p50"], 500, "ms"),
        target("move p95 (toggle yardstick)", seen["p95"], 1500, "ms"),
    ]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.1f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    write_result(NAME, {"database": vendor, "table": table, "seen_ms": seen, "put_ms": put, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())

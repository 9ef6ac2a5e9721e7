"""Failover: traffic flows from an app (one request every ~50 ms to the echo server), then the active
gateway's cables are pulled (``lab.cut_gateway``: transit and public down, management up). Measured: time
from the cut to the first request answered from the standby address. Repeated, with the gateway restored
and traffic back on the active address (failback) between runs.

Target (docs/ARCHITECTURE.md, "Targets"): traffic on the standby IP within 2 s of the active gateway's death.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BenchEnv, log, print_table, summarize, target, wait_for, write_result

NAME = "failover"
RUNS = int(os.environ.get("BENCH_FAILOVER_RUNS", "5"))
APP = "shop-api"

# Runs inside the app's namespace: one new connection per request (what a client's retry does), a short
# timeout so a dead path costs one slot, and one line per answer: "<monotonic> <address or ->".
TRAFFIC = r"""
import socket, sys, time
host, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while True:
    started = time.monotonic()
    seen = "-"
    try:
        with socket.create_connection((host, port), timeout=0.3) as s:
            s.settimeout(0.3)
            s.sendall(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        seen = data.split(b"\r\n\r\n", 1)[-1].decode().strip() or "-"
    except OSError:
        pass
    print(f"{time.monotonic():.4f} {seen}", flush=True)
    time.sleep(max(0.0, every - (time.monotonic() - started)))
"""


class Traffic:
    def __init__(self, netns: str, host: str, port: int) -> None:
        self.answers: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", TRAFFIC, host, str(port), "0.05"],
            stdout=subprocess.PIPE, text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t, seen = line.split()
            self.answers.append((float(t), seen))

    def first_after(self, since: float, address: str) -> float | None:
        for t, seen in list(self.answers):
            if t > since and seen == address:
                return t
        return None

    def latest(self, n: int = 3) -> list[str]:
        return [seen for _, seen in self.answers[-n:]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def breakdown(gateway, cut_wall: float) -> dict:
    """When the health check marked the gateway unhealthy, and the node reconciles that re-steered."""
    from egressportal.core.models import Event

    out: dict = {}
    marked = Event.objects.filter(kind="gateway.unhealthy", gateway=gateway).order_by("-created_at").first()
    if marked and marked.created_at.timestamp() > cut_wall:
        out["unhealthy_after_s"] = marked.created_at.timestamp() - cut_wall
        nodes = Event.objects.filter(kind="node.reconciled", created_at__gt=marked.created_at).order_by("created_at")[:2]
        out["node_reconcile_ms"] = [e.data.get("duration_ms") for e in nodes]
    return out


def main() -> int:
    from workers.lab import ECHO_ADDRESS

    results: list[dict] = []
    with BenchEnv(NAME) as env:
        from egressportal.core import services
        from egressportal.core.models import App, EgressIP

        assert env.lab is not None
        env.start_worker(concurrency=2)
        app = App.objects.get(name=APP)
        services.egress_enable(app=app)
        wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "assigned", timeout=60, what=f"{APP} assigned")
        active = EgressIP.objects.select_related("gateway").get(app=app, role="active")
        standby = EgressIP.objects.select_related("gateway").get(app=app, role="standby")
        log(f"active {active.address} on {active.gateway.name}, standby {standby.address} on {standby.gateway.name}")
        traffic = Traffic(env.lab.apps[APP].netns, str(ECHO_ADDRESS), 80)
        try:
            wait_for(lambda: traffic.latest() == [active.address] * 3, timeout=30, what="traffic on the active address")
            for run in range(1, RUNS + 1):
                cut, cut_wall = time.monotonic(), time.time()
                env.lab.cut_gateway(active.gateway.name)
                seen = wait_for(lambda cut=cut: traffic.first_after(cut, standby.address), timeout=30, interval=0.01,
                                what="traffic on the standby address")
                lost = sum(1 for t, s in traffic.answers if t > cut and t < seen and s == "-")
                results.append({"run": run, "failover_s": seen - cut, "lost_requests": lost,
                                **breakdown(active.gateway, cut_wall)})
                log(f"run {run}: standby after {seen - cut:.2f} s ({lost} requests unanswered)")
                env.lab.restore_gateway(active.gateway.name)
                restored = time.monotonic()
                back = wait_for(lambda r=restored: traffic.first_after(r, active.address), timeout=60, interval=0.05,
                                what="failback to the active address")
                results[-1]["failback_s"] = back - restored
                wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "assigned", timeout=30,
                         what=f"{APP} assigned again")
                time.sleep(1)
        finally:
            traffic.stop()
            if env.lab:
                env.lab.restore_gateway(active.gateway.name)
        vendor = env.vendor
    failover = summarize([r["failover_s"] * 1000 for r in results])
    failback = summarize([r["failback_s"] * 1000 for r in results])
    rows = [
        (r["run"], f"{r['failover_s'] * 1000:.0f}", f"{r.get('unhealthy_after_s', float('nan')) * 1000:.0f}",
         "/".join(f"{d:.0f}" for d in r.get("node_reconcile_ms", [])), r["lost_requests"], f"{r['failback_s'] * 1000:.0f}")
        for r in results
    ]
    rows.append(("p50", f"{failover['p50']:.0f}", "", "", "", f"{failback['p50']:.0f}"))
    rows.append(("max", f"{failover['max']:.0f}", "", "", "", f"{failback['max']:.0f}"))
    table = print_table(
        f"Failover of {APP}'s active gateway ({vendor}; health probe every 1 s, requests every 50 ms)",
        ["run", "cut -> standby answers (ms)", "cut -> marked unhealthy (ms)", "node reconciles (ms)",
         "unanswered requests", "restore -> active answers (ms)"], rows,
    )
    targets = [target("failover p50", failover["p50"], 2000, "ms"), target("failover max", failover["max"], 2000, "ms")]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.0f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    write_result(NAME, {"database": vendor, "table": table, "runs": results, "failover_ms": failover,
                        "failback_ms": failback, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())

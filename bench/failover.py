"""Failover of a gateway that dies outright, and failback after it returns empty.

Traffic: one request every 100 ms from an app to the echo server, each on a new connection in its own
thread (a request stuck on a dead path never delays the next one), each with a 1 s timeout. The active
gateway loses power (``lab.power_off``: transit, public and management links dark at once, nothing
answers or refuses). Measured: power-off to the first answer from the standby address. Then it comes
back empty (``lab.power_on(empty=True)``: sshd restarted, the product's nft table, addresses, routes and
rules flushed): measured, power-on to the first answer from the active address again, and the requests
lost around failback. Two probers run (one leads); a worker and beat as usual.

``BENCH_FAILOVER_ALSO_DEAD=node2`` powers off that host at the same moment (the detection of one host
must not wait for another's); ``other-gateway`` names a gateway that holds none of the app's addresses.

``BENCH_FAILOVER_FLEET=1`` runs it on the fleet lab (4 gateways, BENCH_FLEET_NODES=40 nodes, every one
registered and probed), by default with one other gateway and the last node powered off at the same moment.
``BENCH_FAILOVER_SPREAD_APPS=400`` adds that many dedicated apps (bulk rows: setup) placed on every node in
turn, each with its active address on shop-api's active gateway and its standby on shop-api's standby: a
failover then re-steers every node of the lab, not only node1.

IPv6 (the lab is dual-stack; ``BENCH_FAILOVER_IPV6=0`` turns it off): a second loop of the same kind sends
the app's requests to the echo server's IPv6 address at the same time; the same moments are measured for it
against the IPv6 partners of the active and standby addresses, printed beside IPv4.

Targets (docs/ARCHITECTURE.md, "Targets"): standby answers p50 <= 1.0 s, max <= 1.5 s; failback loses at
most one request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    BenchEnv,
    bulk_apps,
    last_pod_cidr4,
    log,
    pod_cidrs_add,
    print_table,
    summarize,
    target,
    wait_for,
    write_result,
)

from workers.lab import LabConfig

NAME = "failover"
RUNS = int(os.environ.get("BENCH_FAILOVER_RUNS", "5"))
FLEET = os.environ.get("BENCH_FAILOVER_FLEET", "") not in ("", "0")
NODES = int(os.environ.get("BENCH_FLEET_NODES", "40"))
LAB = LabConfig(prefix=os.environ.get("BENCH_FAILOVER_PREFIX", "fl"), index=int(os.environ.get("BENCH_FAILOVER_INDEX", "24")),
                gateways=4 if FLEET else 2, nodes=NODES if FLEET else 2)
SPREAD_APPS = int(os.environ.get("BENCH_FAILOVER_SPREAD_APPS", "0"))
ALSO_DEAD = [h for h in os.environ.get("BENCH_FAILOVER_ALSO_DEAD", f"other-gateway,node{NODES}" if FLEET else "").split(",")
             if h]
APP = "shop-api"
IPV6 = os.environ.get("BENCH_FAILOVER_IPV6", "1") not in ("", "0")

# Runs inside the app's namespace: a request every `every` seconds, each in its own thread, one line per
# request when it ends: "<sent monotonic> <ended monotonic> <address or ->".
TRAFFIC = r"""
import socket, sys, threading, time
host, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lock = threading.Lock()
def one(sent):
    seen = "-"
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.settimeout(1.0)
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
    with lock:
        print(f"{sent:.4f} {time.monotonic():.4f} {seen}", flush=True)
nxt = time.monotonic()
while True:
    threading.Thread(target=one, args=(time.monotonic(),), daemon=True).start()
    nxt += every
    time.sleep(max(0.0, nxt - time.monotonic()))
"""


class Traffic:
    def __init__(self, netns: str, host: str, port: int) -> None:
        self.answers: list[tuple[float, str]] = []  # (answered at, address), in the order they ended
        self.sent: list[tuple[float, float, str]] = []  # (sent at, ended at, address or "-")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", TRAFFIC, host, str(port), "0.1"],
            stdout=subprocess.PIPE, text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            sent, ended, seen = line.split()
            if seen != "-":
                seen = str(ipaddress.ip_address(seen))  # one spelling of an IPv6 address
            self.sent.append((float(sent), float(ended), seen))
            self.answers.append((float(ended), seen))

    def lost_between(self, since: float, until: float) -> int:
        return sum(1 for sent, _, seen in list(self.sent) if since <= sent <= until and seen == "-")

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
    """When the prober marked the gateway unhealthy."""
    from egressportal.core.models import Event

    out: dict = {}
    marked = Event.objects.filter(kind="gateway.unhealthy", gateway=gateway).order_by("-created_at").first()
    if marked and marked.created_at.timestamp() > cut_wall:
        out["unhealthy_after_s"] = marked.created_at.timestamp() - cut_wall
        nodes = Event.objects.filter(kind="node.reconciled", created_at__gt=marked.created_at).order_by("created_at")[:2]
        out["node_reconcile_ms"] = [e.data.get("duration_ms") for e in nodes]
    return out


RESTEERED = re.compile(r"gateway (\S+) unhealthy: (\d+) nodes re-steered in (\d+) ms \((\d+) left")


def resteers(env: BenchEnv, gateway: str) -> list[tuple[int, int, int]]:
    """(nodes re-steered, ms, nodes left to the workers) of every failover of ``gateway``, from the probers' logs."""
    found = []
    for path in sorted(env.workdir.glob("prober*.log")):
        for m in RESTEERED.finditer(path.read_text(errors="replace")):
            if m.group(1) == gateway:
                found.append((int(m.group(2)), int(m.group(3)), int(m.group(4))))
    return found


def spread_apps(active_gateway, standby_gateway, count: int) -> None:
    """``count`` dedicated apps on every node in turn (a /32 each in a /23 the node gets for them), active on
    ``active_gateway`` and standby on ``standby_gateway``; a sweep puts them on the hosts."""
    import ipaddress

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from egressportal.core import services
    from egressportal.core.models import EgressIP, Node, Region

    region = Region.objects.get(slug="lab")
    pool = services.pool_create(region=region, name="spread", cidr="198.19.128.0/17")
    blocks = list(ipaddress.IPv4Network("198.19.0.0/17").subnets(new_prefix=23))
    nodes = [pod_cidrs_add(n, str(blocks[int(n.name.removeprefix("node")) - 1])) for n in Node.objects.order_by("pk")]
    cidrs = [f"{last_pod_cidr4(nodes[i % len(nodes)]).network_address + 1 + i // len(nodes)}/32"
             for i in range(count)]
    owner = get_user_model().objects.create_user(username="spread")
    apps = bulk_apps(owner=owner, region=region, prefix="s", cidrs=cidrs, nodes=nodes, egress_type="dedicated",
                     egress_status="assigned")
    first, now = int(pool.network.network_address) + 1, timezone.now()
    EgressIP.objects.bulk_create([
        EgressIP(pool=pool, address=str(ipaddress.IPv4Address(first + 2 * i + k)), address_int=first + 2 * i + k,
                 status="assigned", app=app, gateway=gw, role=role, programmed=True, assigned_at=now, last_app=app,
                 last_owner=owner)
        for i, app in enumerate(apps)
        for k, (gw, role) in enumerate(((active_gateway, "active"), (standby_gateway, "standby")))
    ], batch_size=1000)


def main() -> int:
    from workers.lab import ECHO_ADDRESS
    from workers.lab.plan import ECHO_ADDRESS6

    results: list[dict] = []
    name = NAME + ("_fleet" if FLEET else "") + ("_also_dead" if ALSO_DEAD else "") + ("_spread" if SPREAD_APPS else "")
    with BenchEnv(name, lab_config=LAB) as env:
        from egressportal.core import services
        from egressportal.core.models import App, EgressIP, Gateway

        assert env.lab is not None
        env.start_worker(concurrency=2)
        env.start_prober()
        env.start_prober()
        app = App.objects.get(name=APP)
        services.egress_enable(app=app)
        wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "assigned", timeout=60, what=f"{APP} assigned")
        wait_for(lambda: Gateway.objects.filter(health="healthy").count() == LAB.gateways, timeout=60,
                 what="gateways healthy")
        active = EgressIP.objects.select_related("gateway").get(app=app, role="active")
        standby = EgressIP.objects.select_related("gateway").get(app=app, role="standby")
        others = [g for g in Gateway.objects.order_by("slot").values_list("name", flat=True)
                  if g not in (active.gateway.name, standby.gateway.name)]
        ALSO_DEAD[:] = [others[0] if h == "other-gateway" else h for h in ALSO_DEAD]
        if SPREAD_APPS:
            from egressportal.core.models import Node
            from workers.sweep import sweep_all_hosts

            spread_apps(active.gateway, standby.gateway, SPREAD_APPS)
            since = time.time()
            sweep_all_hosts()
            wait_for(lambda: not Node.objects.filter(last_reconciled_at__lt=dt.datetime.fromtimestamp(since, dt.UTC))
                     .exists(), timeout=180, what="every node steering the spread apps")
            log(f"{SPREAD_APPS} dedicated apps on every node, active on {active.gateway.name}")
        log(f"active {active.address} on {active.gateway.name}, standby {standby.address} on {standby.gateway.name}"
            + (f"; also dying each run: {', '.join(ALSO_DEAD)}" if ALSO_DEAD else ""))
        v6 = IPV6 and bool(active.address6 and standby.address6)
        if IPV6 and not v6:
            log(f"{APP} has no IPv6 addresses (no IPv6 pool in the region): IPv4 only")
        traffic = Traffic(env.lab.apps[APP].netns, str(ECHO_ADDRESS), 80)
        traffic6 = Traffic(env.lab.apps[APP].netns, str(ECHO_ADDRESS6), 80) if v6 else None
        try:
            wait_for(lambda: traffic.latest() == [active.address] * 3, timeout=30, what="traffic on the active address")
            if traffic6:
                log(f"IPv6: active {active.address6}, standby {standby.address6}")
                wait_for(lambda: traffic6.latest() == [active.address6] * 3, timeout=30,
                         what="IPv6 traffic on the active address")
            for run in range(1, RUNS + 1):
                cut, cut_wall = time.monotonic(), time.time()
                env.lab.power_off(active.gateway.name)
                for host in ALSO_DEAD:
                    env.lab.power_off(host)
                seen = wait_for(lambda cut=cut: traffic.first_after(cut, standby.address), timeout=30, interval=0.01,
                                what="traffic on the standby address")
                seen6 = traffic6 and wait_for(lambda cut=cut: traffic6.first_after(cut, standby.address6), timeout=30,
                                              interval=0.01, what="IPv6 traffic on the standby address")
                time.sleep(2)  # requests sent into the dead path end (1 s timeout); the events are written
                lost = traffic.lost_between(cut - 1.0, seen)
                results.append({"run": run, "failover_s": seen - cut, "lost_requests": lost,
                                **breakdown(active.gateway, cut_wall)})
                steered = resteers(env, active.gateway.name)
                if len(steered) >= run:
                    results[-1]["resteer"] = dict(zip(("nodes", "ms", "left"), steered[-1], strict=True))
                if traffic6:
                    results[-1]["failover6_s"] = seen6 - cut
                    results[-1]["lost6_requests"] = traffic6.lost_between(cut - 1.0, seen6)
                log(f"run {run}: standby after {seen - cut:.2f} s ({lost} requests unanswered)"
                    + (f"; IPv6 after {seen6 - cut:.2f} s" if traffic6 else ""))
                restored = time.monotonic()
                env.lab.power_on(active.gateway.name, empty=True)
                for host in ALSO_DEAD:
                    env.lab.power_on(host, empty=False)
                back = wait_for(lambda r=restored: traffic.first_after(r, active.address), timeout=60, interval=0.05,
                                what="failback to the active address")
                results[-1]["failback_s"] = back - restored
                if traffic6:
                    back6 = wait_for(lambda r=restored: traffic6.first_after(r, active.address6), timeout=60,
                                     interval=0.05, what="IPv6 failback to the active address")
                    results[-1]["failback6_s"] = back6 - restored
                wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "assigned", timeout=30,
                         what=f"{APP} assigned again")
                time.sleep(2)
                results[-1]["failback_lost"] = traffic.lost_between(restored, time.monotonic() - 1.2)
                if traffic6:
                    results[-1]["failback6_lost"] = traffic6.lost_between(restored, time.monotonic() - 1.2)
                log(f"run {run}: active again {back - restored:.2f} s after power-on, "
                    f"{results[-1]['failback_lost']} requests lost around failback"
                    + (f"; IPv6 {back6 - restored:.2f} s, {results[-1]['failback6_lost']} lost" if traffic6 else ""))
        finally:
            traffic.stop()
            if traffic6:
                traffic6.stop()
            if env.lab:
                env.lab.power_on(active.gateway.name, empty=False)
                for host in ALSO_DEAD:
                    env.lab.power_on(host, empty=False)
        vendor = env.vendor
    failover = summarize([r["failover_s"] * 1000 for r in results])
    failback = summarize([r["failback_s"] * 1000 for r in results])
    rows = [
        (r["run"], f"{r['failover_s'] * 1000:.0f}", f"{r.get('unhealthy_after_s', float('nan')) * 1000:.0f}",
         r["lost_requests"], f"{r['failback_s'] * 1000:.0f}", r["failback_lost"],
         f"{r['resteer']['nodes']} in {r['resteer']['ms']} ms" if "resteer" in r else "")
        for r in results
    ]
    rows.append(("p50", f"{failover['p50']:.0f}", "", "", f"{failback['p50']:.0f}", "", ""))
    rows.append(("max", f"{failover['max']:.0f}", "", "", f"{failback['max']:.0f}",
                 max(r["failback_lost"] for r in results), ""))
    extra = f"; {', '.join(ALSO_DEAD)} dying at the same moment" if ALSO_DEAD else ""
    extra += f"; {LAB.gateways} gateways, {LAB.nodes} nodes" if FLEET else ""
    extra += f"; {SPREAD_APPS} more apps of the gateway on every node" if SPREAD_APPS else ""
    table = print_table(
        f"Power loss of {APP}'s active gateway ({vendor}; two probers, echo every 100 ms, dead after 500 ms; "
        f"a request every 100 ms{extra})",
        ["run", "power off -> standby answers (ms)", "power off -> unhealthy event (ms)", "unanswered requests",
         "power on (empty) -> active answers (ms)", "requests lost at failback", "prober re-steer (nodes)"], rows,
    )
    targets = [
        target("failover p50", failover["p50"], 1000, "ms"),
        target("failover max", failover["max"], 1500, "ms"),
        target("failback lost requests (max of runs)", max(r["failback_lost"] for r in results), 1, "requests"),
    ]
    failover6 = failback6 = None
    if all("failover6_s" in r for r in results):
        failover6 = summarize([r["failover6_s"] * 1000 for r in results])
        failback6 = summarize([r["failback6_s"] * 1000 for r in results])
        rows6 = [(r["run"], f"{r['failover6_s'] * 1000:.0f}", r["lost6_requests"], f"{r['failback6_s'] * 1000:.0f}",
                  r["failback6_lost"]) for r in results]
        rows6.append(("p50", f"{failover6['p50']:.0f}", "", f"{failback6['p50']:.0f}", ""))
        rows6.append(("max", f"{failover6['max']:.0f}", "", f"{failback6['max']:.0f}",
                      max(r["failback6_lost"] for r in results)))
        table += "\n" + print_table(
            f"The same power losses seen by IPv6 traffic ({APP} to the echo server's IPv6 address, a request every "
            "100 ms, at the same time as the IPv4 loop)",
            ["run", "power off -> IPv6 standby answers (ms)", "unanswered IPv6 requests",
             "power on (empty) -> IPv6 active answers (ms)", "IPv6 requests lost at failback"], rows6,
        )
        targets += [
            target("IPv6 failover p50", failover6["p50"], 1000, "ms"),
            target("IPv6 failover max", failover6["max"], 1500, "ms"),
            target("IPv6 failback lost requests (max of runs)", max(r["failback6_lost"] for r in results), 1,
                   "requests"),
        ]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.0f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    write_result(name, {"database": vendor, "table": table, "runs": results, "failover_ms": failover,
                        "failback_ms": failback, "failover6_ms": failover6, "failback6_ms": failback6,
                        "also_dead": ALSO_DEAD, "targets": targets,
                        "lab": {"gateways": LAB.gateways, "nodes": LAB.nodes}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

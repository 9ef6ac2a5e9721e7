"""Dataplane scale: connection latency from an app namespace to the echo server through its gateway,
with 10 and with 10,000 apps mapped on that gateway (nft maps: one lookup per new connection), and with
an iptables-style chain of 10,000 ``ip saddr X snat to Y`` rules as the foil. Then the restore of a
flushed gateway holding 10,000 apps (its pool routes, ARP guard and mappings) by one reconcile, and, for
comparison, how long the kernel takes to add the 10,000 /32 addresses the old layout needed.

Targets (docs/ARCHITECTURE.md, "Targets"): latency at 10,000 apps within 10% of 10 apps; restore <= 1 s.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BenchEnv, bulk_apps, log, pod_cidrs_add, print_table, subnets, summarize, target, write_result

NAME = "dataplane_scale"
APP = "shop-api"
BIG = int(os.environ.get("BENCH_SCALE_APPS", "10000"))
SMALL = 10
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "300"))
ROUNDS = 3  # configurations interleaved, so drift in machine load hits all of them alike
RESTORES = 3
FOIL_TABLE = "bn_foil"
FILLER_SOURCES = "198.19.0.0/18"  # one /32 per synthetic app
FILLER_POOL = "198.19.64.0/18"  # their egress addresses

# Runs inside the app's namespace: N fresh connections (each one is a new conntrack entry, so it walks
# the NAT hook), one request each; prints the latencies in ms as JSON.
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
    if i >= 10:  # warm-up: ARP, caches
        out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"""


def reconcile_until_assigned(app_id: int, rounds: int = 8) -> None:
    from egressportal.core.models import App, Gateway, Node
    from workers.reconcile import host_reconcile

    for _ in range(rounds):
        for gw in Gateway.objects.all():
            host_reconcile(kind="gateway", pk=gw.pk)
        for node in Node.objects.all():
            host_reconcile(kind="node", pk=node.pk)
        if App.objects.get(pk=app_id).egress_status == "assigned":
            return
    raise RuntimeError("the app did not become assigned")


def add_fillers(gateway, count: int, offset: int) -> None:
    """``count`` dedicated apps, one /32 source and one address on ``gateway`` each (bulk: setup)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from egressportal.core.models import EgressIP, IPPool, Node

    owner = get_user_model().objects.get(username="bob")
    sources = subnets(FILLER_SOURCES, 32, offset + count)[offset:]
    # They run on node2, in a pod CIDR added for them: the gateway SNATs the placements of its apps.
    node = pod_cidrs_add(Node.objects.get(name="node2"), FILLER_SOURCES)
    apps = bulk_apps(owner=owner, region=gateway.region, prefix=f"fill{offset}-", cidrs=sources, nodes=[node],
                     egress_type="dedicated", egress_status="assigned")
    pool = IPPool.objects.get(cidr=FILLER_POOL)
    first = int(ipaddress.IPv4Network(FILLER_POOL).network_address) + 1 + offset
    now = timezone.now()
    EgressIP.objects.bulk_create([
        EgressIP(pool=pool, address=str(ipaddress.IPv4Address(first + i)), address_int=first + i, status="assigned",
                 app=app, gateway=gateway, role="active", programmed=True, assigned_at=now, last_app=app,
                 last_owner=owner)
        for i, app in enumerate(apps)
    ], batch_size=1000, update_conflicts=True, unique_fields=["address"],  # the pool's free rows become these
        update_fields=["status", "app", "gateway", "role", "programmed", "assigned_at", "last_app", "last_owner"])


def foil_script(count: int, address: str, iface: str) -> str:
    rules = [f'    oifname "{iface}" ip saddr {src} snat to {address}'
             for src in subnets("198.19.128.0/17", 32, count)]
    return "\n".join([
        f"table ip {FOIL_TABLE} {{}}", f"delete table ip {FOIL_TABLE}", f"table ip {FOIL_TABLE} {{",
        "  chain postrouting {", "    type nat hook postrouting priority srcnat - 20; policy accept;",
        *rules, "  }", "}", "",
    ])


def probe(lab, netns: str, n: int) -> list[float]:
    from workers.lab import ECHO_ADDRESS

    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PROBE, str(ECHO_ADDRESS), "80", str(n)],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def main() -> int:
    from egressportal import dataplane as dp

    with BenchEnv(NAME, env={"EGRESS_RECONCILE_DISPATCH": "none"}) as env:
        from egressportal.core import services
        from egressportal.core.desired import gateway_desired
        from egressportal.core.models import App, EgressIP, Gateway, Region
        from workers.reconcile import host_read_actual, host_reconcile, host_session

        lab = env.lab
        assert lab is not None
        region = Region.objects.get(slug="lab")
        services.pool_create(region=region, name="bench-scale", cidr=FILLER_POOL)
        app = App.objects.get(name=APP)
        services.egress_enable(app=app)
        reconcile_until_assigned(app.pk)
        active = EgressIP.objects.select_related("gateway").get(app=app, role="active")
        gateway = Gateway.objects.get(pk=active.gateway_id)
        assert lab.seen_ip(APP) == active.address
        netns = lab.apps[APP].netns
        session = host_session(gateway)

        add_fillers(gateway, SMALL - 1, 0)
        host_reconcile(kind="gateway", pk=gateway.pk)
        small = gateway_desired(gateway).state
        log(f"{gateway.name}: {len(small.snat)} mappings; adding {BIG - SMALL} more apps")
        add_fillers(gateway, BIG - SMALL, SMALL - 1)
        started = time.perf_counter()
        host_reconcile(kind="gateway", pk=gateway.pk)
        initial_apply = time.perf_counter() - started
        big = gateway_desired(gateway).state
        v4 = sum(1 for source in big.snat if source.version == 4)  # shop-api also has an IPv6 mapping
        assert v4 == BIG, v4
        assert lab.seen_ip(APP) == active.address

        log(f"restore of a flushed gateway with {BIG} apps, {RESTORES} times")
        restores = []
        for _ in range(RESTORES):
            lab.flush_product_state(gateway.name)
            started = time.perf_counter()
            result = host_reconcile(kind="gateway", pk=gateway.pk)
            restores.append(time.perf_counter() - started)
            log(f"restore: {restores[-1] * 1000:.0f} ms ({result.summary})")
            assert result is not None and result.changed
            assert lab.seen_ip(APP) == active.address
        # Where the time goes: the same steps, one at a time, on the restored gateway.
        parts = {}
        lab.flush_product_state(gateway.name)
        t = time.perf_counter()
        plan = gateway_desired(gateway)
        parts["desired state from the database"] = time.perf_counter() - t
        t = time.perf_counter()
        actual = host_read_actual(session, gateway)
        parts["read the flushed host (4 commands)"] = time.perf_counter() - t
        t = time.perf_counter()
        change = dp.plan_gateway(actual, plan.state)
        parts["plan + render"] = time.perf_counter() - t
        for argv, stdin in change.steps():
            t = time.perf_counter()
            session.run(argv, stdin=stdin)
            what = f"{stdin.count(chr(10))} lines" if stdin is not None else f"{len(argv) - 5} addresses"
            parts[f"apply: {' '.join(argv[:2])} ({what})"] = time.perf_counter() - t
        t = time.perf_counter()
        after = host_read_actual(session, gateway)
        parts["verify: read back (4 commands)"] = time.perf_counter() - t
        t = time.perf_counter()
        assert after == plan.state
        parts["verify: compare"] = time.perf_counter() - t
        # A few dozen pool routes (IPv4 and IPv6 pools), not an address per app.
        assert len(after.pools) < 200 and not after.legacy_addresses, len(after.pools)

        # The old layout's cost, for the record: the same addresses as /32s on the public interface.
        v4_addresses = sorted(a for a in big.addresses if a.version == 4)
        batch = "".join(f"addr add {a}/32 dev {gateway.public_interface}\n" for a in v4_addresses)
        t = time.perf_counter()
        session.run(["ip", "-batch", "-"], stdin=batch)
        old_layout_addrs = time.perf_counter() - t
        session.run(["ip", "-batch", "-"], stdin=batch.replace("addr add", "addr del"))

        configs = {
            f"{SMALL} apps (nft map)": dp.render_gateway_nft(small),
            f"{BIG} apps (nft map)": dp.render_gateway_nft(big),
            # The same with the old address plan's kernel state: per-connection cost of anyIP vs /32s.
            f"{BIG} apps, old layout (+{BIG} /32 addresses)": dp.render_gateway_nft(big),
            f"{SMALL} apps + {BIG} one-rule-per-app (foil)": dp.render_gateway_nft(small),
        }
        foil = foil_script(BIG, active.address, gateway.public_interface)
        latencies: dict[str, list[float]] = {name: [] for name in configs}
        try:
            for rnd in range(ROUNDS):
                for name, script in configs.items():
                    session.run(["nft", "-f", "-"], stdin=script)
                    if "foil" in name:
                        session.run(["nft", "-f", "-"], stdin=foil)
                    if "old layout" in name:
                        session.run(["ip", "-batch", "-"], stdin=batch)
                    try:
                        latencies[name] += probe(lab, netns, REQUESTS // ROUNDS)
                    finally:
                        session.run(["nft", "delete", "table", "ip", FOIL_TABLE], check=False)
                        if "old layout" in name:
                            session.run(["ip", "-batch", "-"], stdin=batch.replace("addr add", "addr del"))
                log(f"latency round {rnd + 1}/{ROUNDS} done")
        finally:
            session.run(["nft", "-f", "-"], stdin=dp.render_gateway_nft(big))
        vendor = env.vendor

    stats = {name: summarize(values) for name, values in latencies.items()}
    base = stats[f"{SMALL} apps (nft map)"]
    rows = [
        (name, s["n"], f"{s['p50']:.3f}", f"{s['p95']:.3f}", f"{(s['p50'] / base['p50'] - 1) * 100:+.1f}%",
         f"{(s['p95'] / base['p95'] - 1) * 100:+.1f}%")
        for name, s in stats.items()
    ]
    table = print_table(f"Connection latency through the gateway (connect + request + answer), ms; {ROUNDS} rounds",
                        ["gateway holds", "n", "p50", "p95", "p50 vs 10", "p95 vs 10"], rows)
    restore = summarize([r * 1000 for r in restores])
    rows2 = [
        (f"first apply of {BIG} apps (from {SMALL})", f"{initial_apply * 1000:.0f}"),
        (f"restore of a flushed gateway, p50 of {RESTORES}", f"{restore['p50']:.0f}"),
        ("restore, max", f"{restore['max']:.0f}"),
        *((f"  breakdown: {k}", f"{v * 1000:.0f}") for k, v in parts.items()),
        (f"  for comparison: the kernel adding {BIG} /32 addresses (old layout)", f"{old_layout_addrs * 1000:.0f}"),
    ]
    table2 = print_table(f"One reconcile of a gateway with {BIG} apps ({BIG} addresses as {len(big.pools)} pool routes, "
                         f"{BIG} mappings; {vendor}), ms",
                         ["step", "ms"], rows2)
    big_stats = stats[f"{BIG} apps (nft map)"]
    targets = [
        target("latency p50 at 10,000 vs 10 apps", (big_stats["p50"] / base["p50"] - 1) * 100, 10, "%"),
        target("restore of a flushed gateway (p50)", restore["p50"], 1000, "ms"),
    ]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.1f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    write_result(NAME, {"database": vendor, "table": table + "\n\n" + table2, "latency_ms": stats,
                        "initial_apply_ms": initial_apply * 1000, "restore_ms": restore,
                        "breakdown_ms": {k: v * 1000 for k, v in parts.items()},
                        "old_layout_addresses_ms": old_layout_addrs * 1000, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fleet: 4 gateways and 40 nodes in the lab, 10,000 apps placed across the nodes, 2,000 of them dedicated;
the same measurements on the default lab (2 gateways, 2 nodes, the demo apps) for comparison.

Each lab runs in its own process (one Django set-up, one database each), one after the other:
  base:  the default lab, 1 worker x 2 processes (as bench/toggle_latency.py);
  fleet: 4 gateways, BENCH_FLEET_NODES (40) nodes, 1 worker x 2 processes; 10,000 apps placed (250 per node,
         bulk rows: setup), then 2,000 of them enabled through the bulk endpoint POST /api/v1/apps/egress/ in
         two bursts of 1,000 (the broker queue's depth sampled every 20 ms during the first).
Measured in both, with the same code:
  - toggle to "assigned" through the API (bench/toggle_latency.py's measure_toggles: PUT, poll every 20 ms),
    at 0 and 50 ms per remote command (Lab.set_command_cost);
  - a full sweep: every enabled host reconciled and verified (last_reconciled_at after the sweep started),
    at 0 and 50 ms per remote command;
  - database queries of one steady-state reconcile of a gateway and of a node (in this process);
  - the health probes: a prober process's CPU over 10 s, and, with every host watched by the prober's own
    HostWatch in this process, the age of the oldest answer across the fleet sampled every 20 ms (how
    stale the freshest view of the slowest host gets: what a verdict of "dead after 500 ms" stands on);
  - memory (RSS) of the worker's processes.
A few lab apps carry real traffic throughout (the demo apps on node1/node2 and, in the fleet, one app on the
last node and one in the middle); the echo server must see their dedicated addresses at the end.

Targets (docs/ARCHITECTURE.md, "Targets"): fleet toggle p50 and p95 within 1.2x of the default lab's.
Run as root, under the benchmark lock:  flock /work/.bench.lock .venv/bin/python bench/fleet.py
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    RESULTS,
    BenchEnv,
    analyze,
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

NAME = "fleet"
PREFIX, INDEX = os.environ.get("BENCH_FLEET_PREFIX", "fl"), int(os.environ.get("BENCH_FLEET_INDEX", "24"))
GATEWAYS = 4
NODES = int(os.environ.get("BENCH_FLEET_NODES", "40"))
APPS = int(os.environ.get("BENCH_FLEET_APPS", "10000"))
DEDICATED = int(os.environ.get("BENCH_FLEET_DEDICATED", "2000"))
BURST = int(os.environ.get("BENCH_FLEET_BURST", "1000"))  # enabled through the API; the rest are bulk rows
BURST_CLIENTS = 4  # concurrent bulk requests, as several automation clients (or API processes) would send
TOGGLES = int(os.environ.get("BENCH_FLEET_TOGGLES", "12"))
# The production default sweep period, in both labs: at 44 hosts on this 2-core machine a full sweep takes
# longer than the other benchmarks' 10 s, and sweeps back to back would leave toggles waiting behind them.
SWEEP_SECONDS = os.environ.get("BENCH_FLEET_SWEEP_SECONDS", "30")
COSTS = (0, 50)
PROBE_SECONDS = 10.0
SYNTHETIC_PODS = ipaddress.IPv4Network("198.19.0.0/17")  # a /23 per node for the synthetic apps
SYNTHETIC_POOL = "198.19.128.0/17"  # their egress addresses (the lab's own pool has 126)
TRAFFIC_APPS = {"far": f"node{NODES}", "mid": f"node{max(3, NODES // 2)}"}  # fleet only, owner carol


# -- set-up ---------------------------------------------------------------------------------------------


def setup_fleet(env: BenchEnv) -> dict:
    """10,000 shared apps placed across every node (one /32 each), owned by one synthetic tenant."""
    from django.contrib.auth import get_user_model

    from egressportal.core import services
    from egressportal.core.models import Node, Region

    region = Region.objects.get(slug="lab")
    services.pool_create(region=region, name="fleet-synthetic", cidr=SYNTHETIC_POOL)
    blocks = list(SYNTHETIC_PODS.subnets(new_prefix=23))
    nodes = [pod_cidrs_add(n, str(blocks[int(n.name.removeprefix("node")) - 1]))
             for n in Node.objects.order_by("pk")]
    per_node = -(-APPS // len(nodes))
    cidrs: list[str] = []
    for i in range(APPS):
        node = nodes[i % len(nodes)]
        cidrs.append(f"{last_pod_cidr4(node).network_address + 1 + i // len(nodes)}/32")
    owner = get_user_model().objects.create_user(username="fleet")
    started = time.perf_counter()
    bulk_apps(owner=owner, region=region, prefix="f", cidrs=cidrs, nodes=nodes)
    log(f"{APPS} apps placed on {len(nodes)} nodes ({per_node} per node) in {time.perf_counter() - started:.1f} s")
    return {"apps": APPS, "nodes": len(nodes), "per_node": per_node}


def add_traffic_apps(env: BenchEnv) -> list:
    """Lab apps with real traffic far down the fleet, enabled and kept so (owner carol)."""
    from django.contrib.auth import get_user_model

    from egressportal.core import services
    from egressportal.core.models import Region
    from workers.lab_register import lab_place

    carol = get_user_model().objects.create_user(username="carol")
    region = Region.objects.get(slug="lab")
    apps = []
    for name, node in TRAFFIC_APPS.items():
        app = services.app_create(owner=carol, region=region, name=name)
        lab_place(env.lab, name=name, node=node)
        services.egress_enable(app=app)
        apps.append(app)
    return apps


def warm_up(apps: list) -> None:
    """Enable and disable each app once: its addresses come from the lab's own pool (the only one so far)
    and stay its owner's in quarantine, so every later toggle gets them back (traffic can use them)."""
    from egressportal.core import services
    from egressportal.core.models import App

    for app in apps:
        services.egress_enable(app=app)
    wait_for(lambda: all(App.objects.get(pk=a.pk).egress_status == "assigned" for a in apps), timeout=120,
             what="warm-up apps assigned")
    for app in apps:
        services.egress_disable(app=App.objects.get(pk=app.pk))
    wait_for(lambda: all(App.objects.get(pk=a.pk).egress_status == "disabled" for a in apps), timeout=120,
             what="warm-up apps disabled")


# -- the bursts and the broker queue ----------------------------------------------------------------------


class QueueSampler:
    """LLEN of the worker's queue every ``every`` seconds (messages waiting in Redis, not yet taken)."""

    def __init__(self, redis_url: str, every: float = 0.02) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), int(self.client.llen("celery"))))
            self._stop.wait(self.every)

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def dedicated_rows(app_ids: list[int]) -> None:
    """Dedicated apps as bulk rows (setup, not measured): two addresses each on two gateways in turn, as an
    allocation would leave them; the next sweep puts them on the hosts."""
    from django.utils import timezone

    from egressportal.core.models import App, EgressIP, Gateway, IPPool

    pool = IPPool.objects.get(cidr=SYNTHETIC_POOL)
    gateways = list(Gateway.objects.order_by("slot"))
    first = int(ipaddress.IPv4Network(SYNTHETIC_POOL).network_address) + 1 + EgressIP.objects.filter(pool=pool).count()
    now = timezone.now()
    apps = list(App.objects.filter(pk__in=app_ids).select_related("owner"))
    rows = []
    for i, app in enumerate(apps):
        for k, role in enumerate(("active", "standby")):
            n = first + 2 * i + k
            rows.append(EgressIP(pool=pool, address=str(ipaddress.IPv4Address(n)), address_int=n, status="assigned",
                                 app=app, gateway=gateways[(i + k) % len(gateways)], role=role, programmed=True,
                                 assigned_at=now, last_app=app, last_owner=app.owner))
    EgressIP.objects.bulk_create(rows, batch_size=1000)
    App.objects.filter(pk__in=app_ids).update(egress_type="dedicated", egress_status="assigned")


def burst(env: BenchEnv, token: str, app_ids: list[int]) -> dict:
    """Enable ``app_ids`` through the bulk endpoint (BURST_CLIENTS requests at once); seconds until every one
    is assigned, and the broker queue's depth meanwhile."""
    from django.db import connection
    from django.test import Client

    from egressportal.core.models import App

    chunks = [app_ids[i::BURST_CLIENTS] for i in range(BURST_CLIENTS)]
    answers: list[float] = []
    errors: list[str] = []

    def send(ids: list[int]) -> None:
        try:
            body = json.dumps({"items": [{"app": pk, "type": "dedicated"} for pk in ids]})
            response = Client().post("/api/v1/apps/egress/", data=body, content_type="application/json",
                                     HTTP_AUTHORIZATION=f"Token {token}")
            answers.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.content[:300]!r}")
                return
            statuses = {r["status"] for r in json.loads(response.content)["results"]}
            if statuses - {200, 202}:
                errors.append(f"refused: {sorted(statuses)}")
        finally:
            connection.close()

    with QueueSampler(env.redis_url) as queue:
        started = time.perf_counter()
        threads = [threading.Thread(target=send, args=(c,)) for c in chunks if c]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"bulk enable: {errors[0]}")
        answered = max(answers)
        wait_for(lambda: App.objects.filter(pk__in=app_ids, egress_status="assigned").count() == len(app_ids),
                 timeout=300, interval=0.05, what=f"{len(app_ids)} apps assigned")
        assigned = time.perf_counter() - started
        time.sleep(0.2)
    depths = [d for _, d in queue.samples]
    return {"apps": len(app_ids), "request_s": answered, "assigned_s": assigned,
            "queue_max": max(depths), "queue_p50": summarize(depths)["p50"], "queue_p95": summarize(depths)["p95"],
            "queue_samples": len(depths)}


def bursts(env: BenchEnv) -> list[dict]:
    """DEDICATED apps in all: DEDICATED - BURST as rows and a sweep, then BURST through the API."""
    from django.contrib.auth import get_user_model

    from egressportal.core.models import App
    from egressportal.tokens.models import ApiToken

    owner = get_user_model().objects.get(username="fleet")
    token = ApiToken.objects.create(user=owner, expiry=dt.timedelta(days=1), name="bench-fleet")[1]
    ids = list(App.objects.filter(owner=owner).order_by("pk").values_list("pk", flat=True))
    # Apps were placed on the nodes in turn: any run of them is spread over the whole fleet.
    rows, api = ids[: DEDICATED - BURST], ids[DEDICATED - BURST: DEDICATED]
    if rows:
        dedicated_rows(rows)
        log(f"{len(rows)} dedicated apps as rows; a sweep puts them on the hosts")
        sweep_once()
    result = burst(env, token, api)
    log(f"burst: {result['apps']} apps assigned in {result['assigned_s']:.1f} s (requests answered in "
        f"{result['request_s']:.1f} s), queue depth max {result['queue_max']}")
    return [result]


# -- toggles, sweeps, queries, probes, memory ----------------------------------------------------------------


def toggles(env: BenchEnv) -> dict:
    import toggle_latency

    toggle_latency.CYCLES = TOGGLES
    out = {}
    for cost in COSTS:
        env.lab.set_command_cost(cost)
        time.sleep(1)
        log(f"{TOGGLES} enable/disable cycles through the API, {cost} ms per remote command")
        t = toggle_latency.measure_toggles(env)
        out[cost] = {"enable_ms": summarize([s * 1000 for s in t["enable_s"]]),
                     "disable_ms": summarize([s * 1000 for s in t["disable_s"]])}
    env.lab.set_command_cost(0)
    return out


def sweep_once() -> dict:
    from django.db.models import Q
    from django.utils import timezone

    from egressportal.core.models import Gateway, Node
    from workers.sweep import sweep_all_hosts

    since = timezone.now()
    started = time.perf_counter()
    sweep_all_hosts()

    def pending() -> int:
        stale = Q(last_reconciled_at__isnull=True) | Q(last_reconciled_at__lt=since)
        return Gateway.objects.filter(stale, enabled=True).count() + Node.objects.filter(stale, enabled=True).count()

    wait_for(lambda: pending() == 0, timeout=300, interval=0.02, what="every host verified")
    return {"seconds": time.perf_counter() - started,
            "hosts": Gateway.objects.filter(enabled=True).count() + Node.objects.filter(enabled=True).count()}


def sweeps(env: BenchEnv) -> dict:
    out = {}
    for cost in COSTS:
        env.lab.set_command_cost(cost)
        time.sleep(1)
        runs = [sweep_once() for _ in range(3)]
        out[cost] = {"hosts": runs[0]["hosts"], "seconds": summarize([r["seconds"] for r in runs])}
        log(f"sweep at {cost} ms/cmd: {runs[0]['hosts']} hosts verified in "
            + ", ".join(f"{r['seconds']:.2f}" for r in runs) + " s")
    env.lab.set_command_cost(0)
    return out


def reconcile_queries() -> dict:
    """Queries of one steady-state reconcile of shop-api's active gateway and of node1 (where it runs), with
    shop-api enabled; run here (the workers may hold the lease for a moment: then again)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from egressportal.core.models import EgressIP, Node
    from workers.reconcile import HostBusy, host_reconcile

    out = {}
    gateway = EgressIP.objects.get(app__name="shop-api", role="active").gateway_id
    for kind, pk in (("gateway", gateway), ("node", Node.objects.get(name="node1").pk)):
        counts = []
        while len(counts) < 3:
            try:
                with CaptureQueriesContext(connection) as ctx:
                    host_reconcile(kind=kind, pk=pk)
                counts.append(len(ctx.captured_queries))
            except HostBusy:
                time.sleep(0.05)
        out[kind] = max(counts)
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probes(env: BenchEnv) -> dict:
    from django.conf import settings

    from egressportal.core.models import Gateway, Node
    from workers.prober import HostWatch

    prober = env.start_prober()
    time.sleep(3)  # every session open
    pid = prober.proc.pid
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(PROBE_SECONDS)
    cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    hosts = list(Gateway.objects.filter(enabled=True)) + list(Node.objects.filter(enabled=True))
    watches = [HostWatch(h).start() for h in hosts]
    try:
        wait_for(lambda: all(w.last_answer is not None for w in watches), timeout=30, what="every host answering")
        time.sleep(1)
        oldest, every = [], []
        end = time.monotonic() + PROBE_SECONDS
        while time.monotonic() < end:
            now = time.monotonic()
            ages = [w.liveness(now).silent_for for w in watches]
            oldest.append(max(ages) * 1000)
            every += [a * 1000 for a in ages]
            time.sleep(0.02)
    finally:
        for w in watches:
            w.stop()
    log(f"prober CPU {cpu * 100:.1f}% of a core for {len(hosts)} hosts; oldest answer p50 "
        f"{summarize(oldest)['p50']:.0f} ms, max {max(oldest):.0f} ms")
    return {"hosts": len(hosts), "prober_cpu_core_fraction": cpu, "interval_ms": settings.EGRESS_PROBE_INTERVAL * 1000,
            "dead_after_ms": settings.EGRESS_PROBE_DEAD_AFTER * 1000,
            "oldest_answer_ms": summarize(oldest), "answer_age_ms": summarize(every)}


def worker_rss(env: BenchEnv) -> dict:
    """RSS of the worker's main process and of its prefork children (beat runs in the main one)."""
    main = env.workers[0].proc.pid
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == main:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue

    def rss(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    return {"main_mib": rss(main), "children_mib": sorted(rss(p) for p in children)}


def traffic_check(env: BenchEnv, names: list[str]) -> dict:
    """The echo server sees each enabled traffic app's active address."""
    from egressportal.core.models import App, EgressIP

    out = {}
    for name in names:
        app = App.objects.get(name=name)
        active = EgressIP.objects.get(app=app, role="active").address
        seen = env.lab.seen_ip(name)
        out[name] = {"node": env.lab.apps[name].node, "active": active, "seen": seen, "ok": seen == active}
    return out


# -- one lab ------------------------------------------------------------------------------------------------


def run_phase(kind: str) -> dict:
    fleet = kind == "fleet"
    config = LabConfig(prefix=PREFIX, index=INDEX, gateways=GATEWAYS if fleet else 2, nodes=NODES if fleet else 2)
    out: dict = {"kind": kind, "gateways": config.gateways, "nodes": config.nodes}
    phase_started = time.perf_counter()
    with BenchEnv(f"{NAME}_{kind}", lab_config=config, env={"EGRESS_SWEEP_SECONDS": SWEEP_SECONDS}) as env:
        from egressportal.core import services
        from egressportal.core.models import App

        assert env.lab is not None
        env.start_worker(concurrency=2)
        demo = list(App.objects.filter(name__in=["shop-api", "billing", "crawler"]).order_by("name"))
        traffic = ["shop-api"]
        if fleet:
            out["setup"] = setup_fleet(env)
        warm_up(demo)
        if fleet:
            add_traffic_apps(env)
            wait_for(lambda: App.objects.filter(name__in=list(TRAFFIC_APPS), egress_status="assigned").count()
                     == len(TRAFFIC_APPS), timeout=120, what="traffic apps assigned")
            traffic += list(TRAFFIC_APPS)
            out["bursts"] = bursts(env)
            out["dedicated"] = App.objects.filter(egress_type="dedicated").count()
        analyze()  # the bulk setup above, as autovacuum would have seen it by now (common.analyze)
        time.sleep(2)
        out["toggles"] = toggles(env)
        out["sweeps"] = sweeps(env)
        services.egress_enable(app=App.objects.get(name="shop-api"))
        wait_for(lambda: App.objects.get(name="shop-api").egress_status == "assigned", timeout=60, what="shop-api")
        out["queries"] = reconcile_queries()
        out["probes"] = probes(env)
        out["worker_rss"] = worker_rss(env)
        out["traffic"] = traffic_check(env, traffic)
        out["apps"] = App.objects.count()
        out["vendor"] = env.vendor
    out["phase_s"] = time.perf_counter() - phase_started
    return out


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--phase":
        result = run_phase(sys.argv[2])
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f".{NAME}_{sys.argv[2]}.json").write_text(json.dumps(result, default=str))
        return 0
    started = time.perf_counter()
    phases = {}
    for kind in ("base", "fleet"):
        log(f"{NAME}: {kind} lab")
        subprocess.run([sys.executable, __file__, "--phase", kind], check=True)
        path = RESULTS / f".{NAME}_{kind}.json"
        phases[kind] = json.loads(path.read_text())
        path.unlink()
    report(phases, time.perf_counter() - started)
    return 0


def report(phases: dict, seconds: float) -> None:
    base, fleet = phases["base"], phases["fleet"]
    label = {"base": f"{base['gateways']} gw, {base['nodes']} nodes, {base['apps']} apps",
             "fleet": f"{fleet['gateways']} gw, {fleet['nodes']} nodes, {fleet['apps']} apps "
                      f"({fleet.get('dedicated', 0)} dedicated)"}
    rows = []
    for cost in COSTS:
        for kind in ("base", "fleet"):
            t = phases[kind]["toggles"][str(cost)]
            rows.append((f"{cost} ms/cmd", label[kind], t["enable_ms"]["n"], t["enable_ms"]["p50"],
                         t["enable_ms"]["p95"], t["disable_ms"]["p50"], t["disable_ms"]["p95"]))
    toggle_table = print_table(f"Toggle through the API to assigned / disabled ({fleet['vendor']}, 1 worker x 2 "
                               "processes, poll every 20 ms), ms",
                               ["cost", "lab", "n", "enable p50", "enable p95", "disable p50", "disable p95"], rows)
    rows = []
    for kind in ("base", "fleet"):
        p = phases[kind]
        for cost in COSTS:
            s = p["sweeps"][str(cost)]
            rows.append((label[kind], f"full sweep at {cost} ms/cmd (s, p50 of 3)", f"{s['seconds']['p50']:.2f}",
                         f"{s['hosts']} hosts"))
        rows += [
            (label[kind], "queries per steady reconcile: gateway / node", f"{p['queries']['gateway']} / "
             f"{p['queries']['node']}", ""),
            (label[kind], "probe: oldest answer across hosts p50 / p95 / max (ms)",
             f"{p['probes']['oldest_answer_ms']['p50']:.0f} / {p['probes']['oldest_answer_ms']['p95']:.0f} / "
             f"{p['probes']['oldest_answer_ms']['max']:.0f}", f"{p['probes']['hosts']} hosts"),
            (label[kind], "probe: one host's answer age p50 / p95 (ms)",
             f"{p['probes']['answer_age_ms']['p50']:.0f} / {p['probes']['answer_age_ms']['p95']:.0f}", ""),
            (label[kind], "prober process CPU (% of one core)", f"{p['probes']['prober_cpu_core_fraction'] * 100:.1f}",
             ""),
            (label[kind], "worker RSS: main / prefork children (MiB)",
             f"{p['worker_rss']['main_mib']:.0f} / {', '.join(f'{c:.0f}' for c in p['worker_rss']['children_mib'])}",
             ""),
            (label[kind], "real traffic: apps whose active address the echo server saw",
             f"{sum(t['ok'] for t in p['traffic'].values())}/{len(p['traffic'])}",
             ", ".join(f"{n} on {t['node']}" for n, t in p["traffic"].items())),
        ]
    for b in fleet.get("bursts", []):
        rows.append((label["fleet"], f"burst: {b['apps']} apps, {BURST_CLIENTS} bulk requests -> all assigned (s)",
                     f"{b['assigned_s']:.1f}", f"requests answered in {b['request_s']:.1f} s"))
        rows.append((label["fleet"], "burst: broker queue depth p50 / p95 / max (messages)",
                     f"{b['queue_p50']:.0f} / {b['queue_p95']:.0f} / {b['queue_max']}",
                     f"{b['queue_samples']} samples, every 20 ms"))
    other_table = print_table("Fleet figures", ["lab", "measure", "value", "note"], rows)
    ratios = {}
    targets = []
    for cost in COSTS:
        for stat in ("p50", "p95"):
            b = base["toggles"][str(cost)]["enable_ms"][stat]
            f = fleet["toggles"][str(cost)]["enable_ms"][stat]
            ratios[f"{cost}ms_{stat}"] = f / b
            targets.append(target(f"fleet toggle {stat} / default lab's at {cost} ms/cmd", f / b, 1.2, "x"))
    targets.append(target("queries per steady node reconcile, fleet - default lab",
                          fleet["queries"]["node"] - base["queries"]["node"], 0, "queries"))
    targets.append(target("queries per steady gateway reconcile, fleet - default lab",
                          fleet["queries"]["gateway"] - base["queries"]["gateway"], 0, "queries"))
    for t in targets:
        print(f"target {t['name']}: {t['value']:.2f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    print(f"whole benchmark: {seconds:.0f} s (base lab {base['phase_s']:.0f} s, fleet {fleet['phase_s']:.0f} s)")
    write_result(NAME, {"database": fleet["vendor"], "tables": [toggle_table, other_table], "phases": phases,
                        "ratios": ratios, "targets": targets, "seconds": seconds})


if __name__ == "__main__":
    sys.exit(main())

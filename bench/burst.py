"""Burst: 1,000 apps enabled at once. Time until every one is "assigned", how many host transactions
(SSH applies) that took, and the same work done the naive way as the foil: one SSH session and one nft
rule per app (measured on a sample, extrapolated linearly).

Targets (docs/ARCHITECTURE.md, "Targets"): all assigned in <= 10 s; >= 20x faster than one SSH session per app.
The enables go through the bulk API (BENCH_BURST_MODE=bulk, the default) or one service call per app
(BENCH_BURST_MODE=single); the broker's queue depth is sampled throughout.
"""

from __future__ import annotations

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    BenchEnv,
    bulk_apps,
    log,
    pod_cidrs_add,
    print_table,
    reconcile_total,
    subnets,
    summarize,
    target,
    wait_for,
    write_result,
)

NAME = "burst"
APPS = int(os.environ.get("BENCH_BURST_APPS", "1000"))
NAIVE_SAMPLE = int(os.environ.get("BENCH_NAIVE_SAMPLE", "100"))
ENABLE_THREADS = 4  # MODE single: clients issuing the enables, like several API processes
MODE = os.environ.get("BENCH_BURST_MODE", "bulk")
NAIVE_TABLE = "bn_naive"


def enable_all(app_ids: list[int]) -> tuple[float, float]:
    """Enable every app; returns (started, finished) perf_counter times. MODE bulk: POST /api/v1/apps/egress/
    (DRF through Django's test client, token auth) with up to 1,000 apps per request, as automation would;
    MODE single: services.egress_enable per app from ENABLE_THREADS threads (the old way, for comparison)."""
    if MODE == "bulk":
        return _enable_bulk(app_ids)
    from django.db import connection

    from egressportal.core import services
    from egressportal.core.models import App

    errors: list[BaseException] = []

    def run(ids: list[int]) -> None:
        try:
            for app in App.objects.filter(pk__in=ids):
                services.egress_enable(app=app)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    chunks = [app_ids[i::ENABLE_THREADS] for i in range(ENABLE_THREADS)]
    threads = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return started, time.perf_counter()


def _enable_bulk(app_ids: list[int]) -> tuple[float, float]:
    import datetime as dt
    import json

    from django.test import Client

    from egressportal.core.limits import MAX_BULK_EGRESS_ITEMS
    from egressportal.core.models import App
    from egressportal.tokens.models import ApiToken

    owner = App.objects.get(pk=app_ids[0]).owner
    _, token = ApiToken.objects.create(user=owner, expiry=dt.timedelta(days=1), name=f"bench-{time.time_ns()}")
    client = Client()
    started = time.perf_counter()
    for i in range(0, len(app_ids), MAX_BULK_EGRESS_ITEMS):
        items = [{"app": pk, "type": "dedicated"} for pk in app_ids[i:i + MAX_BULK_EGRESS_ITEMS]]
        response = client.post("/api/v1/apps/egress/", data=json.dumps({"items": items}),
                               content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")
        assert response.status_code == 200, response.content[:500]
        refused = [r for r in response.json()["results"] if r["status"] != 202]
        assert not refused, refused[:3]
    return started, time.perf_counter()


class QueueWatch(threading.Thread):
    """Samples the broker every 20 ms: messages waiting in the Celery queues and delivered but unacked."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.stopping = threading.Event()
        self.waiting: list[int] = []
        self.unacked: list[int] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            queues = [k for k in self.client.keys("*") if self.client.type(k) == b"list"]
            pipe = self.client.pipeline(transaction=False)
            for key in queues:
                pipe.llen(key)
            pipe.hlen("unacked")
            *lengths, unacked = pipe.execute()
            self.waiting.append(sum(lengths))
            self.unacked.append(unacked)
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def measure_naive(env: BenchEnv, sample: list[tuple[str, str]]) -> list[float]:
    """One fresh SSH connection and one ``nft add rule`` per app, in a scratch table (removed after)."""
    from django.conf import settings

    from egressportal.core.models import Gateway
    from workers.reconcile import host_target
    from workers.ssh import SSHSession

    gateway = Gateway.objects.get(name="gw1")
    target_ = host_target(gateway)

    def session() -> SSHSession:
        return SSHSession(target_, key_filename=settings.EGRESS_SSH_KEY_FILE, connect_timeout=5, command_timeout=30)

    with session() as s:
        # A nat chain after the product's (srcnat + 50) whose rules match no real traffic (198.19.0.0/16).
        s.run(["nft", "-f", "-"], stdin=(
            f"table ip {NAIVE_TABLE} {{}}\ndelete table ip {NAIVE_TABLE}\n"
            f"table ip {NAIVE_TABLE} {{\n  chain postrouting {{\n"
            "    type nat hook postrouting priority srcnat + 50; policy accept;\n  }\n}\n"
        ))
    per_app: list[float] = []
    try:
        for source, address in sample:
            started = time.perf_counter()
            with session() as s:
                s.run(["nft", "add", "rule", "ip", NAIVE_TABLE, "postrouting", "ip", "saddr", source,
                       "snat", "to", address])
            per_app.append(time.perf_counter() - started)
    finally:
        with session() as s:
            s.run(["nft", "delete", "table", "ip", NAIVE_TABLE], check=False)
    return per_app


def main() -> int:
    with BenchEnv(NAME) as env:
        from django.contrib.auth import get_user_model

        from egressportal.core import services
        from egressportal.core.models import App, EgressIP, EgressStatus, Node, Region

        region = Region.objects.get(slug="lab")
        owner = get_user_model().objects.get(username="alice")
        services.pool_create(region=region, name="bench-burst", cidr="198.19.128.0/20")
        # Half of the apps run on each node (the platform's placements), in pod CIDRs added for them.
        node1 = pod_cidrs_add(Node.objects.get(name="node1"), "198.19.0.0/18")
        node2 = pod_cidrs_add(Node.objects.get(name="node2"), "198.19.64.0/18")
        cidrs = subnets("198.19.0.0/18", 30, APPS // 2) + subnets("198.19.64.0/18", 30, APPS - APPS // 2)
        apps = bulk_apps(owner=owner, region=region, prefix="burst-", cidrs=cidrs, nodes=[node1, node2])
        ids = [a.pk for a in apps]
        env.start_worker(concurrency=2)
        time.sleep(2)  # first health round
        before = reconcile_total()
        log(f"enabling {APPS} apps ({MODE})")
        watch = QueueWatch(env.redis_url)
        watch.start()
        started, issued = enable_all(ids)
        pending = App.objects.filter(pk__in=ids).exclude(egress_status=EgressStatus.ASSIGNED)
        wait_for(lambda: not pending.exists(), timeout=300, interval=0.05, what=f"{APPS} apps assigned")
        done = time.perf_counter()
        watch.stop()
        transactions = reconcile_total() - before
        failed = App.objects.filter(pk__in=ids, egress_status=EgressStatus.FAILED).count()
        ip_count = EgressIP.objects.filter(app_id__in=ids).count()
        env.stop_workers()
        # The foil on a sample of the same apps, with the addresses they really got.
        sample_ids = ids[:NAIVE_SAMPLE]
        sample = [
            (cidr, EgressIP.objects.filter(app_id=app_id, role="active").values_list("address", flat=True).first())
            for app_id, cidr in zip(sample_ids, cidrs, strict=False)
        ]
        log(f"naive foil: {len(sample)} apps, one SSH session each")
        naive = measure_naive(env, sample)
        vendor = env.vendor
    total = done - started
    naive_total = sum(naive) / len(naive) * APPS
    per_app = summarize([s * 1000 for s in naive])
    ratio = naive_total / total
    how = "one bulk POST per 1,000 apps" if MODE == "bulk" else f"egress_enable per app, {ENABLE_THREADS} threads"
    rows = [
        (f"issue the enables ({how})", f"{issued - started:.2f} s"),
        ("first enable -> all assigned", f"{total:.2f} s"),
        ("last enable -> all assigned", f"{done - issued:.2f} s"),
        ("host transactions (changing reconciles)", transactions),
        ("apps per transaction", f"{APPS / max(transactions, 1):.1f}"),
        ("egress IPs allocated", ip_count),
        ("broker: messages waiting, max during the burst", max(watch.waiting, default=0)),
        ("broker: delivered, not acknowledged, max", max(watch.unacked, default=0)),
        ("naive: one SSH session + one rule, per app (p50)", f"{per_app['p50']:.1f} ms"),
        (f"naive: {APPS} apps (extrapolated from {len(naive)})", f"{naive_total:.1f} s"),
        ("speed-up over naive", f"{ratio:.1f}x"),
    ]
    table = print_table(f"Burst of {APPS} enables ({vendor}, 1 worker x 2 processes)", ["measure", "value"], rows)
    targets = [
        target("1,000 apps assigned", total, 10, "s"),
        target("speed-up over one SSH session per app", ratio, 20, "x", higher_is_better=True),
    ]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.1f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    write_result(NAME, {
        "database": vendor, "apps": APPS, "table": table, "issue_s": issued - started, "assigned_s": total,
        "after_last_enable_s": done - issued, "transactions": transactions, "failed": failed, "mode": MODE,
        "queue_waiting_max": max(watch.waiting, default=0), "queue_unacked_max": max(watch.unacked, default=0),
        "naive_per_app_ms": per_app, "naive_total_s": naive_total, "ratio": ratio, "targets": targets,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())

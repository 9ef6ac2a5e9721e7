"""API and portal latency with 10,000 apps: p50/p95 and queries per request of the list endpoint (first
and deep page), the detail endpoint and the portal dashboard (first page, deep page, search). Requests
go through Django's full stack in-process (middleware, auth, DRF, templates; no network or gunicorn).
No lab and no worker: reads only.

Target (docs/ARCHITECTURE.md, "Targets"): p95 <= 100 ms, a constant number of queries per page.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BenchEnv, bulk_apps, log, print_table, subnets, summarize, target, write_result

NAME = "api_latency"
APPS = int(os.environ.get("BENCH_API_APPS", "10000"))
SAMPLES = int(os.environ.get("BENCH_API_SAMPLES", "50"))
DEDICATED = 500  # with two addresses each, so the egress columns are not empty


def populate() -> tuple:
    import ipaddress

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from egressportal.core import services
    from egressportal.core.models import EgressIP, Gateway

    users = get_user_model().objects
    alice = users.create_user(username="alice", password="bench-only-pw")  # noqa: S106
    bob = users.create_user(username="bob", password="bench-only-pw")  # noqa: S106
    region = services.region_create(slug="bench", name="Bench")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    gateways = [
        services.gateway_create(region=region, name=f"gw{i}", mgmt_address=f"198.18.250.{i}", host_key=key,
                                transit_address=f"198.18.251.{i}", public_interface="eth0")
        for i in (1, 2)
    ]
    pool = services.pool_create(region=region, name="bench", cidr="198.19.128.0/20")
    assert APPS <= 16384, "one /32 source per app in 198.19.0.0/18"
    node = services.node_create(region=region, name="node1", mgmt_address="198.18.252.1", host_key=key,
                                transit_address="198.18.253.1", pod_cidrs=["198.19.0.0/17"])
    apps = bulk_apps(owner=alice, region=region, prefix="app-", cidrs=subnets("198.19.0.0/18", 32, APPS), nodes=[node])
    bulk_apps(owner=bob, region=region, prefix="bobs-", cidrs=subnets("198.19.64.0/24", 32, 10), nodes=[node])
    dedicated = apps[:DEDICATED]
    from egressportal.core.models import App

    App.objects.filter(pk__in=[a.pk for a in dedicated]).update(egress_type="dedicated", egress_status="assigned")
    first = int(ipaddress.IPv4Network(pool.cidr).network_address) + 1
    now = timezone.now()
    EgressIP.objects.bulk_create([
        EgressIP(pool=pool, address=str(ipaddress.IPv4Address(first + 2 * i + j)), address_int=first + 2 * i + j,
                 status="assigned", app=app, gateway=gw, role=role, programmed=True, assigned_at=now, last_app=app,
                 last_owner=alice)
        for i, app in enumerate(dedicated)
        for j, (gw, role) in enumerate(zip(gateways, ["active", "standby"], strict=True))
    ], batch_size=1000, update_conflicts=True, unique_fields=["address"],  # the pool's free rows become these
        update_fields=["status", "app", "gateway", "role", "programmed", "assigned_at", "last_app", "last_owner"])
    assert Gateway.objects.count() == 2
    return alice, apps[len(apps) // 2].pk


def measure(client, url: str, headers: dict) -> tuple[list[float], list[int]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], []
    client.get(url, **headers)  # warm-up: template and URL caches
    for _ in range(SAMPLES):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url, **headers)
            times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.content[:300]!r}")
        queries.append(len(ctx.captured_queries))
    return times, queries


def main() -> int:
    with BenchEnv(NAME, lab=False, env={"EGRESS_RECONCILE_DISPATCH": "none"}) as env:
        from django.core.management import call_command
        from django.test import Client

        from egressportal.tokens.models import ApiToken

        # As a deployment does: the pages link hashed static files from the manifest.
        call_command("collectstatic", interactive=False, verbosity=0)

        log(f"creating {APPS} apps")
        alice, middle = populate()
        from django.db import connection

        if connection.vendor == "postgresql":
            # Statistics as autovacuum keeps them a minute after a bulk load; without them PostgreSQL plans
            # the list for 20 apps of alice instead of 10,000 (a hash join built over all of them: ~60 ms).
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        # The setup's 30,000 ORM objects are garbage now; a server process would never have held them, and
        # leaving them to the collector would put its full passes (~100 ms here) into the measurements.
        gc.collect()
        token = ApiToken.objects.create(user=alice, expiry=dt.timedelta(days=1), name=f"bench-{time.time_ns()}")[1]
        api = Client()
        auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
        portal = Client()
        portal.force_login(alice)
        last_page = (APPS + 24) // 25
        cases = [
            ("API list, first page", api, "/api/v1/apps/?limit=50", auth),
            ("API list, deep page", api, f"/api/v1/apps/?limit=50&offset={APPS - 50}", auth),
            ("API detail", api, f"/api/v1/apps/{middle}/", auth),
            ("API egress", api, f"/api/v1/apps/{middle}/egress/", auth),
            ("portal dashboard, page 1", portal, "/", {}),
            ("portal dashboard, deep page", portal, f"/?page={last_page}", {}),
            ("portal dashboard, search", portal, "/?q=app-0999", {}),
            ("portal app page", portal, f"/apps/{middle}/", {}),
        ]
        results = {}
        for name, client, url, headers in cases:
            times, queries = measure(client, url, headers)
            results[name] = {"url": url, **summarize(times), "queries": sorted(set(queries))}
        vendor = env.vendor
    rows = [(name, r["n"], f"{r['p50']:.1f}", f"{r['p95']:.1f}", f"{r['max']:.1f}", ",".join(map(str, r["queries"])))
            for name, r in results.items()]
    table = print_table(f"API and portal with {APPS} apps ({vendor}; in-process, {SAMPLES} requests each), ms",
                        ["request", "n", "p50", "p95", "max", "queries"], rows)
    worst = max(r["p95"] for r in results.values())
    list_queries = {q for name, r in results.items() if "list" in name for q in r["queries"]}
    page_queries = {q for name, r in results.items() if "dashboard" in name for q in r["queries"]}
    targets = [
        target("worst p95", worst, 100, "ms"),
        target("distinct query counts across API list pages", len(list_queries), 1, "counts"),
        target("distinct query counts across dashboard pages", len(page_queries), 1, "counts"),
    ]
    for t in targets:
        print(f"target {t['name']}: {t['value']:.1f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    write_result(NAME, {"database": vendor, "apps": APPS, "table": table, "requests": results, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())

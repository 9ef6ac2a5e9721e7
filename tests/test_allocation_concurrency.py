"""Allocation under real concurrency on PostgreSQL: many threads, each with its
own database connection, race for a pool smaller than the demand.

The guards (services/network.py): each allocation row-locks the free row it reads
(FOR UPDATE SKIP LOCKED, ``ROW_LOCKS``) and claims it with a conditional UPDATE (only
while the row is still as it was read). Either alone keeps every address single-owner;
how these tests were seen to fail: with ``ROW_LOCKS = False`` and the claim made
unconditional (``EgressIP.objects.filter(pk__in=[ip.pk for ip in ips])`` in ``_claim``, which
claims all of an allocation's addresses in one UPDATE), the first test goes red: many threads read the same lowest free row
and all "win" it, so more enables succeed than the pool has addresses (seen: 200 enables
answered ok for 26 assigned rows)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from egressportal.core import services
from egressportal.core.errors import PoolExhausted
from egressportal.core.models import App, EgressIP, EgressIPStatus
from egressportal.core.services import network as network_services

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

APPS = 200
POOL = "203.0.113.0/25"  # 126 usable addresses: demand exceeds supply
THREADS = 40  # PostgreSQL's default max_connections is 100


def _race(app_ids: list[int]) -> Counter:
    barrier_results: Counter = Counter()

    def enable(app_id: int) -> str:
        try:
            app = App.objects.get(pk=app_id)
            services.egress_enable(app=app)
            return "ok"
        except PoolExhausted:
            return "exhausted"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for outcome in pool.map(enable, app_ids):
            barrier_results[outcome] += 1
    return barrier_results


def _setup(region, make_gateway, make_app, make_user, settings):
    settings.EGRESS_IPS_PER_APP = 1
    settings.EGRESS_QUOTA_APPS = settings.EGRESS_QUOTA_ADDRESSES = APPS
    make_gateway()
    pool = services.pool_create(region=region, name="race", cidr=POOL)
    # As many tenants as threads: one tenant's enables take turns on its row (the quota lock), so with a
    # single tenant the race would never reach the allocator.
    owners = [make_user(f"racer-{i}") for i in range(THREADS)]
    apps = [make_app(owners[i % THREADS], f"race-{i}", cidrs=[]) for i in range(APPS)]
    return pool, [a.pk for a in apps]


def _assert_consistent(pool, outcomes: Counter) -> None:
    addresses = list(EgressIP.objects.filter(pool=pool).values_list("address", "app_id"))
    assigned = [a for a in addresses if a[1] is not None]
    # No address held twice, no app with two addresses.
    assert len({a for a, _ in assigned}) == len(assigned)
    assert len({app for _, app in assigned}) == len(assigned)
    # The pool adds up: every usable address went to exactly one winner.
    assert outcomes["ok"] == len(assigned) == pool.size == 126
    assert outcomes["exhausted"] == APPS - pool.size
    assert EgressIP.objects.filter(status=EgressIPStatus.ASSIGNED).count() == 126
    # Losers hold nothing and stayed shared.
    losers = App.objects.filter(egress_ips__isnull=True)
    assert losers.count() == APPS - 126
    assert set(losers.values_list("egress_type", flat=True)) == {"shared"}


def test_concurrent_allocations_never_hand_out_an_address_twice(region, make_gateway, make_app, make_user, settings):
    assert connection.vendor == "postgresql"
    pool, app_ids = _setup(region, make_gateway, make_app, make_user, settings)
    outcomes = _race(app_ids)
    _assert_consistent(pool, outcomes)


def test_winners_never_take_the_pool_lock(region, make_gateway, make_app, make_user, settings, monkeypatch):
    """The pool's row is locked only on the slow path: here by the enables that find the pool full."""
    pool, app_ids = _setup(region, make_gateway, make_app, make_user, settings)
    locked: list[int] = []
    real_lock = network_services._lock_pool
    monkeypatch.setattr(network_services, "_lock_pool", lambda p: (locked.append(p.pk), real_lock(p)))
    outcomes = _race(app_ids)
    _assert_consistent(pool, outcomes)
    assert len(locked) == outcomes["exhausted"]


def test_rows_made_in_chunks_under_concurrency(region, make_gateway, make_app, make_user, settings, monkeypatch):
    """A pool whose rows are made a few at a time (a big pool) still hands out every address exactly once
    while 40 threads race past the ends of the chunks."""
    monkeypatch.setattr(network_services, "POOL_ROWS_CHUNK", 8)
    pool, app_ids = _setup(region, make_gateway, make_app, make_user, settings)
    assert EgressIP.objects.filter(pool=pool).count() == 8
    outcomes = _race(app_ids)
    _assert_consistent(pool, outcomes)
    assert EgressIP.objects.filter(pool=pool).count() == 126


def test_the_conditional_claim_is_the_last_guard_without_row_locks(
    region, make_gateway, make_app, make_user, settings, monkeypatch
):
    """Remove the row lock (no FOR UPDATE SKIP LOCKED): the conditional claim and the retry loop must
    still keep every address single-owner (only slower: threads collide on the same free row).
    Making the claim unconditional as well is what lets duplicates through (module docstring)."""
    pool, app_ids = _setup(region, make_gateway, make_app, make_user, settings)
    monkeypatch.setattr(network_services, "ROW_LOCKS", False)
    monkeypatch.setattr(network_services, "ALLOCATION_ATTEMPTS", 1000)
    outcomes = _race(app_ids)
    failures = {k: v for k, v in outcomes.items() if k not in ("ok", "exhausted")}
    assert not failures
    _assert_consistent(pool, outcomes)

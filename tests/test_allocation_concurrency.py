"""Allocation under real concurrency on PostgreSQL: many threads, each with its
own database connection, race for a pool smaller than the demand."""

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


def _setup(region, make_gateway, make_app, alice, settings):
    settings.EGRESS_IPS_PER_APP = 1
    # One tenant races for the whole pool here: quotas are not what this test is about.
    settings.EGRESS_QUOTA_APPS = settings.EGRESS_QUOTA_ADDRESSES = APPS
    make_gateway()
    pool = services.pool_create(region=region, name="race", cidr=POOL)
    apps = [make_app(alice, f"race-{i}", cidrs=[]) for i in range(APPS)]
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


def test_concurrent_allocations_never_hand_out_an_address_twice(region, make_gateway, make_app, alice, settings):
    assert connection.vendor == "postgresql"
    pool, app_ids = _setup(region, make_gateway, make_app, alice, settings)
    outcomes = _race(app_ids)
    _assert_consistent(pool, outcomes)


def test_unique_constraint_is_the_last_guard_without_the_pool_lock(
    region, make_gateway, make_app, alice, settings, monkeypatch
):
    """Remove the per-pool lock: the unique constraint and the retry loop must
    still keep every address single-owner (only slower). Removing the
    constraint as well is what lets duplicates through (see the closing note)."""
    pool, app_ids = _setup(region, make_gateway, make_app, alice, settings)
    monkeypatch.setattr(network_services, "_lock_pool", lambda pool: None)
    monkeypatch.setattr(network_services, "ALLOCATION_ATTEMPTS", 1000)
    outcomes = _race(app_ids)
    failures = {k: v for k, v in outcomes.items() if k not in ("ok", "exhausted")}
    assert not failures
    _assert_consistent(pool, outcomes)

"""IPv6 partners under real concurrency on PostgreSQL: many threads, each with its own connection, enable
apps in a region whose IPv6 pool is smaller than the demand while the IPv4 pool is not.

The guards (services/egress6.py): the IPv6 pool's row is locked while the next address is picked, and
the unique constraint on ``address6`` is the last guard. Seen failing: with the lock removed (``_lock``
a no-op) threads picked the same next address and lost to the unique constraint more often than the
allocation's retries absorb, answering "allocated concurrently" (409) while the pool still had room
(two runs: 19 and 24 enables ok, 41 and 36 refused, for 31 addresses; never one address twice)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from egressportal.core import services
from egressportal.core.errors import ConflictError, PoolExhausted
from egressportal.core.models import App, EgressIP

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

APPS = 60
THREADS = 20
POOL6 = "2001:db8:0:2::/123"  # 31 usable: with one address per app, 29 apps find it exhausted


def test_concurrent_enables_never_share_an_ipv6_address(region, make_gateway, make_app, make_user, settings):
    settings.EGRESS_IPS_PER_APP = 1
    settings.EGRESS_QUOTA_APPS = settings.EGRESS_QUOTA_ADDRESSES = APPS
    make_gateway()
    services.pool_create(region=region, name="v4", cidr="203.0.113.0/25")
    pool6 = services.pool_create(region=region, name="v6", cidr=POOL6)
    owners = [make_user(f"racer-{i}") for i in range(THREADS)]
    ids = [make_app(owners[i % THREADS], f"race-{i}", cidrs=[]).pk for i in range(APPS)]

    def enable(app_id: int) -> str:
        try:
            services.egress_enable(app=App.objects.get(pk=app_id))
            return "ok"
        except PoolExhausted:
            return "exhausted"
        except ConflictError:
            return "conflict"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = Counter(pool.map(enable, ids))
    held = list(EgressIP.objects.filter(app__isnull=False).values_list("address6", "app_id"))
    assert outcomes == {"ok": pool6.size, "exhausted": APPS - pool6.size}
    assert len(held) == pool6.size == 31
    assert len({a for a, _ in held}) == len(held) and None not in {a for a, _ in held}
    # The losers hold nothing at all: not even an IPv4 address without its partner.
    assert not EgressIP.objects.filter(app__egress_type="shared", app__isnull=False).exists()


def test_a_backfill_racing_enables_disables_and_a_bulk_enable_keeps_every_app_whole(
    region, make_gateway, make_app, make_user, settings
):
    """A backfill (a new IPv6 pool) while other threads enable, disable and bulk-enable apps of the region:
    no deadlock, no error, no address twice, and every dedicated app ends with an IPv6 partner on all of
    its addresses (backfilled, or taken by its own enable) or, for the apps disabled meanwhile, untouched."""
    settings.EGRESS_QUOTA_APPS = settings.EGRESS_QUOTA_ADDRESSES = 1000
    make_gateway("gw-a"), make_gateway("gw-b")
    services.pool_create(region=region, name="v4", cidr="203.0.113.0/24")
    owners = [make_user(f"racer-{i}") for i in range(6)]
    before = [make_app(owners[i % 6], f"old-{i}", cidrs=[]) for i in range(60)]
    for app in before:
        services.egress_enable(app=app)
    fresh = [make_app(owners[i % 6], f"new-{i}", cidrs=[]).pk for i in range(30)]
    bulk = [make_app(owners[i % 6], f"bulk-{i}", cidrs=[]) for i in range(20)]
    to_disable = [a.pk for a in before[::3]]

    def run(job: tuple[str, object]) -> str:
        kind, arg = job
        try:
            if kind == "pool":
                services.pool_create(region=region, name="v6", cidr="2001:db8:0:2::/64")
            elif kind == "enable":
                services.egress_enable(app=App.objects.get(pk=arg))
            elif kind == "disable":
                services.egress_disable(app=App.objects.get(pk=arg))
            else:
                outcomes = services.egress_enable_many(apps=list(App.objects.filter(pk__in=[a.pk for a in bulk])))
                assert all(o.error is None for o in outcomes.values()), outcomes
            return "ok"
        except Exception as exc:  # reported below
            return f"{kind}: {type(exc).__name__}: {exc}"
        finally:
            connections.close_all()

    jobs = [("pool", None), ("bulk", None)]
    jobs += [("enable", pk) for pk in fresh[:15]] + [("disable", pk) for pk in to_disable] + [
        ("enable", pk) for pk in fresh[15:]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = Counter(pool.map(run, jobs))
    assert outcomes == {"ok": len(jobs)}, outcomes
    services.egress6_backfill(region=region)  # whatever an enable left half-way would show here: nothing to do
    held = list(EgressIP.objects.filter(status="assigned").values_list("address6", "app_id", "app__egress_type"))
    partners = [a for a, _, _ in held if a]
    assert len(partners) == len(set(partners))
    for address6, app_id, egress_type in held:
        if egress_type == "dedicated":
            assert address6 is not None, app_id

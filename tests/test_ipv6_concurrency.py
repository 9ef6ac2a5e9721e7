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

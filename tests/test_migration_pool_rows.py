"""The pools that exist when free address rows arrive get theirs: the first chunk, never an excluded address
nor one that already has a row (held or in quarantine)."""

from __future__ import annotations

import ipaddress

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("core", "0010_ipv6_pools_addresses_placements")]
AFTER = [("core", "0011_pool_address_rows")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_existing_pools_get_free_rows_for_their_unused_addresses():
    old = _migrate(BEFORE)
    try:
        Region, IPPool, EgressIP = (old.get_model("core", m) for m in ("Region", "IPPool", "EgressIP"))
        region = Region.objects.create(slug="lab", name="lab")
        def pool(name, cidr, excluded=()):
            # The historical model has no save() override: the bounds are given here.
            net = ipaddress.IPv4Network(cidr)
            return IPPool.objects.create(region=region, name=name, cidr=cidr, excluded=list(excluded),
                                         first_int=int(net.network_address), last_int=int(net.broadcast_address))

        small = pool("small", "203.0.113.0/29", excluded=["203.0.113.2"])
        pool("big", "198.18.0.0/16")
        EgressIP.objects.create(pool=small, address="203.0.113.5", address_int=3405803781, status="quarantined",
                                released_at="2026-01-01T00:00:00Z")
    finally:
        new = _migrate(AFTER)
    EgressIP = new.get_model("core", "EgressIP")
    rows = dict(EgressIP.objects.filter(pool__name="small").values_list("address", "status"))
    # 6 usable: .1 .3 .4 .6 free, .2 excluded, .5 kept as it was.
    assert rows == {"203.0.113.1": "free", "203.0.113.3": "free", "203.0.113.4": "free",
                    "203.0.113.5": "quarantined", "203.0.113.6": "free"}
    big_rows = EgressIP.objects.filter(pool__name="big")
    assert big_rows.count() == 4096  # the first chunk of a /16; the allocator makes the rest when needed
    assert big_rows.order_by("address_int").first().address == "198.18.0.1"
    assert big_rows.order_by("address_int").last().address == "198.18.16.0"

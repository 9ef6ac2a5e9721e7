"""The dashboard costs a constant number of queries per page: the same at 10
apps as at 10,000, on page 1, on a deep page and with a search."""

from __future__ import annotations

import ipaddress

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from egressportal.core import services
from egressportal.core.models import App, EgressIP, EgressIPRole, EgressIPStatus, Placement
from tests.conftest import TEST_HOST_KEY

pytestmark = pytest.mark.django_db

# session + user + count + page of apps + placements (with nodes) + egress IPs (with gateways)
# + the page's reserved addresses (one query for all of its apps)
# + the tenant's address quota (its override, apps and addresses: whether the "quota reached" notice shows)
MAX_QUERIES = 10
DEDICATED_APPS = 100  # with two addresses each, so the IP columns are not empty


def _populate(owner, region, gateways, pool, n: int) -> None:
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    node = services.node_create(
        region=region, name="perf-node", mgmt_address="198.18.254.1", host_key=TEST_HOST_KEY,
        transit_address="198.18.254.2", pod_cidrs=["198.18.0.0/16"],
    )
    apps = App.objects.bulk_create(
        [App(owner=owner, region=region, name=f"app-{i:05d}") for i in range(n)], batch_size=500
    )
    if connection.vendor == "sqlite" and apps[0].pk is None:  # older SQLite without RETURNING
        apps = list(App.objects.filter(owner=owner).order_by("name"))
    # Where the platform reported them: a /30 each in the node's pods.
    Placement.objects.bulk_create(
        [
            Placement(
                region=region,
                node=node,
                app=app,
                cidr=f"{ipaddress.IPv4Address(base + 4 * i)}/30",
                first_int=base + 4 * i,
                last_int=base + 4 * i + 3,
            )
            for i, app in enumerate(apps)
        ],
        batch_size=500,
    )
    dedicated = apps[: min(DEDICATED_APPS, n)]
    App.objects.filter(pk__in=[a.pk for a in dedicated]).update(egress_type="dedicated", egress_status="assigned")
    first = int(ipaddress.IPv4Address(pool.cidr.split("/")[0])) + 1
    now = timezone.now()
    rows = []
    for i, app in enumerate(dedicated):
        for j, (gateway, role) in enumerate(zip(gateways, [EgressIPRole.ACTIVE, EgressIPRole.STANDBY], strict=True)):
            address = first + 2 * i + j
            rows.append(
                EgressIP(
                    pool=pool, address=str(ipaddress.IPv4Address(address)), address_int=address,
                    status=EgressIPStatus.ASSIGNED, app=app, gateway=gateway, role=role, programmed=True,
                    assigned_at=now, last_app=app, last_owner=owner,
                )
            )
    # The pool's free rows (made when it was created) become these assigned ones.
    EgressIP.objects.bulk_create(
        rows, batch_size=500, update_conflicts=True, unique_fields=["address"],
        update_fields=["status", "app", "gateway", "role", "programmed", "assigned_at", "last_app", "last_owner"],
    )


@pytest.fixture
def big_region(region, make_gateway):
    gateways = [make_gateway("gw-p1"), make_gateway("gw-p2")]
    pool = services.pool_create(region=region, name="perf", cidr="203.0.112.0/24")
    return region, gateways, pool


def _count(client: Client, params: dict, expect_rows: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("portal:dashboard"), params)
    assert response.status_code == 200
    assert response.content.decode().count('data-testid="app-row"') == expect_rows
    return len(ctx.captured_queries)


@pytest.mark.parametrize("n_apps", [10, 10_000])
def test_dashboard_queries_do_not_grow_with_apps(alice, bob, big_region, django_assert_max_num_queries, n_apps):
    region, gateways, pool = big_region
    _populate(alice, region, gateways, pool, n_apps)
    services.app_create(owner=bob, region=region, name="not-alices")
    client = Client()
    client.force_login(alice)
    last_page = (n_apps + 24) // 25
    last_rows = n_apps - 25 * (last_page - 1)
    counts = {}
    with django_assert_max_num_queries(MAX_QUERIES):
        counts["first"] = _count(client, {}, min(25, n_apps))
    with django_assert_max_num_queries(MAX_QUERIES):
        counts["deep"] = _count(client, {"page": last_page}, last_rows)
    with django_assert_max_num_queries(MAX_QUERIES):
        # app-00000 … app-00009 exist at both sizes; at 10,000 the search scans them all.
        counts["search"] = _count(client, {"q": "app-0000"}, 10)
    with django_assert_max_num_queries(MAX_QUERIES):
        # Every name starts with "app-0": page 2 of the search (page 1 when there is no page 2).
        counts["search-deep"] = _count(client, {"q": "app-0", "page": 2}, min(25, n_apps - 25) if n_apps > 25 else n_apps)
    assert set(counts.values()) == {MAX_QUERIES}, counts

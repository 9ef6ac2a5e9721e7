"""List endpoints answer in a constant number of queries, whatever the page and the page size."""

from __future__ import annotations

import ipaddress

import pytest

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Placement
from tests.conftest import TEST_HOST_KEY

N_APPS = 10_000
BATCH = 2_000
# Auth (token + user), count, the page's keys, its rows, placements (+ nodes joined), egress IPs (+ gateways
# joined); other lists have no keys query.
MAX_QUERIES = 7


@pytest.fixture
def ten_thousand_apps(alice, region):
    """Test data only: rows written directly in bulk (the services are exercised elsewhere)."""
    apps = [App(owner=alice, region=region, name=f"bulk-{i:05d}") for i in range(N_APPS)]
    App.objects.bulk_create(apps, batch_size=BATCH)
    ids = list(App.objects.filter(owner=alice).order_by("name").values_list("id", flat=True))
    node = services.node_create(
        region=region, name="bulk-node", mgmt_address="198.18.254.1", host_key=TEST_HOST_KEY,
        transit_address="198.18.254.2", pod_cidrs=["198.18.0.0/16"],
    )
    # /30s from the start of the node's pods: one placement per app.
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    rows = []
    for i, app_id in enumerate(ids):
        first = base + i * 4
        rows.append(Placement(region=region, node=node, app_id=app_id, cidr=f"{ipaddress.IPv4Address(first)}/30",
                              first_int=first, last_int=first + 3))
    Placement.objects.bulk_create(rows, batch_size=BATCH)
    return ids


def test_app_list_is_constant_queries_at_10000(alice_api, staff_api, ten_thousand_apps, infra, alice,
                                               django_assert_max_num_queries):
    """The number of queries per page does not grow with the page size or the offset (no N+1 per app, no
    per-page extra). How long a page takes is a benchmark's business (bench/api_latency.py), not a test's."""
    # A few apps with egress so the egress-IP prefetch has rows on some pages.
    for app in App.objects.filter(pk__in=[ten_thousand_apps[0], ten_thousand_apps[9001]]):
        services.egress_enable(app=app, actor=alice)
    assert EgressIP.objects.exclude(status="free").count() == 4
    for caller in (alice_api, staff_api):
        counts = {}
        for limit in (5, 50, 500):
            for offset in (0, 9000):
                with django_assert_max_num_queries(MAX_QUERIES) as queries:
                    response = caller.get("/api/v1/apps/", {"limit": limit, "offset": offset})
                counts[(limit, offset)] = len(queries.captured_queries)
                assert response.status_code == 200
                body = response.json()
                assert body["count"] == N_APPS
                assert len(body["results"]) == limit
                first = body["results"][0]
                assert first["name"] == f"bulk-{offset:05d}"
                assert first["placements"][0]["node"] == "bulk-node" and len(first["placements"][0]["addresses"]) == 1
        # Filters and ordering keep the same shape.
        with django_assert_max_num_queries(MAX_QUERIES) as queries:
            response = caller.get("/api/v1/apps/", {"ordering": "-created_at,name", "search": "bulk-09", "limit": 500})
        assert response.json()["count"] == 1000
        counts["search"] = len(queries.captured_queries)
        assert len(set(counts.values())) == 1, (caller.user.username, counts)
    page = alice_api.get("/api/v1/apps/", {"limit": 50, "offset": 9000}).json()
    assert len(page["results"][1]["egress"]["ips"]) == 2  # bulk-09001


def test_event_list_is_constant_queries(alice_api, alice, make_app, infra, django_assert_max_num_queries):
    app = make_app(alice)
    for i in range(30):
        services.app_update(app=app, name=f"name-{i}", actor=alice)
    counts = []
    for limit in (5, 50):
        with django_assert_max_num_queries(MAX_QUERIES) as ctx:
            response = alice_api.get(f"/api/v1/apps/{app.pk}/events/", {"limit": limit})
        assert response.status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]

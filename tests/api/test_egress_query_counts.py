"""The egress PUT (enable, disable) and GET ask the database an exact number of queries: the app is read
once, the write's answer comes from what the write holds, the allocator claims its addresses in one
statement. A query added on this path (a second read of the app, a re-read for the answer, an UPDATE per
address) turns these red. The toggle's latency target leaves the request little room (docs/BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from egressportal.core import services
from egressportal.core.models import EgressIP, EgressIPStatus

# The same on PostgreSQL and SQLite (there FOR UPDATE is left out; the statement stays). Inside the test's
# transaction every atomic block is a savepoint (two statements); the reconcile dispatch runs on commit,
# which a test transaction never reaches (and the tests send nothing: dispatch "none").
QUERIES = {
    # token; the app (who may, the region's IPv6); savepoint; the app locked; the owner locked;
    # allocation savepoint; held addresses; gateways; IPv4 pools; own addresses; free rows; the claim;
    # IPv6 pools (partners for addresses without one); release; quota (limit and use, one query); the app;
    # its nodes; host syncs (delete, insert); the event; release.
    "enable": 21,
    # token; the app; savepoint; the app locked; its addresses; the app; its nodes; host syncs (2);
    # the event; release.
    "disable": 11,
    # token; the app; its assigned addresses with their gateways.
    "get": 3,
    # token; the app; savepoint; the app locked; its addresses; release.
    "unchanged": 6,
}


@pytest.fixture
def placed_app(alice, make_app, infra):
    return make_app(alice)


def _put(api, app, kind):
    return api.put(f"/api/v1/apps/{app.pk}/egress/", {"type": kind})


def test_enable_put_queries(alice_api, placed_app, django_assert_num_queries):
    with django_assert_num_queries(QUERIES["enable"]):
        response = _put(alice_api, placed_app, "dedicated")
    assert response.status_code == 202, response.content
    # The answer is what a read after the write shows.
    assert response.json() == alice_api.get(f"/api/v1/apps/{placed_app.pk}/egress/").json()
    assert len(response.json()["ips"]) == 2


def test_disable_put_queries(alice_api, placed_app, django_assert_num_queries):
    assert _put(alice_api, placed_app, "dedicated").status_code == 202
    with django_assert_num_queries(QUERIES["disable"]):
        response = _put(alice_api, placed_app, "shared")
    assert response.status_code == 202, response.content
    assert response.json() == alice_api.get(f"/api/v1/apps/{placed_app.pk}/egress/").json()
    assert response.json()["status"] == "releasing" and len(response.json()["ips"]) == 2


def test_unchanged_put_queries(alice_api, placed_app, django_assert_num_queries):
    assert _put(alice_api, placed_app, "dedicated").status_code == 202
    with django_assert_num_queries(QUERIES["unchanged"]):
        response = _put(alice_api, placed_app, "dedicated")
    assert response.status_code == 200, response.content
    assert response.json() == alice_api.get(f"/api/v1/apps/{placed_app.pk}/egress/").json()


def test_egress_get_queries(alice_api, placed_app, django_assert_num_queries):
    assert _put(alice_api, placed_app, "dedicated").status_code == 202
    with django_assert_num_queries(QUERIES["get"]):
        response = alice_api.get(f"/api/v1/apps/{placed_app.pk}/egress/")
    assert response.status_code == 200
    assert [ip["status"] for ip in response.json()["ips"]] == ["pending", "pending"]


def test_reenable_takes_its_own_addresses_back_in_the_same_queries(alice, alice_api, placed_app,
                                                                   django_assert_num_queries):
    """The common toggle: enabled, released (by the workers), enabled again; its own quarantined addresses
    come back (one query finds both, one statement claims both)."""
    first = _put(alice_api, placed_app, "dedicated").json()["ips"]
    _put(alice_api, placed_app, "shared")
    services.egress_ips_release(app=placed_app)
    assert EgressIP.objects.filter(last_app=placed_app, status=EgressIPStatus.QUARANTINED).count() == 2
    # Own addresses found, so no free-row query: one fewer than a first enable.
    with django_assert_num_queries(QUERIES["enable"] - 1):
        response = _put(alice_api, placed_app, "dedicated")
    assert response.status_code == 202
    assert [ip["address"] for ip in response.json()["ips"]] == [ip["address"] for ip in first]
    assert response.json() == alice_api.get(f"/api/v1/apps/{placed_app.pk}/egress/").json()


"""A gateway's change of health refreshes all the apps on it at once (services/hosthealth.py
``apps_health_refresh``): the statuses, messages and events the per-app rule gives (rules/health.py
``app_egress_health``), one status announcement per app whose status changed, and a number of queries
that does not grow with the number of apps (a failover of many apps is when speed matters).

The apps are made live by playing the workers' reports by hand (as tests/test_bulk_settle.py does); the
gateway's health is recorded as the prober records it (``health_set`` then ``health_changed``, the prober
re-steering the nodes itself). The lab runs the same code with real hosts (tests/integration/test_failover.py,
tests/integration/test_dead_gateway.py)."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from egressportal.core import services
from egressportal.core.desired import gateway_desired, node_desired
from egressportal.core.models import App, EgressIP, EgressIPRole, Event, Gateway, HostSync, Placement
from egressportal.core.services import hosthealth, hostsync

pytestmark = pytest.mark.django_db

_names = itertools.count()


@pytest.fixture
def fleet(infra, settings, alice, monkeypatch):
    """infra with a pool for 1,000 addresses; ``live(n)``: n apps of alice placed on node-a, enabled and
    settled on both gateways and the node (assigned)."""
    settings.EGRESS_QUOTA_ADDRESSES = 5000
    monkeypatch.setattr(hostsync, "reconcile_request", lambda **_: None)
    services.pool_create(region=infra["region"], name="fleet", cidr="198.19.128.0/21")
    node = infra["nodes"][0]
    pods = ipaddress.IPv4Network(node.pod_cidrs[0]).subnets(new_prefix=30)

    def live(n: int) -> list[App]:
        batch = next(_names)
        App.objects.bulk_create([App(owner=alice, region=infra["region"], name=f"h{batch}-{i:04d}") for i in range(n)])
        apps = list(App.objects.filter(name__startswith=f"h{batch}-").order_by("pk"))
        rows = []
        for app in apps:
            net = next(pods)
            rows.append(Placement(region=infra["region"], node=node, app=app, cidr=str(net),
                                  first_int=int(net.network_address), last_int=int(net.broadcast_address)))
        Placement.objects.bulk_create(rows)
        outcome = services.egress_enable_many(apps=apps)
        assert all(o.changed and o.error is None for o in outcome.values()), outcome
        for host in (*infra["gateways"], node):
            plan = gateway_desired(host) if isinstance(host, Gateway) else node_desired(host)
            hostsync.host_reconcile_succeeded(host=host, plan=plan, changed=True, summary="applied", changes=(),
                                              duration=0.01)
        assert set(App.objects.filter(pk__in=[a.pk for a in apps]).values_list("egress_status", "egress_message")) == {
            ("assigned", "")
        }
        # Every third app active on gw-b, standby on gw-a: a failover of gw-a degrades the others only.
        # In two steps: one UPDATE swapping both roles can meet the one-active-per-app index half-way
        # (PostgreSQL checks it row by row, in whatever order it visits the rows).
        swapped = EgressIP.objects.filter(app__in=apps[::3])
        was_active = list(swapped.filter(role=EgressIPRole.ACTIVE).values_list("pk", flat=True))
        swapped.filter(pk__in=was_active).update(role=EgressIPRole.STANDBY)
        swapped.exclude(pk__in=was_active).update(role=EgressIPRole.ACTIVE)
        return apps

    infra["live"] = live
    return infra



def _health(gateway: Gateway, health: str, message: str) -> list[str]:
    """Record the prober's verdict and its consequences; returns the queries of the consequences."""
    gateway = Gateway.objects.get(pk=gateway.pk)
    assert hosthealth.health_set(gateway, health=health, message=message)
    with CaptureQueriesContext(connection) as ctx:
        hosthealth.health_changed(gateway, resteer=False)
    return [q["sql"] for q in ctx.captured_queries]


def _expected(apps: list[App], down: Gateway | None) -> dict[int, tuple[str, str]]:
    """What each app shows, worked out from its addresses (two per app: active and standby)."""
    out: dict[int, tuple[str, str]] = {}
    for app in apps:
        ips = list(EgressIP.objects.filter(app=app).order_by("address_int"))
        active = next(ip for ip in ips if ip.role == EgressIPRole.ACTIVE)
        standby = next(ip for ip in ips if ip.role != EgressIPRole.ACTIVE)
        if down is None:
            out[app.pk] = ("assigned", "")
        elif active.gateway_id == down.pk:
            out[app.pk] = ("degraded", f"Gateway {down.name} is down; traffic leaves from the standby address {standby.address}.")
        else:
            out[app.pk] = ("assigned", f"Standby gateway {down.name} is down; no failover until it recovers.")
    return out


def _shown(apps: list[App]) -> dict[int, tuple[str, str]]:
    return {pk: (s, m) for pk, s, m in App.objects.filter(pk__in=[a.pk for a in apps]).values_list(
        "pk", "egress_status", "egress_message")}


def _events(apps: list[App], since: int) -> dict[int, list[tuple[str, str, str]]]:
    out: dict[int, list[tuple[str, str, str]]] = {a.pk: [] for a in apps}
    for app_id, kind, level, message in Event.objects.filter(app__in=apps, pk__gt=since).order_by("pk").values_list(
        "app_id", "kind", "level", "message"
    ):
        out[app_id].append((kind, level, message))
    return out


def _last_event() -> int:
    return Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _down_and_back(fleet, heard, n: int) -> dict[str, list[str]]:
    """n apps live, gw-a goes down then comes back: checks each app's status, message, events and the
    announcements; returns the queries of each change of health."""
    gw = fleet["gateways"][0]
    apps = fleet["live"](n)
    expected = _expected(apps, gw)
    degraded = [pk for pk, (status, _) in expected.items() if status == "degraded"]
    assert degraded and len(degraded) < n, "both kinds of app: active on gw-a and standby on gw-a"
    del heard[:]
    queries: dict[str, list[str]] = {}

    mark = _last_event()
    queries["down"] = _health(gw, "unhealthy", "no answer for 3000 ms: the host is down or cut off")
    assert _shown(apps) == expected
    assert heard == [[(pk, "assigned", "degraded") for pk in sorted(degraded)]], "each change once, in one send"
    events = _events(apps, mark)
    for pk, (status, message) in expected.items():
        kind, level = ("egress.degraded", "warning") if status == "degraded" else ("egress.assigned", "info")
        assert events[pk] == [(kind, level, message)], (pk, events[pk])

    mark = _last_event()
    del heard[:]
    queries["back"] = _health(gw, "healthy", "")
    assert _shown(apps) == _expected(apps, None)
    assert heard == [[(pk, "degraded", "assigned") for pk in sorted(degraded)]]
    events = _events(apps, mark)
    assert events == {a.pk: [("egress.assigned", "info", "All gateways of this app are healthy again.")] for a in apps}

    # Nothing changed since: a refresh writes nothing and announces nothing.
    mark = _last_event()
    del heard[:]
    hosthealth.apps_health_refresh({a.pk for a in apps})
    assert _events(apps, mark) == {a.pk: [] for a in apps} and heard == []
    # Out of the next round's way (a shared app is left alone, see below).
    App.objects.filter(pk__in=[a.pk for a in apps]).update(egress_type="shared", egress_status="disabled")
    return queries


def test_a_gateway_down_and_back_refreshes_10_or_300_apps_in_the_same_queries(fleet, heard):
    small, large = _down_and_back(fleet, heard, 10), _down_and_back(fleet, heard, 300)
    # The events are inserted in one statement on PostgreSQL; on SQLite Django splits bulk inserts at 999
    # parameters (as tests/test_bulk_settle.py counts).
    def counted(queries: list[str]) -> int:
        if connection.vendor == "sqlite":
            queries = [q for q in queries if not q.startswith("INSERT")]
        return len(queries)

    assert {k: counted(v) for k, v in large.items()} == {k: counted(v) for k, v in small.items()}
    assert max(len(v) for v in small.values()) < 20, {k: len(v) for k, v in small.items()}


def test_a_refresh_leaves_apps_waiting_for_a_host_and_shared_apps_alone(fleet, heard):
    gw = fleet["gateways"][0]
    apps = fleet["live"](6)
    waiting, disabled, rest = apps[0], apps[1], apps[2:]
    HostSync.objects.create(app=waiting, gateway=fleet["gateways"][1])
    App.objects.filter(pk=disabled.pk).update(egress_type="shared", egress_status="disabled")
    del heard[:]
    _health(gw, "unhealthy", "public interface eth1 is down")
    shown = _shown(apps)
    assert shown[waiting.pk] == ("assigned", "") and shown[disabled.pk] == ("disabled", "")
    assert {pk: shown[pk] for pk in (a.pk for a in rest)} == _expected(rest, gw)
    assert not Event.objects.filter(app__in=[waiting, disabled], kind__in=["egress.degraded", "egress.assigned"],
                                    message__contains="down").exists()


def test_a_refresh_locks_the_apps_in_pk_order(fleet):
    """The lock order of every other writer of app rows (services/hostsync.py ``_apps_locked``)."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no row locks")
    apps = fleet["live"](3)
    with CaptureQueriesContext(connection) as ctx:
        _health(fleet["gateways"][0], "unhealthy", "public interface eth1 is down")
    locks = [q["sql"] for q in ctx.captured_queries if "FOR UPDATE" in q["sql"] and "core_app" in q["sql"]]
    assert locks and all('ORDER BY "core_app"."id" ASC' in q for q in locks), locks
    assert len(apps) == 3

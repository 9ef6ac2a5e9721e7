"""The bookkeeping after a verified reconcile settles all of a host's apps at once (services/hostsync.py
``host_reconcile_succeeded`` → ``_settle``): the same make-before-break steps as one app at a time
(rules/settle.py decides each app), one status announcement per change, and a number of queries that
does not grow with the number of apps.

The workers' half is played by hand (the host's plan read, then the report of its verified apply), as in
tests/test_sync_ordering.py; the lab runs the same code with real hosts (tests/integration/test_workers.py,
the storm test in tests/fault/test_faults.py)."""

from __future__ import annotations

import ipaddress
import itertools
import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from egressportal.core import services
from egressportal.core.desired import gateway_desired, node_desired
from egressportal.core.models import App, EgressIP, EgressStatus, EgressType, Event, HostSync, Placement
from egressportal.core.rules.settle import GATEWAYS_READY, NODES_DONE
from egressportal.core.services import hostsync
from egressportal.notifications.models import WebhookDelivery

pytestmark = pytest.mark.django_db

_names = itertools.count()


@pytest.fixture
def burst(infra, settings, alice):
    """infra with a pool for 1,000 addresses; ``make(n)``: n apps of alice, each placed on node-a."""
    settings.EGRESS_QUOTA_ADDRESSES = 5000
    services.pool_create(region=infra["region"], name="burst", cidr="198.19.128.0/21")
    node = infra["nodes"][0]
    pods = ipaddress.IPv4Network(node.pod_cidrs[0]).subnets(new_prefix=30)

    def make(n: int) -> list[App]:
        batch = next(_names)
        apps = App.objects.bulk_create(
            [App(owner=alice, region=infra["region"], name=f"b{batch}-{i:04d}") for i in range(n)]
        )
        if apps and apps[0].pk is None:  # no RETURNING
            apps = list(App.objects.filter(name__startswith=f"b{batch}-").order_by("name"))
        rows = []
        for app in apps:
            net = next(pods)
            rows.append(Placement(region=infra["region"], node=node, app=app, cidr=str(net),
                                  first_int=int(net.network_address), last_int=int(net.broadcast_address)))
        Placement.objects.bulk_create(rows)
        return apps

    infra["make"] = make
    return infra


@pytest.fixture
def requests(monkeypatch):
    """The reconcile requests the settle makes: one list of (gateway ids, node ids) per request."""
    made: list[tuple[set[int], set[int]]] = []
    monkeypatch.setattr(hostsync, "reconcile_request",
                        lambda *, gateways=(), nodes=(): made.append((set(gateways), set(nodes))))
    return made



def verified(host, plan) -> int:
    return hostsync.host_reconcile_succeeded(host=host, plan=plan, changed=True, summary="applied", changes=(),
                                             duration=0.01)


def statuses(apps) -> set[tuple[str, str, str]]:
    return set(App.objects.filter(pk__in=[a.pk for a in apps]).values_list("egress_type", "egress_status", "egress_message"))


def enable(apps) -> None:
    outcome = services.egress_enable_many(apps=apps)
    assert all(o.changed and o.error is None for o in outcome.values()), outcome


def test_a_burst_goes_gateways_then_nodes_then_assigned(burst, requests, heard):
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](20)
    enable(apps)

    assert verified(gw1, gateway_desired(gw1)) == 20
    assert statuses(apps) == {("dedicated", "assigning", "Configuring gateways.")}, "gw2 still owes them"
    # Make before break: a gateway done, the nodes that owe the apps may steer towards what it holds.
    assert requests == [(set(), {node.pk})]
    assert verified(gw2, gateway_desired(gw2)) == 20
    assert statuses(apps) == {("dedicated", "assigning", GATEWAYS_READY)}
    assert requests[1] == (set(), {node.pk})
    assert heard == [], "assigning to assigning is no status change"

    assert verified(node, node_desired(node)) == 20
    assert statuses(apps) == {("dedicated", "assigned", "")}
    assert requests[2] == (set(), set()), "nothing left to ask"
    assert heard == [[(a.pk, "assigning", "assigned") for a in apps]], "each change announced once, in one send"
    for app in apps:
        kinds = sorted(Event.objects.filter(app=app, kind__startswith="egress.").values_list("kind", flat=True))
        assert kinds == ["egress.assigned", "egress.enable_requested", "egress.gateway_configured",
                         "egress.gateway_configured", "egress.node_configured"], kinds
        live = Event.objects.get(app=app, kind="egress.assigned")
        addresses = list(EgressIP.objects.filter(app=app).order_by("address_int").values_list("address", flat=True))
        assert live.message == "Dedicated egress is live: " + ", ".join(addresses) + "."
        assert live.actor_name == "worker" and live.data["latency_ms"] is not None
    # Once more: nothing pending, nothing settled, nothing announced.
    assert verified(node, node_desired(node)) == 0
    assert len(heard) == 1


def test_a_node_settled_before_the_gateways_does_not_move_the_apps(burst, requests, heard):
    """The rule broken on purpose in rules/settle.py (enabling: not waiting for the gateways before the
    nodes' step) turns this red: the apps went "assigning, steering on the nodes" and the node was asked
    again while no gateway held their addresses."""
    node = burst["nodes"][0]
    apps = burst["make"](10)
    enable(apps)
    # A reconcile report that settles the node's rows while both gateways still owe every app.
    plan = node_desired(node)
    plan.settles = list(HostSync.objects.filter(node=node).values_list("pk", flat=True))
    assert verified(node, plan) == 10
    assert statuses(apps) == {("dedicated", "assigning", "Configuring gateways.")}
    assert requests == [(set(), set())]
    assert heard == []


def test_a_burst_of_disables_stops_steering_first_then_releases(burst, requests, heard):
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](12)
    enable(apps)
    for host in (gw1, gw2):
        verified(host, gateway_desired(host))
    verified(node, node_desired(node))
    held = {a.pk: list(EgressIP.objects.filter(app=a).order_by("address_int").values_list("address", flat=True))
            for a in apps}
    for app in apps:
        services.egress_disable(app=app)
    del requests[:], heard[:]

    # A gateway reconciled first keeps the addresses while the node may still steer to them.
    assert verified(gw1, gateway_desired(gw1)) == 0
    assert statuses(apps) == {("shared", "releasing", "Removing steering from nodes.")}
    assert verified(node, node_desired(node)) == 12
    assert statuses(apps) == {("shared", "releasing", NODES_DONE)}
    assert requests[-1] == ({gw1.pk, gw2.pk}, set()), "then the gateways, asked once for all the apps"
    assert verified(gw1, gateway_desired(gw1)) == 12
    assert statuses(apps) == {("shared", "releasing", NODES_DONE)}, "gw2 still holds their addresses"
    assert verified(gw2, gateway_desired(gw2)) == 12
    assert statuses(apps) == {("shared", "disabled", "")}
    assert not EgressIP.objects.filter(app__in=apps).exists()
    for app in apps:
        rows = EgressIP.objects.filter(last_app=app)
        assert set(rows.values_list("status", "last_owner_id", "gateway_id", "role", "programmed")) == {
            ("quarantined", app.owner_id, None, "", False)}
        event = Event.objects.get(app=app, kind="egress.disabled")
        assert event.data["released"] == held[app.pk]
        assert event.message.startswith(f"Back to shared egress. {', '.join(held[app.pk])} stay reserved")
    assert heard == [[(a.pk, "releasing", "disabled") for a in apps]]


def test_a_gateway_settled_before_the_nodes_stop_steering_does_not_release(burst, requests, heard):
    """Breaking in reverse, the rule broken on purpose (disabling: not waiting for the nodes) turns this
    red: the apps went on to "removing addresses from gateways" while the node still steered them."""
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](10)
    enable(apps)
    for host in (gw1, gw2):
        verified(host, gateway_desired(host))
    verified(node, node_desired(node))
    for app in apps:
        services.egress_disable(app=app)
    del requests[:], heard[:]
    plan = gateway_desired(gw1)
    plan.settles = list(HostSync.objects.filter(gateway=gw1).values_list("pk", flat=True))
    assert verified(gw1, plan) == 10
    assert statuses(apps) == {("shared", "releasing", "Removing steering from nodes.")}
    assert EgressIP.objects.filter(app__in=apps).count() == 20, "nothing released"
    assert all(not gateways for gateways, _ in requests), requests
    assert heard == []


def test_an_app_whose_deletion_waited_is_deleted_with_its_release(burst, requests):
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](3)
    enable(apps)
    for host in (gw1, gw2, node):
        verified(host, gateway_desired(host) if host in (gw1, gw2) else node_desired(node))
    assert services.app_delete(app=apps[0]) is False
    services.egress_disable(app=apps[1])
    verified(node, node_desired(node))
    verified(gw1, gateway_desired(gw1))
    verified(gw2, gateway_desired(gw2))
    assert not App.objects.filter(pk=apps[0].pk).exists()
    assert Event.objects.filter(kind="app.deleted", subject=apps[0].name).count() == 1
    assert App.objects.get(pk=apps[1].pk).egress_status == EgressStatus.DISABLED
    assert App.objects.get(pk=apps[2].pk).egress_status == EgressStatus.ASSIGNED


def _phases(burst, n: int) -> dict[str, list[str]]:
    """The queries of each settle of a burst of n apps: enable, both gateways, the node; disable, the
    node, both gateways."""
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](n)
    enable(apps)
    out: dict[str, list[str]] = {}

    def settle(name: str, host, plan) -> None:
        with CaptureQueriesContext(connection) as ctx:
            assert verified(host, plan) == n
        out[name] = [q["sql"] for q in ctx.captured_queries]

    settle("gateway (enable)", gw1, gateway_desired(gw1))
    settle("last gateway (enable)", gw2, gateway_desired(gw2))
    settle("node: assigned", node, node_desired(node))
    assert statuses(apps) == {("dedicated", "assigned", "")}
    for app in apps:
        services.egress_disable(app=app)
    settle("node: releasing", node, node_desired(node))
    settle("gateway (disable)", gw1, gateway_desired(gw1))
    settle("last gateway: released", gw2, gateway_desired(gw2))
    assert statuses(apps) == {("shared", "disabled", "")}
    return out


def test_settling_10_or_120_apps_costs_the_same_queries(burst, alice, bob, requests):
    """No query per app: each phase of a burst costs as many queries for 120 apps as for 10 (on SQLite,
    whose bulk inserts Django splits at 999 parameters, apart from those inserts); a query per app would
    show as 110 more. The owner has an email subscription and another tenant a webhook, so the
    notifications' reads are counted too."""
    from egressportal.notifications import services as notifications

    alice.email = "alice@example.com"
    alice.save()
    notifications.email_subscription_set(user=alice, events=["egress.assigned"])
    notifications.webhook_create(owner=bob, url="https://hooks.example.com/b", events=["egress.assigned"])
    small, large = _phases(burst, 10), _phases(burst, 120)

    def counted(queries: list[str]) -> int:
        if connection.vendor == "sqlite":
            queries = [q for q in queries if not q.startswith("INSERT")]
        return len(queries)

    assert {k: counted(v) for k, v in large.items()} == {k: counted(v) for k, v in small.items()}
    assert max(len(v) for v in small.values()) < 40, {k: len(v) for k, v in small.items()}


def test_a_failed_reconcile_marks_a_burst_in_the_same_queries_for_10_or_120_apps(burst, requests, heard):
    from egressportal.core.models import Gateway

    gw1 = burst["gateways"][0]

    def fail(n: int) -> list[str]:
        apps = burst["make"](n)
        enable(apps)
        del heard[:]
        Gateway.objects.filter(pk=gw1.pk).update(reconcile_failures=0)  # each a first failure (one host event)
        host = Gateway.objects.get(pk=gw1.pk)
        with CaptureQueriesContext(connection) as ctx:
            hostsync.host_reconcile_failed(host=host, reason="connection refused",
                                           app_ids={a.pk for a in apps}, duration=0.2, ssh_error_kind="connect")
        # A first enable that cannot reach a gateway: nothing steers to a dedicated address yet.
        assert {s for _, s, _ in statuses(apps)} == {"failed"}
        assert Event.objects.filter(app__in=apps, kind="egress.failed").count() == n
        assert heard == [[(a.pk, "assigning", "failed") for a in apps]]
        return [q["sql"] for q in ctx.captured_queries if connection.vendor != "sqlite" or not q["sql"].startswith("INSERT")]

    assert len(fail(120)) == len(fail(10))


def test_a_webhook_per_status_change_of_a_burst(burst, alice, requests):
    from egressportal.notifications import services as notifications

    endpoint = notifications.webhook_create(owner=alice, url="https://hooks.example.com/a", events=["egress.assigned"])
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](7)
    enable(apps)
    for host in (gw1, gw2):
        verified(host, gateway_desired(host))
    assert not WebhookDelivery.objects.exists()
    verified(node, node_desired(node))
    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint, event="egress.assigned")
    assert sorted(deliveries.values_list("app_id", flat=True)) == sorted(a.pk for a in apps)
    assert {d.payload["app"]["egress"]["status"] for d in deliveries} == {"assigned"}
    verified(node, node_desired(node))
    assert deliveries.count() == 7, "no second notification without a change"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_settle_racing_toggles_of_its_apps_neither_deadlocks_nor_settles_a_newer_request(burst):
    """A node's settle of 60 apps against a thread disabling the same apps one by one, in the opposite
    order: both finish (the settle locks the app rows in pk order before any sync row, as the services
    do), and an app disabled before the settle got its lock keeps the node's new request."""
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](60)
    enable(apps)
    for host in (gw1, gw2):
        verified(host, gateway_desired(host))
    plan = node_desired(node)  # the reconcile read the enables; the disables below come after
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(job) -> None:
        try:
            start.wait()
            job()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def toggles() -> None:
        for app in reversed(apps):
            services.egress_set(app=App.objects.get(pk=app.pk), egress_type=EgressType.SHARED)

    threads = [threading.Thread(target=run, args=(job,)) for job in (lambda: verified(node, plan), toggles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    # Every app was disabled after the plan was read: the node owes each one its disable, whichever ran first.
    assert statuses(apps) == {("shared", "releasing", "Removing steering from nodes.")}
    assert set(HostSync.objects.filter(node=node).values_list("app_id", flat=True)) == {a.pk for a in apps}


def test_a_steady_gateway_reconcile_locks_no_app_and_sends_no_list_of_its_addresses(burst, requests):
    """Once a gateway holds its apps, a reconcile that changes nothing writes nothing of theirs: it locks
    no app row and its SQL does not grow with the addresses held (the plan's 10,000 ids in three queries
    and a lock on 10,000 apps were a fifth of a 10,000-app restore). A flag still to flip is flipped."""
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]

    def steady(n: int) -> list[str]:
        apps = burst["make"](n)
        enable(apps)
        for host in (gw1, gw2):
            verified(host, gateway_desired(host))
        verified(node, node_desired(node))
        plan = gateway_desired(gw1)
        assert not plan.settles
        with CaptureQueriesContext(connection) as ctx:
            hostsync.host_reconcile_succeeded(host=gw1, plan=plan, changed=False, summary="no change", changes=(),
                                              duration=0.01)
        return [q["sql"] for q in ctx.captured_queries]

    small, large = steady(5), steady(100)
    assert not [q for q in large if "FOR UPDATE" in q], large
    assert len(large) == len(small)
    # (a little slack: timestamps in the SQL may print shorter; 95 more ids would add hundreds of characters)
    assert sum(map(len, large)) <= sum(map(len, small)) + 40, "the steady bookkeeping's SQL grew with the addresses held"

    # A live address whose flag is still down (say, a worker killed after applying, before recording) is
    # marked at the next reconcile, its app locked for it.
    ip = EgressIP.objects.filter(gateway=gw1, app__isnull=False).order_by("pk").first()
    EgressIP.objects.filter(pk=ip.pk).update(programmed=False)
    with CaptureQueriesContext(connection) as ctx:
        hostsync.host_reconcile_succeeded(host=gw1, plan=gateway_desired(gw1), changed=False, summary="no change",
                                          changes=(), duration=0.01)
    assert EgressIP.objects.get(pk=ip.pk).programmed
    if connection.vendor == "postgresql":
        assert [q for q in ctx.captured_queries if "FOR UPDATE" in q["sql"]], "the flipped address's app is locked"


def _hold_lease(gateway) -> None:
    """Another worker is reconciling ``gateway`` right now (its lease, as workers/reconcile.py takes it)."""
    from datetime import timedelta

    from django.utils import timezone

    type(gateway).objects.filter(pk=gateway.pk).update(lease_token="other-worker",
                                                       lease_expires_at=timezone.now() + timedelta(seconds=30))


def test_the_first_gateway_done_leaves_the_nodes_to_the_other_while_that_one_is_being_reconciled(
    burst, requests, heard
):
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](3)
    enable(apps)
    _hold_lease(gw2)
    assert verified(gw1, gateway_desired(gw1)) == 3
    assert requests == [(set(), set())], "gw2 is at work and asks the nodes itself in a moment: steer once"
    type(gw2).objects.filter(pk=gw2.pk).update(lease_token="", lease_expires_at=None)
    assert verified(gw2, gateway_desired(gw2)) == 3
    assert requests[1] == (set(), {node.pk})


def test_an_expired_lease_of_the_other_gateway_does_not_hold_the_nodes_back(burst, requests):
    from datetime import timedelta

    from django.utils import timezone

    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](3)
    enable(apps)
    type(gw2).objects.filter(pk=gw2.pk).update(lease_token="dead-worker",
                                               lease_expires_at=timezone.now() - timedelta(seconds=1))
    verified(gw1, gateway_desired(gw1))
    assert requests == [(set(), {node.pk})], "a worker that died on gw2 must not keep the apps unsteered"


def test_a_gateway_that_fails_asks_the_nodes_it_held_back(burst, requests):
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](3)
    enable(apps)
    _hold_lease(gw2)
    verified(gw1, gateway_desired(gw1))
    assert requests == [(set(), set())]
    hostsync.host_reconcile_failed(host=gw2, reason="unreachable", app_ids={a.pk for a in apps}, duration=1.0,
                                   ssh_error_kind="unreachable")
    # The apps go live through gw1 meanwhile: the node steers towards it.
    assert requests[-1] == (set(), {node.pk})


def test_a_gateway_done_with_a_disable_does_not_ask_again_for_the_other_while_it_is_at_work(burst, requests, heard):
    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](3)
    enable(apps)
    for host in (gw1, gw2, node):
        verified(host, (gateway_desired if host in (gw1, gw2) else node_desired)(host))
    for app in apps:
        services.egress_disable(app=app)
    verified(node, node_desired(node))
    assert requests[-1] == ({gw1.pk, gw2.pk}, set())
    _hold_lease(gw2)  # asked by the node's settle: at work now
    assert verified(gw1, gateway_desired(gw1)) == 3
    assert requests[-1] == (set(), set()), "gw2 settles these apps itself: asking again would only rerun it"
    type(gw2).objects.filter(pk=gw2.pk).update(lease_token="", lease_expires_at=None)
    assert verified(gw2, gateway_desired(gw2)) == 3
    assert statuses(apps) == {("shared", "disabled", "")}


def test_a_host_key_mismatch_marks_a_burst_in_the_same_queries_for_10_or_120_apps(burst, requests, heard):
    from egressportal.core.models import Gateway

    gw1 = burst["gateways"][0]

    def mismatch(n: int) -> list[str]:
        apps = burst["make"](n)
        enable(apps)
        del heard[:]
        Gateway.objects.filter(pk=gw1.pk).update(host_key_mismatch_at=None)  # each a first mismatch (one event)
        host = Gateway.objects.get(pk=gw1.pk)
        with CaptureQueriesContext(connection) as ctx:
            hostsync.host_key_mismatch_record(host=host, app_ids={a.pk for a in apps}, presented_key="",
                                              expected_fingerprint="SHA256:pinned", presented_fingerprint="SHA256:other")
        assert {s for _, s, _ in statuses(apps)} == {"failed"}
        assert heard == [[(a.pk, "assigning", "failed") for a in apps]], "every change announced once, in one send"
        return [q["sql"] for q in ctx.captured_queries]

    assert len(mismatch(120)) == len(mismatch(10))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_node_settle_and_a_placements_report_of_that_node_do_not_deadlock(burst):
    """A placements report locks the node's row, then renews sync rows of the node; a node's settle takes
    the node's row before its sync rows too. In the other order (sync rows deleted, then the node's row
    updated) the two waited for each other: PostgreSQL's "deadlock detected"."""
    import time

    from django.db import transaction

    from egressportal.core.models import Node

    gw1, gw2 = burst["gateways"]
    node = burst["nodes"][0]
    apps = burst["make"](5)
    enable(apps)
    for host in (gw1, gw2):
        verified(host, gateway_desired(host))
    plan = node_desired(node)
    errors: list[BaseException] = []
    report_holds_the_node = threading.Event()

    def report() -> None:  # what node_placements_set does, with a pause while it holds the node's row
        try:
            with transaction.atomic():
                Node.objects.select_for_update(of=("self",)).get(pk=node.pk)
                report_holds_the_node.set()
                time.sleep(1.5)  # the settle reaches its first lock we hold meanwhile
                HostSync.objects.filter(node=node).delete()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def settle() -> None:
        try:
            report_holds_the_node.wait(10)
            verified(node, plan)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=job) for job in (report, settle)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not HostSync.objects.filter(node=node).exists()

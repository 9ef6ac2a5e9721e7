"""The fleet lab (4 gateways, 40 nodes): every host is a real sshd the product reaches, traffic leaves
from its dedicated address on a node far down the list, and the database work of one host's reconcile
does not grow with the fleet (hosts) or with the apps elsewhere in it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Gateway, HostSync, IPPool, Node, Placement, Region
from tests.integration.lab_fixtures import lab_config_for_session, require_lab_prerequisites
from workers.lab import Lab, LabConfig, LabError
from workers.lab_register import lab_place, lab_register
from workers.reconcile import host_reconcile

pytestmark = [pytest.mark.lab]

GATEWAYS, NODES = 4, 40
SYNTHETIC_PODS = ipaddress.IPv4Network("198.19.0.0/17")  # a /23 per node for apps nobody runs
SYNTHETIC_POOL = "198.19.128.0/17"  # their egress addresses


@pytest.fixture(scope="module")
def fleet_lab() -> Iterator[Lab]:
    require_lab_prerequisites()
    base = lab_config_for_session(offset=1)
    lab = Lab(LabConfig(prefix=base.prefix, index=base.index, gateways=GATEWAYS, nodes=NODES))
    try:
        lab.down()
        lab.up()
    except LabError as exc:
        lab.down()
        pytest.fail(f"could not build the fleet lab: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.down()


def converge(*, max_rounds: int = 6) -> dict[str, int]:
    """What the workers do, inline: gateways, then nodes, until nothing is owed. Changes per host."""
    changes: dict[str, int] = {}
    for _ in range(max_rounds):
        for model, kind in ((Gateway, "gateway"), (Node, "node")):
            for pk in model.objects.filter(enabled=True).values_list("pk", flat=True):
                result = host_reconcile(kind=kind, pk=pk)
                if result is not None and result.changed:
                    changes[result.host] = changes.get(result.host, 0) + 1
        if not HostSync.objects.exists():
            return changes
    raise AssertionError(f"not converged: {list(HostSync.objects.values('app__name', 'gateway__name', 'node__name'))}")


def settle(*, max_rounds: int = 6) -> None:
    """Reconcile only the hosts that owe an app work (gateways first) until none does."""
    for _ in range(max_rounds):
        owed = list(HostSync.objects.values_list("gateway_id", "node_id").distinct())
        if not owed:
            return
        for kind, pks in (("gateway", {g for g, _ in owed if g}), ("node", {n for _, n in owed if n})):
            for pk in sorted(pks):
                host_reconcile(kind=kind, pk=pk)
    raise AssertionError("hosts still owe work")


def test_every_host_of_the_fleet_answers_and_its_last_node_carries_traffic(fleet_lab):
    status = fleet_lab.status()
    assert len(status["hosts"]) == GATEWAYS + NODES
    assert status["healthy"], {h: s for h, s in status["hosts"].items() if not (s["sshd"] and s["reachable"])}
    last = f"node{NODES}"
    try:
        fleet_lab.add_app("far", last)
        assert fleet_lab.seen_ip("far") == fleet_lab.hosts[last].public_address
    finally:
        fleet_lab.remove_app("far")


def test_the_fleet_registered_and_a_toggle_on_one_node_touches_only_its_hosts(fleet_lab, transactional_db, settings):
    settings.EGRESS_SSH_KEY_FILE = str(fleet_lab.config.ssh_key_file)
    info = lab_register(fleet_lab, demo=False)
    assert Gateway.objects.count() == GATEWAYS and Node.objects.count() == NODES
    assert dict(Gateway.objects.values_list("name", "slot")) == {f"gw{n}": n for n in range(1, GATEWAYS + 1)}
    assert lab_register(fleet_lab, demo=False)["nodes"] == info["nodes"]  # idempotent
    # Every host reached over SSH with its pinned key and given the product's (empty) table, once.
    assert set(converge()) == set(fleet_lab.hosts)
    assert converge() == {}
    owner = get_user_model().objects.create_user(username="fleet-owner")
    app = services.app_create(owner=owner, region=Region.objects.get(slug="lab"), name="far")
    last = f"node{NODES}"
    try:
        lab_place(fleet_lab, name="far", node=last)
        assert fleet_lab.seen_ip("far") == fleet_lab.hosts[last].public_address
        services.egress_enable(app=app)
        changes = converge()
        app.refresh_from_db()
        assert app.egress_status == "assigned", app.egress_message
        ips = {ip.role: ip for ip in EgressIP.objects.select_related("gateway").filter(app=app)}
        assert fleet_lab.seen_ip("far") == ips["active"].address
        # The app's gateways and the one node it runs on; none of the other 39 nodes or 2 gateways.
        assert set(changes) == {ips["active"].gateway.name, ips["standby"].gateway.name, last}
    finally:
        fleet_lab.remove_app("far")


# --- database queries per reconcile ---------------------------------------------------------------------


def add_dedicated_apps(count: int, *, tag: str) -> None:
    """``count`` dedicated, assigned apps spread over every registered node (one /32 each, in a /23 the
    node gets for them) and with one address on each registered gateway in turn. Bulk rows: setup, not
    the thing measured."""
    region = Region.objects.get(slug="lab")
    owner, _ = get_user_model().objects.get_or_create(username="fleet-synthetic")
    pool = IPPool.objects.filter(cidr=SYNTHETIC_POOL).first() or services.pool_create(
        region=region, name="fleet-synthetic", cidr=SYNTHETIC_POOL
    )
    nodes = list(Node.objects.order_by("pk"))
    gateways = list(Gateway.objects.order_by("pk"))
    blocks = list(SYNTHETIC_PODS.subnets(new_prefix=23))
    block_of = {}  # pod CIDRs are kept sorted (IPv4 first): the block is not necessarily the last one
    for i, node in enumerate(nodes):
        block = blocks[int(node.name.removeprefix("node")) - 1]
        if str(block) not in node.pod_cidrs:
            services.host_update(host=node, pod_cidrs=[*node.pod_cidrs, str(block)])
        nodes[i] = Node.objects.get(pk=node.pk)
        block_of[node.pk] = block
    used = {node.pk: Placement.objects.filter(node=node, app__owner=owner).count() for node in nodes}
    apps = App.objects.bulk_create([
        App(owner=owner, region=region, name=f"{tag}{i:05d}", egress_type="dedicated", egress_status="assigned")
        for i in range(count)
    ])
    if apps and apps[0].pk is None:  # SQLite without RETURNING
        apps = list(App.objects.filter(owner=owner, name__startswith=tag).order_by("name"))
    rows, ips = [], []
    first = int(ipaddress.IPv4Network(SYNTHETIC_POOL).network_address) + 1 + EgressIP.objects.filter(pool=pool).count()
    now = timezone.now()
    for i, app in enumerate(apps):
        node = nodes[i % len(nodes)]
        address = block_of[node.pk].network_address + 1 + used[node.pk]
        used[node.pk] += 1
        rows.append(Placement(region=region, node=node, app=app, cidr=f"{address}/32", first_int=int(address),
                              last_int=int(address)))
        ips.append(EgressIP(pool=pool, address=str(ipaddress.IPv4Address(first + i)), address_int=first + i,
                            status="assigned", app=app, gateway=gateways[i % len(gateways)], role="active",
                            programmed=True, assigned_at=now, last_app=app, last_owner=owner))
    Placement.objects.bulk_create(rows)
    EgressIP.objects.bulk_create(ips)


def reconcile_queries(kind: str, pk: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        result = host_reconcile(kind=kind, pk=pk)
    assert result is not None
    return len(ctx.captured_queries)


def queries_of_one_toggle(app: App) -> dict[str, int]:
    """Database queries of each reconcile of one enable and one disable of ``app`` (placed on node1):
    its active gateway and node1 while they change, and again in the steady state."""
    node1 = Node.objects.get(name="node1")
    converge()
    services.egress_enable(app=app)
    active = EgressIP.objects.get(app=app, role="active").gateway
    counts = {"gateway, enable": reconcile_queries("gateway", active.pk)}
    converge_gateways = [g for g in Gateway.objects.filter(enabled=True) if g.pk != active.pk]
    for gw in converge_gateways:
        host_reconcile(kind="gateway", pk=gw.pk)
    counts["node, enable"] = reconcile_queries("node", node1.pk)
    counts["gateway, steady"] = reconcile_queries("gateway", active.pk)
    counts["node, steady"] = reconcile_queries("node", node1.pk)
    settle()
    assert App.objects.get(pk=app.pk).egress_status == "assigned"
    services.egress_disable(app=app)
    counts["node, disable"] = reconcile_queries("node", node1.pk)
    settle()
    return counts


def test_database_queries_per_reconcile_do_not_grow_with_the_fleet(fleet_lab, transactional_db, settings):
    """2 gateways, 2 nodes and 10 apps, then 4 gateways, 40 nodes and 1,010 apps: one host's reconcile
    runs the same number of queries. A query per node, per gateway or per app would fail it."""
    settings.EGRESS_SSH_KEY_FILE = str(fleet_lab.config.ssh_key_file)
    # The same lab seen as the default two-and-two (same hosts, keys and addresses): the small fleet.
    small_view = Lab(LabConfig(prefix=fleet_lab.prefix, index=fleet_lab.index, state_dir=fleet_lab.state_dir))
    lab_register(small_view, demo=False)
    assert (Gateway.objects.count(), Node.objects.count()) == (2, 2)
    owner = get_user_model().objects.create_user(username="fleet-owner")
    app = services.app_create(owner=owner, region=Region.objects.get(slug="lab"), name="probe")
    Placement.objects.create(region=app.region, node=Node.objects.get(name="node1"), app=app, cidr="198.18.64.200/32")
    add_dedicated_apps(10, tag="small")
    small = queries_of_one_toggle(App.objects.get(pk=app.pk))

    lab_register(fleet_lab, demo=False)
    assert (Gateway.objects.count(), Node.objects.count()) == (GATEWAYS, NODES)
    add_dedicated_apps(1000, tag="large")
    assert App.objects.filter(egress_type="dedicated").count() == 1010
    assert Placement.objects.filter(node__name="node1").count() > 20
    large = queries_of_one_toggle(App.objects.get(pk=app.pk))
    assert large == small, f"2 nodes, 10 apps: {small}; {NODES} nodes, 1,010 apps: {large}"

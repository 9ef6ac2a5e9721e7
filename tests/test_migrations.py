"""The move from tenant-declared source CIDRs to placements keeps what fits and says what it drops."""

from __future__ import annotations

import ipaddress

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.conftest import TEST_HOST_KEY

BEFORE = [("core", "0007_host_reconcile_retry_at")]
AFTER = [("core", "0009_remove_appsourcecidr")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_source_cidrs_become_placements_on_the_node_that_holds_them():
    old = _migrate(BEFORE)
    try:
        User = old.get_model("auth", "User")
        Region, Node, App = (old.get_model("core", m) for m in ("Region", "Node", "App"))
        AppSourceCIDR = old.get_model("core", "AppSourceCIDR")
        owner = User.objects.create(username="owner")
        lab, far = Region.objects.create(slug="lab", name="lab"), Region.objects.create(slug="far", name="far")

        def node(name, region, pods, n):
            return Node.objects.create(name=name, region=region, mgmt_address=f"198.18.250.{n}", host_key=TEST_HOST_KEY,
                                       transit_address=f"198.18.251.{n}", pod_cidrs=pods)

        node1 = node("node1", lab, ["198.18.64.0/24"], 1)
        node("node2", lab, ["198.18.65.0/24"], 2)
        node("far1", far, ["198.18.66.0/24"], 3)
        apps = {name: App.objects.create(owner=owner, region=lab, name=name) for name in ("fits", "nowhere", "greedy")}

        def cidr(app, value):
            net = ipaddress.IPv4Network(value)
            AppSourceCIDR.objects.create(app=app, cidr=value, first_int=int(net.network_address),
                                         last_int=int(net.broadcast_address))

        cidr(apps["fits"], "198.18.64.16/28")
        cidr(apps["nowhere"], "198.18.99.0/28")  # in no node's pods
        cidr(apps["nowhere"], "198.18.66.16/28")  # a node's pods, but of another region
        cidr(apps["greedy"], "0.0.0.0/0")
    finally:
        new = _migrate(AFTER)
    Placement, Event = new.get_model("core", "Placement"), new.get_model("core", "Event")
    assert list(Placement.objects.values_list("app__name", "node__name", "cidr")) == [("fits", "node1", "198.18.64.16/28")]
    assert Placement.objects.get().node_id == node1.pk
    dropped = {e.app.name: e for e in Event.objects.filter(kind="app.source_cidrs_dropped")}
    assert set(dropped) == {"nowhere", "greedy"}
    assert dropped["nowhere"].data["dropped"] == ["198.18.66.16/28", "198.18.99.0/28"]
    assert dropped["greedy"].level == "warning" and "0.0.0.0/0" in dropped["greedy"].message
    assert "platform reports" in dropped["greedy"].message
    with pytest.raises(LookupError):
        new.get_model("core", "AppSourceCIDR")
    # Back to the newest state for the rest of the session.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

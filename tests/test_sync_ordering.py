"""A reconcile settles only the requests whose desired state it read: a request made while a reconcile of
the same host is in flight waits for the next one, even when the host already owed the app a reconcile.

The workers' half is played by hand here (the plan read, then the bookkeeping of a verified apply), in
the order a storm of toggles produced it: the lab version is tests/fault/test_faults.py's storm test.
"""

from __future__ import annotations

import pytest

from egressportal.core import services
from egressportal.core.desired import gateway_desired, node_desired
from egressportal.core.models import App, EgressStatus, HostSync
from egressportal.core.services.hostsync import host_reconcile_succeeded

pytestmark = pytest.mark.django_db


def verified(host, plan) -> None:
    """What a worker reports once ``host`` holds ``plan``'s state."""
    host_reconcile_succeeded(host=host, plan=plan, changed=True, summary="applied", changes=(), duration=0.01)


def converge(infra) -> None:
    for _ in range(4):  # gateways, nodes, gateways again (disabling), as the follow-ups go
        for gw in infra["gateways"]:
            verified(gw, gateway_desired(gw))
        for node in infra["nodes"]:
            verified(node, node_desired(node))


def test_a_node_reconcile_that_read_the_disable_does_not_settle_the_re_enable(infra, make_app, alice):
    node = infra["nodes"][0]
    app = make_app(alice, "crawler")  # on node-a
    services.egress_enable(app=app)
    converge(infra)
    assert App.objects.get(pk=app.pk).egress_status == EgressStatus.ASSIGNED
    assert node_desired(node).state.steering, "the node steers the dedicated app"

    services.egress_disable(app=app)
    stale = node_desired(node)  # the node's reconcile reads: the app is shared, steer nothing
    assert not stale.state.steering
    services.egress_enable(app=app)  # while that reconcile applies
    verified(node, stale)

    # The node verified a state without the app's steering: it still owes the app a reconcile.
    assert HostSync.objects.filter(app=app, node=node).exists()
    for gw in infra["gateways"]:
        verified(gw, gateway_desired(gw))
    app.refresh_from_db()
    assert app.egress_status == EgressStatus.ASSIGNING, (app.egress_status, app.egress_message)
    fresh = node_desired(node)
    assert fresh.state.steering and fresh.settles
    verified(node, fresh)
    assert App.objects.get(pk=app.pk).egress_status == EgressStatus.ASSIGNED


def test_a_gateway_reconcile_that_read_the_enable_does_not_settle_the_disable(infra, make_app, alice):
    app = make_app(alice, "billing")
    gw = infra["gateways"][0]
    services.egress_enable(app=app)
    stale = gateway_desired(gw)  # the gateway's reconcile reads: hold the app's address
    assert stale.state.addresses
    services.egress_disable(app=app)  # while it applies
    services.egress_enable(app=app)
    services.egress_disable(app=app)
    verified(gw, stale)
    assert HostSync.objects.filter(app=app, gateway=gw).exists(), "the gateway still owes the disable"
    converge(infra)
    app.refresh_from_db()
    assert app.egress_status == EgressStatus.DISABLED
    assert not gateway_desired(gw).state.addresses


def test_renewing_what_a_host_owes_touches_no_other_host_or_app(infra, make_app, alice):
    a, b = make_app(alice, "a"), make_app(alice, "b")
    gw1, gw2 = infra["gateways"]
    node1, node2 = infra["nodes"]
    services.app_hosts_mark_pending(a, gateways=[gw1, gw2], nodes=[node1, node2])
    services.app_hosts_mark_pending(b, gateways=[gw1], nodes=[node1])
    before = dict(HostSync.objects.values_list("pk", "app_id"))
    services.app_hosts_mark_pending(a, gateways=[gw2], nodes=[node1])
    after = {
        (app_id, gateway_id, node_id): pk
        for pk, app_id, gateway_id, node_id in HostSync.objects.values_list("pk", "app_id", "gateway_id", "node_id")
    }
    assert len(after) == 6
    renewed = {after[(a.pk, gw2.pk, None)], after[(a.pk, None, node1.pk)]}
    assert not renewed & set(before), "the renewed rows are new rows"
    assert set(after.values()) - renewed <= set(before), "nothing else changed"

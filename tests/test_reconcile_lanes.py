"""Coalescing in two lanes (egressportal/core/services/reconcile.py): a sweep request is absorbed by any
waiting message; a user request only by a waiting user-lane message, never by a sweep's. The broker and
Redis are stand-ins here; tests/integration/test_lanes.py runs the same with a real worker and Redis."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from egressportal.celery import LANE_SWEEP, LANE_USER, RECONCILE_QUEUE, SWEEP_PRIORITY, SWEEP_QUEUE
from egressportal.core.models import Gateway, Node
from egressportal.core.services import reconcile as r

pytestmark = pytest.mark.django_db


class FakeRedis:
    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.expiries: dict[str, int] = {}

    def set(self, key, value, nx=False, ex=None):
        if nx and key in self.keys:
            return None
        self.keys[key] = value
        self.expiries[key] = ex
        return True

    def delete(self, *keys):
        for k in keys:
            self.keys.pop(k, None)


@pytest.fixture
def lanes(settings, monkeypatch):
    settings.EGRESS_RECONCILE_DISPATCH = "celery"
    settings.EGRESS_COALESCE_STALE_SECONDS = 30
    fake = FakeRedis()
    sent: list[dict] = []
    monkeypatch.setattr(r, "redis_client", lambda *a, **k: fake)
    monkeypatch.setattr(r.celery_app, "send_task", lambda name, **kw: sent.append(kw))
    return fake, sent


def test_a_user_request_is_not_absorbed_by_a_waiting_sweep_message(lanes, make_gateway):
    fake, sent = lanes
    gw = make_gateway()
    assert r.reconcile_sweep_dispatch([("gateway", gw.pk)]) == 1
    assert sent[-1]["queue"] == SWEEP_QUEUE and sent[-1]["priority"] == SWEEP_PRIORITY
    assert sent[-1]["kwargs"] == {"lane": LANE_SWEEP}
    assert fake.expiries[f"egress:sweep-queued:gateway:{gw.pk}"] == 30
    # The sweep's message waits: a user request still sends a user-lane message.
    assert r.reconcile_dispatch([("gateway", gw.pk)]) == 1
    assert sent[-1]["queue"] == RECONCILE_QUEUE and "priority" not in sent[-1] and "kwargs" not in sent[-1]
    # ... and a second one is absorbed by that user-lane message.
    assert r.reconcile_dispatch([("gateway", gw.pk)]) == 0
    assert len(sent) == 2


def test_a_sweep_request_is_absorbed_by_any_waiting_message(lanes, make_gateway, make_node):
    fake, sent = lanes
    gw, node = make_gateway(), make_node()
    assert r.reconcile_dispatch([("gateway", gw.pk)]) == 1  # a user message waits for the gateway
    assert r.reconcile_sweep_dispatch([("gateway", gw.pk), ("node", node.pk)]) == 1
    assert sent[-1]["args"] == ["node", node.pk]
    assert f"egress:sweep-queued:gateway:{gw.pk}" not in fake.keys
    assert r.reconcile_sweep_dispatch([("gateway", gw.pk), ("node", node.pk)]) == 0  # the node's waits
    assert len(sent) == 2


def test_a_stale_user_marker_does_not_absorb_a_sweep(lanes, make_gateway):
    fake, sent = lanes
    gw = make_gateway()
    Gateway.objects.filter(pk=gw.pk).update(reconcile_queued_at=timezone.now() - dt.timedelta(seconds=31))
    assert r.reconcile_sweep_dispatch([("gateway", gw.pk)]) == 1


def test_a_task_clears_only_its_own_lanes_marker(lanes, make_node):
    fake, sent = lanes
    node = make_node()
    r.reconcile_dispatch([("node", node.pk)])
    r.reconcile_sweep_dispatch([("node", node.pk)])  # absorbed: the user message waits
    Node.objects.filter(pk=node.pk).update(reconcile_queued_at=None)
    assert r.reconcile_sweep_dispatch([("node", node.pk)]) == 1
    r.reconcile_dispatch([("node", node.pk)])
    marker = f"egress:sweep-queued:node:{node.pk}"
    # The sweep's task starts: its marker goes, the user lane's stays (its message still waits).
    r.reconcile_lane_started(kind="node", pk=node.pk, lane=LANE_SWEEP)
    assert marker not in fake.keys
    assert Node.objects.get(pk=node.pk).reconcile_queued_at is not None
    fake.keys[marker] = "1"
    r.reconcile_lane_started(kind="node", pk=node.pk, lane=LANE_USER)
    assert Node.objects.get(pk=node.pk).reconcile_queued_at is None
    assert marker in fake.keys


def test_a_failed_send_releases_the_sweep_marker(lanes, make_gateway, monkeypatch):
    fake, sent = lanes
    gw = make_gateway()

    def down(name, **kw):
        raise OSError("broker down")

    monkeypatch.setattr(r.celery_app, "send_task", down)
    assert r.reconcile_sweep_dispatch([("gateway", gw.pk)]) == 0
    assert not fake.keys


def test_nothing_is_sent_when_dispatch_is_off(lanes, make_gateway, settings):
    fake, sent = lanes
    settings.EGRESS_RECONCILE_DISPATCH = "none"
    assert r.reconcile_sweep_dispatch([("gateway", make_gateway().pk)]) == 0
    assert not sent and not fake.keys

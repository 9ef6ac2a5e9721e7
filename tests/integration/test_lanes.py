"""Toggles ahead of sweeps, with a real worker on a real Redis: the sweep's reconciles wait on their own,
lowest-priority lane, and a user's request is never absorbed by a waiting sweep message
(egressportal/core/services/reconcile.py)."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from kombu.transport.redis import Channel

from egressportal.celery import LANE_SWEEP, RECONCILE_TASK, SWEEP_PRIORITY, SWEEP_QUEUE
from egressportal.celery import app as celery_app
from egressportal.core import services
from egressportal.core.models import App, EgressIP, Gateway, Node
from egressportal.core.services.reconcile import reconcile_sweep_dispatch
from tests.integration.worker_fixtures import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.worker]

# Sweep messages queued ahead of the toggle's: a sweep of a large fleet. Stand-ins for other hosts' messages:
# hosts that are gone (cheap to serve), so the test does not take minutes.
BACKLOG = 1500
GONE = 10**6


def _sweep_waiting(client: redis.Redis) -> int:
    return client.llen(SWEEP_QUEUE) + client.llen(f"{SWEEP_QUEUE}{Channel.sep}{SWEEP_PRIORITY}")


def test_a_toggle_overtakes_a_sweep_backlog(lab, start_worker):
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    stale = [*client.keys("egress:sweep-queued:*"), *client.keys(f"{SWEEP_QUEUE}*"), *client.keys("celery*")]
    if stale:  # what earlier tests of the session left in this Redis
        client.delete(*stale)
    hosts = [("gateway", pk) for pk in Gateway.objects.values_list("pk", flat=True)]
    hosts += [("node", pk) for pk in Node.objects.values_list("pk", flat=True)]
    start_worker(beat=False, prober=False, concurrency=2)
    with celery_app.producer_or_acquire() as producer:
        for i in range(BACKLOG):
            celery_app.send_task(RECONCILE_TASK, args=["gateway" if i % 2 else "node", GONE + i],
                                 kwargs={"lane": LANE_SWEEP}, queue=SWEEP_QUEUE, priority=SWEEP_PRIORITY,
                                 producer=producer)
    # The periodic sweep's messages for the lab's hosts, at the back; a second sweep while they wait sends
    # nothing (each host's marker is set).
    assert reconcile_sweep_dispatch(hosts) == len(hosts)
    assert reconcile_sweep_dispatch(hosts) == 0
    waiting = _sweep_waiting(client)
    assert waiting > BACKLOG // 2, waiting  # the worker is still on the backlog
    shop = App.objects.get(name="shop-api")
    # The user's request is not absorbed by the sweep messages waiting for the same hosts: it goes on the
    # user lane, which the worker serves first.
    services.egress_enable(app=shop)
    wait_for(lambda: App.objects.get(pk=shop.pk).egress_status == "assigned", timeout=90, what="shop-api assigned")
    left = _sweep_waiting(client)
    print(f"assigned with {left} of {waiting} sweep messages still waiting")
    # Ordering, not timing: the toggle's gateway and node reconciles ran while most of the sweep waited
    # (behind it, or absorbed by the hosts' sweep messages at the back, it would have waited for all).
    assert left >= waiting // 2, (left, waiting)
    assert lab.seen_ip("shop-api") == EgressIP.objects.get(app=shop, role="active").address
    # The backlog is still served (lower priority, not dropped).
    wait_for(lambda: _sweep_waiting(client) == 0, timeout=180, interval=0.5, what="the sweep backlog consumed")

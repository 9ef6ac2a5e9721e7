"""Worker-side metrics in a real Redis, and /readyz against a real Redis that stops and starts."""

from __future__ import annotations

import time

import pytest

from egressportal.ops import instruments
from egressportal.ops.store import metric_store

from .helpers import value

pytestmark = [pytest.mark.worker]


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def test_hooks_record_in_redis_and_metrics_renders_them(transactional_db, redis_server, staff_client, make_gateway):
    metric_store._quiet_until = 0.0
    gw = make_gateway("gw-metrics")
    before = scrape(staff_client)
    assert value(before, "egress_metrics_source_up", source="worker_metrics") == 1
    instruments.reconcile_succeeded(host=gw, duration=0.3)
    instruments.reconcile_failed(host=gw, ssh_error_kind="unreachable", duration=2.0)
    instruments.toggle_assigned(0.42)
    gw.health = "unhealthy"
    instruments.gateway_failed_over(gateway=gw)
    after = scrape(staff_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("egress_reconciles_total", kind="gateway", host="gw-metrics", outcome="success") == 1
    assert delta("egress_reconciles_total", kind="gateway", host="gw-metrics", outcome="failure") == 1
    assert delta("egress_reconcile_duration_seconds_count", kind="gateway", outcome="success") == 1
    assert delta("egress_reconcile_duration_seconds_bucket", kind="gateway", outcome="success", le="0.25") == 0
    assert delta("egress_reconcile_duration_seconds_bucket", kind="gateway", outcome="success", le="0.5") == 1
    assert delta("egress_reconcile_duration_seconds_bucket", kind="gateway", outcome="failure", le="+Inf") == 1
    assert delta("egress_reconcile_duration_seconds_sum", kind="gateway", outcome="failure") == pytest.approx(2.0)
    assert delta("egress_ssh_errors_total", kind="unreachable", operation="reconcile") == 1
    assert delta("egress_toggle_to_assigned_seconds_count") == 1
    assert delta("egress_toggle_to_assigned_seconds_bucket", le="0.5") == 1
    assert delta("egress_toggle_to_assigned_seconds_bucket", le="0.25") == 0
    assert delta("egress_gateway_failovers_total", gateway="gw-metrics") == 1


def test_metrics_inside_a_rolled_back_transaction_are_not_recorded(transactional_db, redis_server, staff_client, make_gateway):
    from django.db import transaction

    metric_store._quiet_until = 0.0
    gw = make_gateway("gw-rollback")
    before = scrape(staff_client)
    with pytest.raises(RuntimeError), transaction.atomic():
        instruments.reconcile_succeeded(host=gw, duration=0.1)
        raise RuntimeError("rolled back")
    after = scrape(staff_client)
    name = "egress_reconciles_total"
    assert value(after, name, host="gw-rollback") == value(before, name, host="gw-rollback") == 0


def test_queue_depth_is_the_length_of_each_celery_list(redis_server, staff_client, settings):
    from egressportal.ops.store import redis_client

    settings.CELERY_TASK_ROUTES = {"workers.tasks.health_check": {"queue": "health"}}
    client = redis_client()
    keys = ["celery", "celery\x06\x163", "health"]
    client.delete(*keys)
    client.rpush("celery", "m1", "m2", "m3")
    client.rpush("celery\x06\x163", "p1")  # kombu's list for priority 3
    client.rpush("health", "h1")
    try:
        text = scrape(staff_client)
        assert value(text, "egress_queue_messages", queue="celery") == 4
        assert value(text, "egress_queue_messages", queue="health") == 1
    finally:
        client.delete(*keys)


def test_readyz_follows_redis(redis_server, client, db, settings):
    # Details need the metrics token (the anonymous get the status only: tests/ops/test_http.py).
    settings.METRICS_TOKEN = "scrape-token-for-tests-0123456789"
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {settings.METRICS_TOKEN}"
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["broker"]["ok"] is True
    redis_server.stop()
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        assert time.monotonic() - started < 2.5
        assert response.status_code == 503
        body = response.json()
        assert body["failed"] == ["broker"]
        assert body["checks"]["database"]["ok"] is True
        assert "error" in body["checks"]["broker"]
        # With Redis down, recording a metric costs nothing and raises nothing.
        started = time.monotonic()
        for _ in range(20):
            instruments.toggle_assigned(0.5)
        assert time.monotonic() - started < 1.5
        # The scrape still answers from the database, with the Redis sources marked down.
        settings.METRICS_PUBLIC = True
        text = client.get("/metrics").content.decode()
        assert value(text, "egress_metrics_source_up", source="database") == 1
        assert value(text, "egress_metrics_source_up", source="broker") == 0
        assert value(text, "egress_metrics_source_up", source="worker_metrics") == 0
    finally:
        redis_server.start()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"

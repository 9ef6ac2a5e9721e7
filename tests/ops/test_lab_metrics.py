"""Metrics, heartbeat and logs of a real worker reconciling the real lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from egressportal.core import services
from egressportal.core.models import App
from egressportal.ops.store import metric_store
from tests.integration.worker_fixtures import ROOT, wait_for

from .helpers import samples, value

pytestmark = [pytest.mark.lab, pytest.mark.worker]


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("ops-staff", staff=True))
    return client


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def reconciles(text: str, outcome: str) -> float:
    return value(text, "egress_reconciles_total", outcome=outcome)


def test_metrics_move_with_a_real_enable(lab_world, start_worker, staff_client):
    metric_store._quiet_until = 0.0
    worker = start_worker()
    shop = App.objects.get(name="shop-api")
    before = scrape(staff_client)
    assigned_before = value(before, "egress_apps", status="assigned")
    # The lab is dual-stack: both addresses come with an IPv6 partner from the IPv6 pool.
    used_before = value(before, "egress_pool_used_addresses", pool="lab-public")
    used6_before = value(before, "egress_pool_used_addresses", pool="lab-public6")
    latency_before = value(before, "egress_toggle_to_assigned_seconds_count")
    success_before = reconciles(before, "success")

    services.egress_enable(app=shop)
    wait_for(lambda: App.objects.get(pk=shop.pk).egress_status == "assigned", timeout=30, what="shop-api assigned")
    # The latency is recorded right after the commit that made the app assigned.
    def latency_recorded() -> str | None:
        text = scrape(staff_client)
        return text if value(text, "egress_toggle_to_assigned_seconds_count") > latency_before else None

    after = wait_for(latency_recorded, timeout=10, what="the toggle latency observation")
    assert value(after, "egress_apps", status="assigned") == assigned_before + 1
    assert value(after, "egress_pool_used_addresses", pool="lab-public") == used_before + 2
    assert value(after, "egress_pool_used_addresses", pool="lab-public6") == used6_before + 2
    assert value(after, "egress_toggle_to_assigned_seconds_count") == latency_before + 1
    latency = value(after, "egress_toggle_to_assigned_seconds_sum") - value(before, "egress_toggle_to_assigned_seconds_sum")
    assert 0 < latency < 30
    # At least both gateways and node1 reconciled successfully for this enable.
    assert reconciles(after, "success") >= success_before + 3
    hosts = {lab["host"] for name, lab, _ in samples(after) if name == "egress_reconciles_total" and lab["outcome"] == "success"}
    assert {"gw1", "gw2", "node1"} <= hosts
    assert value(after, "egress_reconcile_duration_seconds_count", kind="gateway", outcome="success") >= 2
    # Host health from the probes (a probe round runs every second), the worker's heartbeat and beat's sweep.
    def gateways_healthy() -> str | None:
        text = scrape(staff_client)
        return text if value(text, "egress_host_health", kind="gateway", state="healthy") >= 2 else None

    after = wait_for(gateways_healthy, timeout=15, what="both gateways healthy in the metrics")
    beats = [v for name, lab, v in samples(after) if name == "egress_worker_heartbeat_timestamp_seconds"]
    assert beats and time.time() - max(beats) < 15
    wait_for(
        lambda: time.time() - value(scrape(staff_client), "egress_last_sweep_timestamp_seconds") < 3 * 2 + 5,
        timeout=15,
        what="a recent sweep",
    )
    # The worker writes JSON lines; task lines carry the task id.
    entries = [json.loads(line) for line in worker.tail(200_000).splitlines() if line.startswith("{")]
    assert any(e.get("task_id") for e in entries), worker.tail()
    # Lines written during a reconcile name the host (and the task).
    assert any(e.get("host") == "gw1" and e.get("task_id") for e in entries), worker.tail()
    assert any(e.get("msg", "").endswith("ready.") for e in entries)


def worker_health(*args: str, heartbeat: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        REDIS_URL=django_settings.CELERY_BROKER_URL,
        EGRESS_WORKER_HEARTBEAT_FILE=str(heartbeat),
    )
    return subprocess.run(
        [sys.executable, "manage.py", "worker_health", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )


def test_worker_health_command_follows_the_worker(lab_world, start_worker, tmp_path):
    heartbeat = tmp_path / "heartbeat"
    worker = start_worker(EGRESS_WORKER_HEARTBEAT_FILE=str(heartbeat), EGRESS_WORKER_HEARTBEAT_SECONDS="1")
    wait_for(heartbeat.exists, timeout=10, what="the heartbeat file")
    # Beat's first sweep (every 2 s in tests) lands within a few seconds.
    result = wait_for(
        lambda: (r := worker_health(heartbeat=heartbeat)).returncode == 0 and r, timeout=20, interval=0.5,
        what=lambda: worker_health(heartbeat=heartbeat).stderr,
    )
    assert "healthy" in result.stdout
    worker.stop()
    time.sleep(3)
    result = worker_health("--worker", "--max-age", "2", heartbeat=heartbeat)
    assert result.returncode == 1
    assert "heartbeat is" in result.stderr
    result = worker_health("--beat", "--sweep-max-age", "2", heartbeat=heartbeat)
    assert result.returncode == 1 and "last sweep" in result.stderr
    missing = worker_health("--worker", heartbeat=tmp_path / "never")
    assert missing.returncode == 1 and "no worker heartbeat" in missing.stderr

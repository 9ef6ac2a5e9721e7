"""The Celery application, beside the Django settings as Django projects keep it.

The portal only *sends* work, by task name (see services/reconcile.py), and never imports the
worker's code: ``workers/celery.py`` takes this app, registers the tasks and the worker's wiring, and
is what ``celery -A workers.celery worker|beat`` loads.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "egressportal.settings")

# Task names: the contract between the portal, which sends work by name, and workers/tasks.py.
RECONCILE_TASK = "workers.tasks.reconcile_host"
SWEEP_TASK = "workers.tasks.sweep"
WEBHOOK_TASK = "workers.tasks.deliver_webhook"
EMAIL_TASK = "workers.tasks.send_notification_email"

# Lanes (docs/ARCHITECTURE.md, "The reconcile loop"): reconciles a user or the system asked for (a write,
# a host's success, a health change) go on RECONCILE_QUEUE; the periodic sweep's on SWEEP_QUEUE, at the
# lowest message priority. Every worker consumes both, the user lane first (settings:
# queue_order_strategy "priority"; the priority also puts sweep messages last if a worker lists the
# queues the other way round), so a toggle never waits behind a sweep's backlog.
RECONCILE_QUEUE = "celery"
SWEEP_QUEUE = "sweep"
WORKER_QUEUES = f"{RECONCILE_QUEUE},{SWEEP_QUEUE}"  # a worker's --queues
SWEEP_PRIORITY = 9  # Redis transport: 0 is the highest, 9 the lowest
LANE_USER = "user"
LANE_SWEEP = "sweep"

app = Celery("egressportal")
app.config_from_object("django.conf:settings", namespace="CELERY")

__all__ = [
    "EMAIL_TASK", "LANE_SWEEP", "LANE_USER", "RECONCILE_QUEUE", "RECONCILE_TASK", "SWEEP_PRIORITY", "SWEEP_QUEUE",
    "SWEEP_TASK", "WEBHOOK_TASK", "WORKER_QUEUES", "app",
]

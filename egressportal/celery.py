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

app = Celery("egressportal")
app.config_from_object("django.conf:settings", namespace="CELERY")

__all__ = ["EMAIL_TASK", "RECONCILE_TASK", "SWEEP_TASK", "WEBHOOK_TASK", "app"]

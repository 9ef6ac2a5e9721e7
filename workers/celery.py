"""The Celery application: Redis broker, JSON, late acks, bounded tasks."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "egressportal.settings")

app = Celery("egressportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")

# Imported after ``app`` exists: the egressportal package imports this module.
from egressportal.ops.worker import install as ops_install  # noqa: E402

ops_install(app)  # structured logs, task ids on log lines, the heartbeat, the sweep time


@app.on_after_finalize.connect
def _schedule(sender: Celery, **_: object) -> None:
    from django.conf import settings

    sender.add_periodic_task(settings.EGRESS_SWEEP_SECONDS, sender.signature("workers.tasks.sweep"), name="sweep")
    sender.add_periodic_task(
        settings.EGRESS_HEALTH_SECONDS, sender.signature("workers.tasks.health_check"), name="health check"
    )

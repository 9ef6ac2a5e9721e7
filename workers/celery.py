"""The worker's Celery entry point (``celery -A workers.celery worker|beat``): the portal's app plus the
tasks, structured logs, the heartbeat and the periodic schedule."""

from __future__ import annotations

import contextlib
from pathlib import Path

import django
from celery import Celery
from django.conf import settings

from egressportal.celery import SWEEP_TASK, app
from egressportal.ops.worker import install as ops_install

# The worker's modules use the ORM from their first line: load the Django apps before importing them
# (the settings module is set by egressportal.celery).
django.setup()

from . import tasks  # noqa: E402 - needs the Django apps loaded just above

__all__ = ["app", "tasks"]

ops_install(app)  # structured logs, task ids on log lines, the heartbeat, the sweep time


# Beat keeps its state file under var/ (settings.CELERY_BEAT_SCHEDULE_FILENAME), which a fresh checkout
# does not have yet; beat opens it before any of its signals fire, so the directory is made here.
with contextlib.suppress(OSError):  # a worker that cannot write there does not need it
    Path(settings.CELERY_BEAT_SCHEDULE_FILENAME).parent.mkdir(parents=True, exist_ok=True)


@app.on_after_finalize.connect
def _schedule(sender: Celery, **_: object) -> None:
    sender.add_periodic_task(settings.EGRESS_SWEEP_SECONDS, sender.signature(SWEEP_TASK), name="sweep")
    # Health is not scheduled here: the probers (python manage.py prober, workers/prober.py) probe
    # continuously, without beat or the broker on the failover path.

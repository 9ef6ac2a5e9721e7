"""Celery wiring: structured logs and task ids in workers, the worker heartbeat, the sweep time.

``install(app)`` is called once from workers/celery.py, the worker's entry point.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from celery import Celery, bootsteps
from celery.signals import setup_logging, task_postrun, task_prerun
from django.conf import settings

from ..celery import SWEEP_TASK
from . import logs
from .liveness import record_sweep, worker_heartbeat

__all__ = ["HeartbeatStep", "install"]

logger = logging.getLogger(__name__)


class HeartbeatStep(bootsteps.StartStopStep):
    """Beats from the worker's own event loop: when the consumer wedges, the beat stops."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        interval = settings.EGRESS_WORKER_HEARTBEAT_SECONDS
        self._beat(worker)
        self.tref = worker.timer.call_repeatedly(interval, self._beat, (worker,), priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    @staticmethod
    def _beat(worker: Any) -> None:
        try:
            worker_heartbeat(worker.hostname)
        except Exception:  # a heartbeat never takes the worker down
            logger.debug("heartbeat failed", exc_info=True)


def _setup_logging(**_: Any) -> None:
    """Use the project's LOGGING (JSON lines, context, scrubbing) instead of Celery's own format."""
    logging.config.dictConfig(settings.LOGGING)


def _task_prerun(task_id: str | None = None, **_: Any) -> None:
    logs.clear()
    logs.bind(task_id=task_id)


def _task_postrun(task: Any = None, state: str | None = None, **_: Any) -> None:
    try:
        if task is not None and task.name == SWEEP_TASK and state == "SUCCESS":
            record_sweep()
    finally:
        logs.clear()


def install(app: Celery) -> None:
    app.steps["worker"].add(HeartbeatStep)
    setup_logging.connect(_setup_logging, weak=False)
    task_prerun.connect(_task_prerun, weak=False)
    task_postrun.connect(_task_postrun, weak=False)

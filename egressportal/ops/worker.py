"""Celery wiring: structured logs and task ids in workers, the worker heartbeat, the sweep time.

``install(app)`` is called once from workers/celery.py, the worker's entry point.
"""

from __future__ import annotations

import logging
import logging.config
import os
from typing import Any

from celery import Celery, bootsteps
from celery.signals import setup_logging, task_postrun, task_prerun, task_received
from celery.worker import state as worker_state
from django.conf import settings
from kombu.transport.redis import PRIORITY_STEPS, Channel

from ..celery import SWEEP_TASK
from . import logs
from .liveness import ConsumptionWatch, record_sweep, worker_heartbeat
from .store import redis_client

__all__ = ["HeartbeatStep", "install"]

logger = logging.getLogger(__name__)


STUCK_EXIT_CODE = 75  # EX_TEMPFAIL: "restart me"


class HeartbeatStep(bootsteps.StartStopStep):
    """Beats from the worker's own event loop: when the loop wedges, the beat stops. When the loop turns but
    the consumer takes nothing while its queue holds messages (``ConsumptionWatch``), the worker exits
    with ``STUCK_EXIT_CODE`` so that its supervisor starts a fresh one."""

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
        _consumption_check(worker)


_watch: ConsumptionWatch | None = None


def _queued(worker: Any) -> int | None:
    """Messages waiting in the queues this worker consumes (Redis lists), None when Redis cannot say."""
    try:
        names = [q.name for q in worker.consumer.task_consumer.queues]
    except AttributeError:  # the consumer is not (or no longer) set up
        names = [settings.CELERY_TASK_DEFAULT_QUEUE]
    try:
        client = redis_client(settings.CELERY_BROKER_URL, timeout=1.0)
        pipe = client.pipeline(transaction=False)
        for name in names:
            for step in PRIORITY_STEPS:  # kombu keeps a list per priority step (the sweep lane's: 9)
                pipe.llen(name if step == 0 else f"{name}{Channel.sep}{step}")
        return sum(int(n) for n in pipe.execute())
    except Exception:  # Redis down: no verdict now
        return None


def _consumption_check(worker: Any) -> None:
    global _watch
    if _watch is None:
        _watch = ConsumptionWatch(settings.EGRESS_WORKER_STUCK_SECONDS)
    free = int(getattr(worker, "concurrency", 1) or 1) - len(worker_state.active_requests)
    waiting = _queued(worker)
    if _watch.observe(waiting=waiting, free_slots=free):
        logger.error(
            "worker %s stopped consuming: %s messages wait, none received for %.0f s; exiting so that its "
            "supervisor starts a fresh one", worker.hostname, waiting, settings.EGRESS_WORKER_STUCK_SECONDS,
        )
        logging.shutdown()
        # Not a warm shutdown: that would wait on the very broker connection that is stuck. Tasks in
        # flight are redelivered (acks_late, reject on worker lost).
        os._exit(STUCK_EXIT_CODE)


def _task_received(**_: Any) -> None:
    if _watch is not None:
        _watch.received()


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
    task_received.connect(_task_received, weak=False)

"""Celery tasks: thin wrappers that take ids, call the worker's job, and own retries."""

from __future__ import annotations

import logging
import random

from celery import shared_task
from django.conf import settings

from egressportal.celery import EMAIL_TASK, LANE_USER, RECONCILE_QUEUE, RECONCILE_TASK, SWEEP_TASK, WEBHOOK_TASK
from egressportal.core.models import host_model
from egressportal.core.services.reconcile import (
    reconcile_mark_queued,
    reconcile_rerun_pending,
    reconcile_retry_expected,
)
from egressportal.dataplane import DataplaneValueError
from egressportal.notifications.services import notification_email_send, webhook_attempt
from egressportal.ops.instruments import reconcile_busy

from .reconcile import HostBusy, host_reconcile
from .ssh import HostKeyMismatch, SSHError
from .sweep import sweep_all_hosts

__all__ = [
    "MAX_RETRIES", "backoff", "deliver_webhook", "reconcile_host", "send_notification_email", "sweep",
]

logger = logging.getLogger(__name__)

MAX_RETRIES = 8


def backoff(retries: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter (AWS style): spreads retries of
    many hosts that failed together."""
    return random.uniform(base / 2, min(cap, base * 2**retries))  # noqa: S311 - jitter, not crypto


# max_retries=None: waiting for another worker's lease on the host is retried
# until it is free (the lease expires); failures pass their own limit below.
# The names are egressportal/celery.py's: the portal sends by name and never imports this module.
@shared_task(bind=True, name=RECONCILE_TASK, acks_late=True, ignore_result=True, max_retries=None)
def reconcile_host(self, kind: str, pk: int, lane: str = LANE_USER, only_if_asked: bool = False) -> dict | None:
    # ``lane``: "sweep" for the periodic sweep's messages (egressportal/core/services/reconcile.py).
    # ``only_if_asked``: the late retry of a request that found the host held (see HostBusy below).
    if only_if_asked and not reconcile_rerun_pending(kind=kind, pk=pk):
        return None  # the holder ran again for this request (it took the flag): nothing left to do
    try:
        result = host_reconcile(kind=kind, pk=pk, lane=lane)
    except HostBusy as busy:
        name = host_model(kind).objects.filter(pk=pk).values_list("name", flat=True).first()
        reconcile_busy(kind=kind, name=name or str(pk))
        if lane != LANE_USER:
            return None  # a sweep only wants the host verified: the holder's reconcile verifies it
        if busy.rerun:
            # The holder runs again for this request as soon as it is done. Only if it died meanwhile
            # (its lease then expires) is the flag still up later: this late retry runs then, else
            # does nothing.
            raise self.retry(
                countdown=settings.EGRESS_LEASE_SECONDS + random.uniform(0, 1),  # noqa: S311 - jitter
                max_retries=None, kwargs={"lane": lane, "only_if_asked": True},
            ) from None
        # No rerun flag (Redis unreachable): run again right after the holder.
        raise self.retry(countdown=random.uniform(0.2, 0.6), max_retries=None) from None  # noqa: S311
    except HostKeyMismatch:
        # Needs a person: the periodic sweep tries again, nothing is retried in a loop.
        return None
    except (SSHError, DataplaneValueError, OSError) as exc:
        if self.request.retries >= MAX_RETRIES:
            logger.warning("giving up retrying %s %s; the sweep takes over", kind, pk)
            reconcile_retry_expected(kind=kind, pk=pk, retry_in=settings.EGRESS_SWEEP_SECONDS)
            return None
        # A retry is scheduled: tell the coalescer so requests don't pile up tasks, and the apps when it runs.
        # It goes on the user lane whatever lane failed: user requests meanwhile are absorbed by it, so it
        # must not wait behind a sweep.
        countdown = backoff(self.request.retries)
        reconcile_mark_queued(kind=kind, pk=pk, retry_in=countdown)
        raise self.retry(
            exc=exc, countdown=countdown, max_retries=MAX_RETRIES, args=[kind, pk], kwargs={},
            queue=RECONCILE_QUEUE, priority=0,
        ) from None
    if result is None:
        return None
    return {"host": result.host, "changed": result.changed, "summary": result.summary, "duration": result.duration}


@shared_task(name=SWEEP_TASK, ignore_result=True, expires=60)
def sweep() -> int:
    return sweep_all_hosts()


WEBHOOK_MAX_RETRIES = 6


@shared_task(bind=True, name=WEBHOOK_TASK, acks_late=True, ignore_result=True,
             max_retries=WEBHOOK_MAX_RETRIES, time_limit=60, soft_time_limit=45)
def deliver_webhook(self, delivery_id: int) -> bool:
    """One attempt per run; a failure a later attempt may fix (timeout, 5xx, 429)
    is retried with exponential backoff and jitter (about 2 s, 4 s, ... 2 min)."""
    final = self.request.retries >= WEBHOOK_MAX_RETRIES
    countdown = backoff(self.request.retries, base=2.0, cap=120.0)
    outcome = webhook_attempt(delivery_id=delivery_id, final=final, retry_in=countdown)
    if outcome.retry:
        raise self.retry(countdown=countdown)
    return outcome.delivered


@shared_task(bind=True, name=EMAIL_TASK, acks_late=True, ignore_result=True,
             max_retries=5, time_limit=60, soft_time_limit=45)
def send_notification_email(self, user_id: int, event: str, app_id: int, message: str) -> bool:
    try:
        return notification_email_send(user_id=user_id, event=event, app_id=app_id, message=message)
    except OSError as exc:  # the mail server is unreachable: try again later
        raise self.retry(exc=exc, countdown=backoff(self.request.retries, base=5.0, cap=300.0)) from None

"""Celery tasks: thin wrappers that take ids, call a service, and own retries."""

from __future__ import annotations

import logging
import random

from celery import shared_task

logger = logging.getLogger(__name__)

MAX_RETRIES = 8


def backoff(retries: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter (AWS style): spreads retries of
    many hosts that failed together."""
    return random.uniform(base / 2, min(cap, base * 2**retries))  # noqa: S311 - jitter, not crypto


# max_retries=None: waiting for another worker's lease on the host is retried
# until it is free (the lease expires); failures pass their own limit below.
@shared_task(bind=True, name="workers.tasks.reconcile_host", acks_late=True, ignore_result=True, max_retries=None)
def reconcile_host(self, kind: str, pk: int) -> dict | None:
    from egressportal.core.services.hostsync import HostBusy, host_reconcile
    from workers.dataplane import DataplaneValueError
    from workers.ssh import HostKeyMismatch, SSHError

    try:
        result = host_reconcile(kind=kind, pk=pk)
    except HostBusy:
        from egressportal.ops.metrics import reconcile_busy

        reconcile_busy(kind=kind, pk=pk)
        # Another worker is on this host; run again right after it so that
        # changes it may not have seen are applied.
        raise self.retry(countdown=random.uniform(0.2, 0.6), max_retries=None) from None  # noqa: S311
    except HostKeyMismatch:
        # Needs a person: the periodic sweep tries again, nothing is retried in a loop.
        return None
    except (SSHError, DataplaneValueError, OSError) as exc:
        if self.request.retries >= MAX_RETRIES:
            logger.warning("giving up retrying %s %s; the sweep takes over", kind, pk)
            return None
        _mark_queued(kind, pk)
        raise self.retry(exc=exc, countdown=backoff(self.request.retries), max_retries=MAX_RETRIES) from None
    if result is None:
        return None
    return {"host": result.host, "changed": result.changed, "summary": result.summary, "duration": result.duration}


def _mark_queued(kind: str, pk: int) -> None:
    """A retry is scheduled: tell the coalescer so requests don't pile up tasks."""
    from django.utils import timezone

    from egressportal.core.models import Gateway, Node

    (Gateway if kind == "gateway" else Node).objects.filter(pk=pk).update(reconcile_queued_at=timezone.now())


@shared_task(name="workers.tasks.sweep", ignore_result=True, expires=60)
def sweep() -> int:
    """Drift repair: ask every enabled host to reconcile (coalesced). Hosts that
    lost their rules (reboot) are restored; pending work whose message was lost
    (Redis restart) is re-enqueued from what the database says."""
    from egressportal.core.services.sweeps import sweep_all_hosts

    return sweep_all_hosts()


@shared_task(name="workers.tasks.health_check", ignore_result=True, expires=5)
def health_check() -> dict:
    from egressportal.core.services.health import hosts_health_check

    return hosts_health_check()


WEBHOOK_MAX_RETRIES = 6


@shared_task(bind=True, name="workers.tasks.deliver_webhook", acks_late=True, ignore_result=True,
             max_retries=WEBHOOK_MAX_RETRIES, time_limit=60, soft_time_limit=45)
def deliver_webhook(self, delivery_id: int) -> bool:
    """One attempt per run; a failure a later attempt may fix (timeout, 5xx, 429)
    is retried with exponential backoff and jitter (about 2 s, 4 s, ... 2 min)."""
    from egressportal.notifications.services import webhook_attempt

    final = self.request.retries >= WEBHOOK_MAX_RETRIES
    countdown = backoff(self.request.retries, base=2.0, cap=120.0)
    outcome = webhook_attempt(delivery_id=delivery_id, final=final, retry_in=countdown)
    if outcome.retry:
        raise self.retry(countdown=countdown)
    return outcome.delivered


@shared_task(bind=True, name="workers.tasks.send_notification_email", acks_late=True, ignore_result=True,
             max_retries=5, time_limit=60, soft_time_limit=45)
def send_notification_email(self, user_id: int, event: str, app_id: int, message: str) -> bool:
    from egressportal.notifications.services import notification_email_send

    try:
        return notification_email_send(user_id=user_id, event=event, app_id=app_id, message=message)
    except OSError as exc:  # the mail server is unreachable: try again later
        raise self.retry(exc=exc, countdown=backoff(self.request.retries, base=5.0, cap=300.0)) from None

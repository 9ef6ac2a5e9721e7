"""Periodic drift repair (celery beat runs it every EGRESS_SWEEP_SECONDS)."""

from __future__ import annotations

from egressportal.core.models import Gateway, Node
from egressportal.core.services.drain import drain_progress
from egressportal.core.services.reconcile import reconcile_sweep_dispatch

__all__ = ["sweep_all_hosts"]


def sweep_all_hosts() -> int:
    """Request a reconcile of every enabled host on the sweep lane (lowest priority, served after every
    user-triggered reconcile; skipped for a host with a message already waiting), and move drains on.
    Hosts that lost their rules (reboot) are restored; pending work whose message was lost (Redis
    restart) is re-enqueued from what the database says. Returns how many messages were sent.
    (The time of the last sweep is recorded when the task succeeds: egressportal/ops/worker.py.)"""
    targets = [(g.kind, g.pk) for g in Gateway.objects.filter(enabled=True).only("pk")]
    targets += [(n.kind, n.pk) for n in Node.objects.filter(enabled=True).only("pk")]
    sent = reconcile_sweep_dispatch(targets)
    drain_progress()
    return sent

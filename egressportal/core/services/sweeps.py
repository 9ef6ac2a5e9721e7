"""Periodic drift repair."""

from __future__ import annotations

from django.core.cache import cache
from django.utils import timezone

from ..models import Gateway, Node
from .reconcile import reconcile_dispatch

__all__ = ["sweep_all_hosts", "last_sweep_at"]

_LAST_SWEEP_KEY = "egress:last_sweep_at"


def sweep_all_hosts() -> int:
    """Request a reconcile of every enabled host (coalesced with waiting ones).
    Returns how many messages were sent."""
    targets = [("gateway", pk) for pk in Gateway.objects.filter(enabled=True).values_list("pk", flat=True)]
    targets += [("node", pk) for pk in Node.objects.filter(enabled=True).values_list("pk", flat=True)]
    sent = reconcile_dispatch(targets)
    from .drain import drain_progress

    drain_progress()
    cache.set(_LAST_SWEEP_KEY, timezone.now().isoformat(), None)
    return sent


def last_sweep_at() -> str | None:
    return cache.get(_LAST_SWEEP_KEY)

"""Can this app be enabled? One answer for the portal (told before the click), the API and the allocator.

The allocator (services/network.py) picks addresses with ``addresses_reusable_by`` and
``addresses_takeable``; ``addresses_available`` counts with the very same rules, and
``egress_enable_problem`` adds the refusals of ``services.egress_enable``. So the portal never says the pool
ran out while the allocator would hand out an address (or the other way round).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from .models import App, EgressIP, EgressIPStatus, EgressType, Gateway, IPFamily, IPPool

__all__ = [
    "BEING_DELETED",
    "NO_GATEWAY",
    "OUT_OF_ADDRESSES",
    "OUT_OF_ADDRESSES6",
    "addresses6_available",
    "addresses_available",
    "addresses_reusable_by",
    "addresses_takeable",
    "egress_enable_problem",
    "egress_enable_refusal",
    "quarantine_cutoff",
    "quota_problem",
]

NO_GATEWAY = "This region has no egress gateway yet; dedicated egress cannot be enabled."
OUT_OF_ADDRESSES = "This region has run out of dedicated egress addresses; a platform admin must add a pool."
OUT_OF_ADDRESSES6 = (
    "This region has run out of dedicated IPv6 egress addresses; a platform admin must add an IPv6 pool."
)
BEING_DELETED = "This app is being deleted."


class QuotaFigures(Protocol):
    """A tenant's address quota and use (services.quotas.Quota)."""

    max_addresses: int
    addresses: int


def quarantine_cutoff(now: dt.datetime | None = None) -> dt.datetime:
    """Addresses released before this moment have served their quarantine."""
    return (now or timezone.now()) - dt.timedelta(days=settings.EGRESS_QUARANTINE_DAYS)


def addresses_reusable_by(app: App) -> Q:
    """Quarantined addresses that come back to ``app`` whatever their age: its own, or its owner's unless
    the app that held it still wants dedicated egress (it was only withdrawn during a drain)."""
    return Q(status=EgressIPStatus.QUARANTINED) & (
        Q(last_app=app) | (Q(last_owner=app.owner_id) & ~Q(last_app__egress_type=EgressType.DEDICATED))
    )


def addresses_takeable(now: dt.datetime | None = None) -> Q:
    """Rows anybody may be given: free, or out of a quarantine that has ended, but never an address withdrawn
    from an app that still wants dedicated egress (during a long drain), however long ago: it is that app's
    until it lets go."""
    return Q(status=EgressIPStatus.FREE) | (
        Q(status=EgressIPStatus.QUARANTINED, released_at__lt=quarantine_cutoff(now))
        & ~Q(last_app__egress_type=EgressType.DEDICATED)
    )


def addresses_available(*, app: App, now: dt.datetime | None = None) -> int:
    """How many addresses the allocator could give ``app`` in its region right now: never used ones, plus
    the rows ``addresses_takeable`` or ``addresses_reusable_by`` it (the allocator picks by the same rules)."""
    pools = list(IPPool.objects.filter(region_id=app.region_id, family=IPFamily.IPV4))
    if not pools:
        return 0
    rows = EgressIP.objects.filter(pool__in=pools).aggregate(
        rows=Count("id"),
        takeable=Count("id", filter=addresses_takeable(now) | addresses_reusable_by(app)),
    )
    return sum(p.size for p in pools) - rows["rows"] + rows["takeable"]


def addresses6_available(*, app: App, now: dt.datetime | None = None) -> int | None:
    """How many of the addresses the allocator could give ``app`` would have an IPv6 partner: the IPv6
    pools' never-used addresses plus the rows it could be given that already carry one
    (services/egress6.py). None: the region has no IPv6 pool (IPv4 only)."""
    pools = list(IPPool.objects.filter(region_id=app.region_id, family=IPFamily.IPV6))
    if not pools:
        return None
    taken = EgressIP.objects.filter(pool6__in=pools).aggregate(
        rows=Count("id"),
        takeable=Count("id", filter=addresses_takeable(now) | addresses_reusable_by(app)),
    )
    return sum(p.size for p in pools) - taken["rows"] + taken["takeable"]


def egress_enable_refusal(app: App) -> str | None:
    """What refuses an enable whatever the region's capacity (egress_enable raises it as a conflict)."""
    if app.delete_requested:
        return BEING_DELETED
    # An app running nowhere yet may enable: its addresses go into allow-lists before the first deploy.
    return None


def egress_enable_problem(app: App, *, held: int | None = None, quota: QuotaFigures | None = None) -> str | None:
    """Why enabling dedicated egress would fail right now, in words a user can act on; None when it would
    go ahead. Told before the user clicks (portal) with the refusals of ``egress_enable`` and the
    allocator's own counting, so nothing is offered that cannot happen and nothing refused that can.
    With ``quota`` (the owner's, services.quota_usage) the address quota is checked too."""
    refusal = egress_enable_refusal(app)
    if refusal:
        return refusal
    if held is None:
        held = EgressIP.objects.filter(app=app, status=EgressIPStatus.ASSIGNED).count()
    if held:
        return None  # re-enabling keeps the addresses it holds
    gateways = Gateway.objects.filter(region_id=app.region_id, enabled=True, draining=False).count()
    if gateways == 0:
        return NO_GATEWAY
    needed = max(1, min(settings.EGRESS_IPS_PER_APP, gateways))
    if addresses_available(app=app) < needed:
        return OUT_OF_ADDRESSES
    available6 = addresses6_available(app=app)
    if available6 is not None and available6 < needed:
        return OUT_OF_ADDRESSES6
    if quota is not None:
        return quota_problem(app, quota=quota, needed=needed)
    return None


def quota_problem(app: App, *, quota: QuotaFigures, needed: int, now: dt.datetime | None = None) -> str | None:
    """Whether enabling ``app`` (``needed`` addresses) would take its owner over the address quota, as
    ``services.quotas.quota_check_addresses`` would find after allocating: addresses taken back from the
    owner's quarantine count already while their quarantine lasts, any other address counts anew. Never
    stricter than the check itself (it counts only the quarantined addresses that still count as taken
    back), so an app the enable would serve is never refused here."""
    counted_back = EgressIP.objects.filter(
        addresses_reusable_by(app), pool__region_id=app.region_id, released_at__gte=quarantine_cutoff(now)
    ).count()
    new = needed - min(needed, counted_back)
    if quota.addresses + new <= quota.max_addresses:
        return None
    return (
        f"Your dedicated address quota is used up: enabling this app needs {new} more address"
        f"{'es' if new != 1 else ''}, and {quota.addresses} of your {quota.max_addresses} are in use (addresses "
        "you released count until their quarantine ends). Disable dedicated egress on an app you no longer "
        "need, or ask a platform admin to raise your quota."
    )

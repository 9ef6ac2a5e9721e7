"""Small presentation helpers for the portal templates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

from egressportal.core import selectors

register = template.Library()


@register.filter
def ago(value: dt.datetime | None) -> str:
    """'just now' for the last minute (where timesince says '0 minutes'), else '3 minutes ago'."""
    if not value:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value, depth=1)} ago"


@register.filter
def actor_for(event: Any, viewer: Any) -> str:
    """Who did it, as the viewer may know it (no other tenant's name): selectors.event_actor_label."""
    return selectors.event_actor_label(event, viewer=viewer)


@register.inclusion_tag("admin/_egress_overview.html")
def egress_admin_overview(limit: int = 20) -> dict:
    """Pools by utilization and gateways by health, for the admin index."""
    from egressportal.core.models import App, EgressStatus, Gateway

    pools = []
    for pool in selectors.pool_list()[:limit]:
        util = selectors.pool_utilization(pool)
        pools.append({"pool": pool, "util": util, "percent": round(util.percent_used)})
    pools.sort(key=lambda p: -p["percent"])
    gateways = list(Gateway.objects.select_related("region").order_by("region__slug", "name")[:limit])
    troubled = App.objects.filter(egress_status__in=[EgressStatus.FAILED, EgressStatus.DEGRADED]).count()
    return {"pools": pools, "gateways": gateways, "troubled_apps": troubled}

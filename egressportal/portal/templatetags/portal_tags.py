"""Small presentation helpers for the portal templates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

from egressportal.core import selectors
from egressportal.core.models import App, EgressStatus, Gateway
from egressportal.core.wording import duration_words, status_label

register = template.Library()


@register.filter
def ago(value: dt.datetime | None) -> str:
    """Relative time in words: 'just now' (never '0 minutes ago'), '40 seconds ago',
    '3 minutes ago'; for a time ahead, 'in 30 days'."""
    if not value:
        return ""
    seconds = (timezone.now() - value).total_seconds()
    if -5 < seconds < 5:
        return "just now"
    if 0 < seconds < 60:
        return f"{int(seconds)} seconds ago"
    if -60 < seconds < 0:
        return f"in {int(-seconds)} seconds"
    if seconds < 0:
        return f"in {timeuntil(value, depth=1)}"
    return f"{timesince(value, depth=1)} ago"


@register.filter
def actor_for(event: Any, viewer: Any) -> str:
    """Who did it, as the viewer may know it (no other tenant's name): selectors.event_actor_label."""
    return selectors.event_actor_label(event, viewer=viewer)


@register.simple_tag
def when(value: dt.datetime | None) -> SafeString | str:
    """A time both ways: the absolute time to the second (UTC) and how long ago (or ahead) it is."""
    if not value:
        return ""
    value = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time> <span class="when__relative">({})</span>',
        value.isoformat(),
        value.strftime("%Y-%m-%d %H:%M:%S %Z"),
        value.strftime("%Y-%m-%d %H:%M:%S %Z"),
        ago(value),
    )


@register.filter
def get(mapping: dict | None, key: Any) -> Any:
    return (mapping or {}).get(key, key)


@register.filter
def egress_label(status: str) -> str:
    """The one name of an egress status (presentation.STATUS_LABELS)."""
    return status_label(status or "")


@register.filter
def seconds_words(value: float | None) -> str:
    return duration_words(float(value)) if value is not None else ""


@register.filter
def ms_words(value: float | None) -> str:
    return duration_words(float(value) / 1000) if value is not None else ""


@register.inclusion_tag("admin/_egress_overview.html")
def egress_admin_overview(limit: int = 20) -> dict:
    """Pools by utilization and gateways by health, for the admin index."""
    pools = []
    for pool in selectors.pool_list()[:limit]:
        util = selectors.pool_utilization(pool)
        pools.append({"pool": pool, "util": util, "percent": round(util.percent_used)})
    pools.sort(key=lambda p: -p["percent"])
    gateways = list(Gateway.objects.select_related("region").order_by("region__slug", "name")[:limit])
    troubled = App.objects.filter(egress_status__in=[EgressStatus.FAILED, EgressStatus.DEGRADED]).count()
    return {"pools": pools, "gateways": gateways, "troubled_apps": troubled}

"""The "needs attention" part of the admin index."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django import template
from django.conf import settings
from django.utils import timezone

from egressportal.core import selectors
from egressportal.core.models import App, EgressStatus, Gateway, HealthStatus, Node
from egressportal.ops.liveness import last_sweep_timestamp, worker_heartbeats
from egressportal.ops.metrics import STUCK_AFTER

register = template.Library()

NEAR_EXHAUSTION_PERCENT = 80


@register.inclusion_tag("ops/admin_attention.html")
def egress_ops_attention(limit: int = 10) -> dict[str, Any]:
    """Pools near exhaustion, unhealthy hosts, stuck or failed apps, the last sweep and live workers."""
    pools = []
    for pool in selectors.pool_list():
        util = selectors.pool_utilization(pool)
        if util.percent_used >= NEAR_EXHAUSTION_PERCENT:
            pools.append({"pool": pool, "util": util, "percent": round(util.percent_used)})
    pools.sort(key=lambda p: -p["percent"])

    hosts: list[Any] = []
    for model in (Gateway, Node):
        hosts += list(
            model.objects.filter(enabled=True, health=HealthStatus.UNHEALTHY).select_related("region").order_by("name")[
                :limit
            ]
        )
        hosts += list(
            model.objects.filter(enabled=True, host_key_mismatch_at__isnull=False)
            .exclude(health=HealthStatus.UNHEALTHY)
            .select_related("region")
            .order_by("name")[:limit]
        )

    now = timezone.now()
    pending = [EgressStatus.ASSIGNING, EgressStatus.RELEASING]
    stuck_q = App.objects.filter(egress_status__in=pending, egress_requested_at__lt=now - STUCK_AFTER)
    failed_q = App.objects.filter(egress_status=EgressStatus.FAILED)
    apps = list(
        (stuck_q | failed_q).select_related("owner", "region").order_by("egress_requested_at", "id")[:limit]
    )
    for app in apps:
        app.stuck = app.egress_status in pending  # type: ignore[attr-defined]

    sweep = _read(last_sweep_timestamp)
    sweep_at = dt.datetime.fromtimestamp(sweep, tz=dt.UTC) if sweep else None
    sweep_stale = sweep is None or time.time() - sweep > 3 * settings.EGRESS_SWEEP_SECONDS
    beats = _read(worker_heartbeats) or {}
    live_workers = sorted(name for name, stamp in beats.items() if time.time() - stamp < 60)
    return {
        "near_exhaustion": pools,
        "threshold": NEAR_EXHAUSTION_PERCENT,
        "unhealthy_hosts": hosts,
        "attention_apps": apps,
        "stuck_count": stuck_q.count(),
        "failed_count": failed_q.count(),
        "stuck_minutes": int(STUCK_AFTER.total_seconds() // 60),
        "last_sweep_at": sweep_at,
        "sweep_stale": sweep_stale,
        "live_workers": live_workers,
    }


def _read(func: Any) -> Any:
    # The admin page must render while Redis is down: then it shows "unknown".
    try:
        return func()
    except Exception:
        return None

"""Recording host health: one probe result through the hysteresis (rules/health.py), and what a
gateway's change of health means (failover or failback on the nodes, the apps' status and events).

The probes themselves run in the workers (workers/probes.py)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ...ops import instruments
from ..models import App, EgressIP, EgressIPStatus, EgressStatus, EgressType, EventLevel, Gateway, HealthStatus, Node
from ..rules.health import ProbeResult, health_next
from .events import WORKER, event_record
from .hostsync import app_health_status, app_status_set
from .reconcile import reconcile_request

__all__ = ["apps_health_refresh", "health_changed", "health_record"]

logger = logging.getLogger(__name__)


def health_record(host: Gateway | Node, result: ProbeResult) -> bool:
    """Apply one probe result with hysteresis; returns True when health changed."""
    now = timezone.now()
    update = health_next(
        health=host.health,
        successes=host.health_successes,
        failures=host.health_failures,
        result=result,
        threshold=settings.EGRESS_HEALTH_FAILURE_THRESHOLD,
    )
    fields: dict[str, object] = {
        "health_checked_at": now,
        "health_successes": update.successes,
        "health_failures": update.failures,
    }
    if update.seen:
        fields["last_seen_at"] = now
    if update.message is not None:
        fields["health_message"] = update.message
    changed = update.changed_from(host.health)
    if changed:
        fields.update(health=update.health, health_changed_at=now)
    type(host).objects.filter(pk=host.pk).update(**fields)
    for key, value in fields.items():
        setattr(host, key, value)
    return changed


def health_changed(host: Gateway | Node) -> None:
    """After ``health_record`` reported a change: events, and for a gateway failover or failback."""
    logger.info("%s %s is now %s %s", host.kind, host.name, host.health, host.health_message)
    if isinstance(host, Gateway):
        _on_gateway_change(host)
        return
    event_record(
        kind=f"node.{host.health}",
        message=f"Node {host.name} is {host.health}. {host.health_message}".strip(),
        level=EventLevel.INFO if host.health == HealthStatus.HEALTHY else EventLevel.WARNING,
        actor=WORKER,
        node=host,
    )


def _on_gateway_change(gateway: Gateway) -> None:
    """Failover/failback: nodes re-steer (one transaction per node) and the
    apps on this gateway show what happened."""
    if gateway.health == HealthStatus.UNHEALTHY:
        instruments.gateway_failed_over(gateway=gateway)
    with transaction.atomic():
        healthy = gateway.health == HealthStatus.HEALTHY
        event_record(
            kind="gateway.healthy" if healthy else "gateway.unhealthy",
            message=f"Gateway {gateway.name} is {'healthy again' if healthy else 'unhealthy: ' + gateway.health_message}.",
            level=EventLevel.INFO if healthy else EventLevel.ERROR,
            actor=WORKER,
            gateway=gateway,
        )
        reconcile_request(nodes=Node.objects.filter(region_id=gateway.region_id, enabled=True))
    app_ids = set(
        EgressIP.objects.filter(gateway=gateway, status=EgressIPStatus.ASSIGNED).values_list("app_id", flat=True)
    )
    apps_health_refresh(app_ids)


def apps_health_refresh(app_ids: set[int]) -> None:
    """Settled dedicated apps show the health of their gateways (assigned or degraded, with why)."""
    now = timezone.now()
    for app in App.objects.filter(
        pk__in=app_ids,
        egress_type=EgressType.DEDICATED,
        egress_status__in=[EgressStatus.ASSIGNED, EgressStatus.DEGRADED],
        host_syncs__isnull=True,
    ):
        status, message = app_health_status(app)
        if (status, message) != (app.egress_status, app.egress_message):
            app_status_set(app, status, message, now)
            event_record(
                kind="egress.degraded" if status == EgressStatus.DEGRADED else "egress.assigned",
                message=message or "All gateways of this app are healthy again.",
                level=EventLevel.WARNING if status == EgressStatus.DEGRADED else EventLevel.INFO,
                actor=WORKER,
                app=app,
            )

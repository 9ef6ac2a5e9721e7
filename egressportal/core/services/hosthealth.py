"""Recording host health: the prober's verdicts (rules/health.py ``liveness_verdict``), and what a
gateway's change of health means (failover or failback on the nodes, the apps' status and events).

The probing and the verdicts run in the probers (workers/prober.py)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ...ops import instruments
from ..models import (
    App,
    EgressIP,
    EgressIPStatus,
    EgressStatus,
    EgressType,
    Event,
    EventLevel,
    Gateway,
    HealthStatus,
    HostSync,
    Node,
)
from ..rules.health import app_egress_health
from .events import WORKER, event_build, event_record
from .hostsync import _BATCH, _app_addresses, _apps_locked, apps_status_set
from .reconcile import reconcile_request

__all__ = ["apps_health_refresh", "failover_nodes", "health_changed", "health_seen", "health_set"]

logger = logging.getLogger(__name__)


def health_set(host: Gateway | Node, *, health: str, message: str | None) -> bool:
    """Record the prober's verdict (rules/health.py ``liveness_verdict``); returns True when health changed.
    ``message`` None keeps the recorded one."""
    now = timezone.now()
    fields: dict[str, object] = {"health_checked_at": now}
    if health == HealthStatus.HEALTHY:
        fields["last_seen_at"] = now
    if message is not None:
        fields["health_message"] = message
    changed = health != host.health
    if changed:
        fields.update(health=health, health_changed_at=now, health_successes=0, health_failures=0)
    type(host).objects.filter(pk=host.pk).update(**fields)
    for key, value in fields.items():
        setattr(host, key, value)
    return changed


def health_seen(kind: str, pks: list[int], *, answered: bool) -> None:
    """The prober's periodic mark: these hosts were checked now (and answered)."""
    now = timezone.now()
    fields: dict[str, object] = {"health_checked_at": now}
    if answered:
        fields["last_seen_at"] = now
    (Gateway if kind == Gateway.kind else Node).objects.filter(pk__in=pks).update(**fields)


def failover_nodes(gateway: Gateway) -> list[int]:
    """The nodes to re-steer when ``gateway`` fails or comes back: every enabled node of its region where an
    app with an address on it is placed (a node steers only what runs on it), unless the node is down (left
    to the retries and the sweep, so it never holds the others up)."""
    return list(
        Node.objects.filter(
            region_id=gateway.region_id,
            enabled=True,
            placements__app__egress_ips__gateway=gateway,
            placements__app__egress_ips__status=EgressIPStatus.ASSIGNED,
        )
        .exclude(health=HealthStatus.UNHEALTHY)
        .values_list("pk", flat=True)
        .distinct()
    )


def health_changed(host: Gateway | Node, *, resteer: bool = True) -> None:
    """After a change of health: events, and for a gateway failover or failback. ``resteer`` False: the
    caller (the prober) re-steers the nodes itself, in parallel, instead of asking the workers."""
    logger.info("%s %s is now %s %s", host.kind, host.name, host.health, host.health_message)
    if isinstance(host, Gateway):
        _on_gateway_change(host, resteer=resteer)
        return
    event_record(
        kind=f"node.{host.health}",
        message=f"Node {host.name} is {host.health}. {host.health_message}".strip(),
        level=EventLevel.INFO if host.health == HealthStatus.HEALTHY else EventLevel.WARNING,
        actor=WORKER,
        node=host,
    )


def _on_gateway_change(gateway: Gateway, *, resteer: bool) -> None:
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
        if resteer:
            reconcile_request(nodes=Node.objects.filter(region_id=gateway.region_id, enabled=True))
    app_ids = set(
        EgressIP.objects.filter(gateway=gateway, status=EgressIPStatus.ASSIGNED).values_list("app_id", flat=True)
    )
    apps_health_refresh(app_ids)


def apps_health_refresh(app_ids: set[int]) -> None:
    """Settled dedicated apps show the health of their gateways (assigned or degraded, with why): all of
    them in one transaction whose queries do not grow with the number of apps (the app rows locked in pk
    order like every other writer, their addresses read at once, one status write per distinct status,
    the events inserted in bulk, one status announcement for all the changes)."""
    if not app_ids:
        return
    now = timezone.now()
    with transaction.atomic():
        locked = _apps_locked(set(app_ids))
        # Apps still waiting for a host are the reconcile's to settle (services/hostsync.py).
        pending = set(HostSync.objects.filter(app_id__in=[app.pk for app in locked]).values_list("app_id", flat=True))
        apps = [
            app for app in locked
            if app.egress_type == EgressType.DEDICATED
            and app.egress_status in (EgressStatus.ASSIGNED, EgressStatus.DEGRADED)
            and app.pk not in pending
        ]
        addresses = _app_addresses([app.pk for app in apps])
        writes: list[tuple[App, str, str]] = []
        events: list[Event] = []
        for app in apps:
            status, message = app_egress_health(addresses.get(app.pk, []), ips_per_app=settings.EGRESS_IPS_PER_APP)
            if (status, message) == (app.egress_status, app.egress_message):
                continue
            writes.append((app, status, message))
            degraded = status == EgressStatus.DEGRADED
            events.append(event_build(
                kind="egress.degraded" if degraded else "egress.assigned",
                message=message or "All gateways of this app are healthy again.",
                level=EventLevel.WARNING if degraded else EventLevel.INFO,
                actor=WORKER,
                app=app,
            ))
        apps_status_set(writes, now)
        Event.objects.bulk_create(events, batch_size=_BATCH)

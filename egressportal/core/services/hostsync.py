"""The domain's side of a reconcile: what a host's success or failure means for the apps.

The worker (workers/reconcile.py) talks to the host; it reports here. A success marks addresses
programmed, settles the sync rows the applied plan settles, records events and moves each app forward
(``app_settle``: make before break, see docs/ARCHITECTURE.md); a failure is shown on the apps that were
waiting for the host.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ...ops import instruments
from ...ops import logs as ops_logs
from ..desired import GatewayPlan, NodePlan
from ..models import App, EgressIP, EgressIPRole, EgressStatus, EgressType, EventLevel, Gateway, HealthStatus, HostSync, Node
from ..rules.health import AppAddress, app_egress_health
from ..rules.settle import settle_step
from ..signals import egress_status_changed
from ..tenant_messages import host_security_message, reconcile_failure_message
from .drain import drain_progress
from .events import WORKER, event_record
from .network import egress_ips_release
from .reconcile import reconcile_request

__all__ = [
    "app_health_status",
    "app_settle",
    "app_status_set",
    "host_key_mismatch_record",
    "host_pending_apps",
    "host_reconcile_failed",
    "host_reconcile_succeeded",
]

logger = logging.getLogger(__name__)


def _host_kw(host: Gateway | Node) -> dict[str, Any]:
    return {host.kind: host}


def _label(host: Gateway | Node) -> str:
    return host.kind.capitalize()


def host_pending_apps(host: Gateway | Node) -> set[int]:
    """Apps that wait for this host (their sync rows name it)."""
    return set(HostSync.objects.filter(**_host_kw(host)).values_list("app_id", flat=True))


def host_reconcile_succeeded(
    *, host: Gateway | Node, plan: GatewayPlan | NodePlan, changed: bool, summary: str, changes: Iterable[str], duration: float
) -> int:
    """Record an applied and verified plan; returns how many apps it settled."""
    instruments.reconcile_succeeded(host=host, duration=duration)
    now = timezone.now()
    is_gateway = isinstance(host, Gateway)
    with transaction.atomic():
        # Same lock order as the services (app row first, then its addresses
        # and syncs), so a toggle racing this bookkeeping waits instead of deadlocking.
        list(App.objects.select_for_update().filter(pk__in=plan.apps).order_by("pk").values_list("pk", flat=True))
        if isinstance(plan, GatewayPlan):
            EgressIP.objects.filter(pk__in=plan.live_ip_ids, programmed=False).update(programmed=True)
            EgressIP.objects.filter(pk__in=plan.removed_ip_ids, programmed=True).update(programmed=False)
        settled_apps = set(HostSync.objects.filter(pk__in=plan.settles).values_list("app_id", flat=True))
        HostSync.objects.filter(pk__in=plan.settles).delete()
        fields = {
            "last_reconciled_at": now,
            "last_reconcile_duration": duration,
            "last_reconcile_error": "",
            "reconcile_failures": 0,
            "reconcile_retry_at": None,
            "last_seen_at": now,
        }
        type(host).objects.filter(pk=host.pk).update(**fields)
        if changed:
            type(host).objects.filter(pk=host.pk).update(reconcile_count=F("reconcile_count") + 1)
            event_record(
                kind=f"{host.kind}.reconciled",
                message=f"{host.name}: {summary} in {duration * 1000:.0f} ms.",
                actor=WORKER,
                data={"duration_ms": round(duration * 1000, 1), "changes": list(changes)},
                **_host_kw(host),
            )
        for app in App.objects.filter(pk__in=settled_apps):
            event_record(
                kind=f"egress.{host.kind}_configured",
                message=f"{_label(host)} {host.name} configured.",
                actor=WORKER,
                app=app,
                data={"duration_ms": round(duration * 1000, 1)},
                **_host_kw(host),
            )
    follow_gateways: set[int] = set()
    follow_nodes: set[int] = set()
    for app_id in settled_apps:
        g, n = app_settle(app_id=app_id)
        follow_gateways |= g
        follow_nodes |= n
    if is_gateway:
        # Make before break: nodes may now steer towards what this gateway holds.
        follow_nodes |= set(
            HostSync.objects.filter(app_id__in=settled_apps, node__isnull=False).values_list("node_id", flat=True)
        )
    else:
        try:
            drain_progress(region_id=host.region_id)
        except Exception:  # the reconcile itself succeeded; the sweep retries this
            logger.exception("drain progress after reconciling %s failed", host.name)
    if follow_gateways or follow_nodes:
        with transaction.atomic():
            reconcile_request(gateways=follow_gateways, nodes=follow_nodes)
    return len(settled_apps)


@ops_logs.logged_with(app_id="app_id")
def app_settle(*, app_id: int) -> tuple[set[int], set[int]]:
    """Move an app forward once hosts caught up; returns (gateway ids, node ids)
    that now have work because of it."""
    with transaction.atomic():
        app = App.objects.select_for_update().filter(pk=app_id).first()
        if app is None:
            return set(), set()
        remaining = list(HostSync.objects.filter(app=app).values_list("gateway_id", "node_id"))
        now = timezone.now()
        step = settle_step(
            dedicated=app.egress_type == EgressType.DEDICATED,
            status=app.egress_status,
            message=app.egress_message,
            gateways_left={g for g, _ in remaining if g},
            nodes_left={n for _, n in remaining if n},
        )
        if step.status is not None:
            app_status_set(app, step.status, step.message, now)
        if step.from_health:
            status, message = app_health_status(app)
            if app.egress_status != status or app.egress_message != message:
                latency = (now - app.egress_requested_at).total_seconds() if app.egress_requested_at else None
                became = status != app.egress_status
                app_status_set(app, status, message, now)
                if status == EgressStatus.ASSIGNED and became:
                    instruments.toggle_assigned(latency)
                    addresses = list(app.egress_ips.values_list("address", flat=True))
                    event_record(
                        kind="egress.assigned",
                        message="Dedicated egress is live: " + ", ".join(addresses) + ".",
                        actor=WORKER,
                        app=app,
                        data={"latency_ms": round(latency * 1000, 1) if latency is not None else None},
                    )
        if not step.release:
            return set(step.follow_gateways), set(step.follow_nodes)
        released = egress_ips_release(app=app, now=now)
        app_status_set(app, EgressStatus.DISABLED, "", now)
        if released:
            event_record(
                kind="egress.disabled",
                # In the owner's words: what "quarantine" means for their allow-lists.
                message=f"Back to shared egress. {', '.join(released)} "
                f"{'stays' if len(released) == 1 else 'stay'} reserved for this app for "
                f"{settings.EGRESS_QUARANTINE_DAYS} days; enabling dedicated egress again brings "
                f"{'it' if len(released) == 1 else 'them'} back.",
                actor=WORKER,
                app=app,
                data={"released": released, "quarantine_days": settings.EGRESS_QUARANTINE_DAYS},
            )
        if app.delete_requested:
            name = app.name
            event_record(kind="app.deleted", message=f"App {name} deleted.", actor=WORKER, app=app, subject=name)
            app.delete()
    return set(), set()


def app_health_status(app: App) -> tuple[str, str]:
    """assigned, or degraded with the reason, from the health of the app's gateways (rules/health.py)."""
    ips = [
        AppAddress(
            ip.address,
            ip.role == EgressIPRole.ACTIVE,
            ip.gateway.name if ip.gateway else None,
            bool(ip.gateway and ip.gateway.health == HealthStatus.UNHEALTHY),
        )
        for ip in app.egress_ips.select_related("gateway").all()
    ]
    return app_egress_health(ips, ips_per_app=settings.EGRESS_IPS_PER_APP)


def app_status_set(app: App, status: str, message: str, now: dt.datetime) -> None:
    """Write an app's egress status (the row and the object in hand); a change of the status itself is
    announced with ``signals.egress_status_changed`` (notifications listen)."""
    old_status = app.egress_status
    app.egress_status = status
    app.egress_message = message
    app.egress_updated_at = now
    App.objects.filter(pk=app.pk).update(egress_status=status, egress_message=message, egress_updated_at=now)
    if status != old_status:
        egress_status_changed.send(sender=App, app=app, old_status=old_status, new_status=status, message=message)


def app_failure_status(app: App) -> str:
    """What a failed reconcile makes of an app waiting for the host: "failed" only when its traffic
    cannot use dedicated egress (nothing steered to a live address yet, or on its way back to shared);
    an app whose traffic already leaves from a dedicated address is "degraded" while the workers retry."""
    if app.egress_type != EgressType.DEDICATED:
        return EgressStatus.FAILED
    if app.egress_status in (EgressStatus.ASSIGNED, EgressStatus.DEGRADED):
        return EgressStatus.DEGRADED
    steering = not app.host_syncs.filter(node__isnull=False).exists()
    live = app.egress_ips.filter(programmed=True).exists()
    return EgressStatus.DEGRADED if steering and live else EgressStatus.FAILED


def host_reconcile_failed(
    *, host: Gateway | Node, reason: str, app_ids: set[int], duration: float, ssh_error_kind: str | None
) -> None:
    """Record a failed reconcile on the host and on the apps that wait for it."""
    instruments.reconcile_failed(host=host, ssh_error_kind=ssh_error_kind, duration=duration)
    now = timezone.now()
    model = type(host)
    failures = host.reconcile_failures + 1
    model.objects.filter(pk=host.pk).update(
        last_reconcile_error=reason, reconcile_failures=failures, last_reconcile_duration=duration
    )
    # Staff read the reason (the host's row and event, the log); it can name management addresses and ports
    # and quote nft output about other tenants' apps, so the apps' owners get it in their own words.
    message = f"{_label(host)} {host.name} could not be configured: {reason}. Retrying automatically."
    tenant_message = reconcile_failure_message(host_kind=host.kind, host_name=host.name, error_kind=ssh_error_kind)
    with transaction.atomic():
        if failures == 1 or failures % 10 == 0:
            event_record(
                kind=f"{host.kind}.reconcile_failed",
                message=message,
                level=EventLevel.ERROR,
                actor=WORKER,
                data={"error": reason, "attempt": failures},
                **_host_kw(host),
            )
        pending = App.objects.filter(pk__in=app_ids, host_syncs__isnull=False).distinct()
        for app in pending:
            status = app_failure_status(app)
            if (status, tenant_message) == (app.egress_status, app.egress_message):
                continue
            was = app.egress_status
            app_status_set(app, status, tenant_message, now)
            if status != was or status == EgressStatus.FAILED:
                failed = status == EgressStatus.FAILED
                event_record(
                    kind="egress.failed" if failed else "egress.degraded",
                    message=tenant_message,
                    level=EventLevel.ERROR if failed else EventLevel.WARNING,
                    actor=WORKER,
                    app=app,
                    **_host_kw(host),
                )
    logger.warning("reconcile of %s %s failed: %s", host.kind, host.name, reason)


def host_key_mismatch_record(
    *, host: Gateway | Node, app_ids: set[int], presented_key: str, expected_fingerprint: str, presented_fingerprint: str
) -> None:
    """A host presented another SSH host key than the pinned one: a security event for staff, a short
    notice for the apps waiting for it. Nothing was sent to the host."""
    instruments.reconcile_failed(host=host, ssh_error_kind="host_key_mismatch")
    now = timezone.now()
    first = host.host_key_mismatch_at is None
    type(host).objects.filter(pk=host.pk).update(
        host_key_mismatch_at=host.host_key_mismatch_at or now,
        presented_host_key=presented_key or host.presented_host_key,
        last_reconcile_error="Host key mismatch: refused to connect.",
        reconcile_failures=host.reconcile_failures + 1,
    )
    message = (
        f"SECURITY: {host.name} presented a different SSH host key ({presented_fingerprint}) than the pinned one "
        f"({expected_fingerprint}). Nothing was sent to it. A platform admin must verify the host and accept the new key."
    )
    with transaction.atomic():
        if first:
            event_record(
                kind="host.key_mismatch",
                message=message,
                level=EventLevel.ERROR,
                actor=WORKER,
                data={"expected": str(expected_fingerprint), "presented": str(presented_fingerprint)},
                **_host_kw(host),
            )
        user_message = host_security_message(host_kind=host.kind, host_name=host.name)
        for app in App.objects.filter(pk__in=app_ids, host_syncs__isnull=False).distinct():
            if app.egress_message != user_message:
                status = EgressStatus.DEGRADED if app.egress_status == EgressStatus.ASSIGNED else EgressStatus.FAILED
                app_status_set(app, status, user_message, now)
    logger.error(
        "host key mismatch on %s %s: expected %s, presented %s",
        host.kind, host.name, expected_fingerprint, presented_fingerprint,
    )

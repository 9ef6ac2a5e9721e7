"""Draining a gateway for maintenance without breaking anybody's allow-list.

1. ``gateway_drain`` marks the gateway draining (no new addresses) and moves
   every active role away from it to the app's standby on a healthy gateway;
   the nodes re-steer (one transaction per node). Traffic no longer uses it.
2. With ``rehome``, once the nodes of an app are done, ``drain_progress``
   moves the app's address on the drained gateway to another gateway that
   holds none of the app's addresses: the *same* address, so allow-lists stay
   valid. When no such gateway exists the address is withdrawn into quarantine
   for its owner; ``gateway_undrain`` hands it back to the same app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from ..models import App, EgressIP, EgressIPRole, EgressIPStatus, EgressType, Gateway, HealthStatus, Node
from .apps import app_hosts_mark_pending
from .events import event_record
from .network import egress_ips_allocate
from .reconcile import reconcile_request

__all__ = ["DrainResult", "gateway_drain", "gateway_undrain", "drain_progress"]


@dataclass
class DrainResult:
    moved_active: int = 0
    kept_active: list[str] = field(default_factory=list)  # apps with no healthy alternative


def _region_nodes(region_id: int) -> list[int]:
    return list(Node.objects.filter(region_id=region_id, enabled=True).values_list("pk", flat=True))


def gateway_drain(*, gateway: Gateway, rehome: bool = True, actor: Any = None) -> DrainResult:
    result = DrainResult()
    nodes = _region_nodes(gateway.region_id)
    with transaction.atomic():
        actives = EgressIP.objects.filter(gateway=gateway, status=EgressIPStatus.ASSIGNED, role=EgressIPRole.ACTIVE)
        # Lock order as everywhere: app rows first (the workers do the same).
        app_ids = list(actives.values_list("app_id", flat=True))
        list(App.objects.select_for_update().filter(pk__in=app_ids).order_by("pk").values_list("pk", flat=True))
        Gateway.objects.filter(pk=gateway.pk).update(draining=True, drain_rehome=rehome)
        gateway.draining = True
        for ip in actives.select_related("app"):
            other = (
                EgressIP.objects.filter(app_id=ip.app_id, status=EgressIPStatus.ASSIGNED, role=EgressIPRole.STANDBY)
                .exclude(gateway=gateway)
                .exclude(gateway__health=HealthStatus.UNHEALTHY)
                .filter(gateway__enabled=True, gateway__draining=False)
                .first()
            )
            if other is None:
                result.kept_active.append(ip.app.name)
                continue
            # Two statements in one transaction: never two active addresses.
            EgressIP.objects.filter(pk=ip.pk).update(role=EgressIPRole.STANDBY)
            EgressIP.objects.filter(pk=other.pk).update(role=EgressIPRole.ACTIVE)
            app_hosts_mark_pending(ip.app, nodes=nodes)
            event_record(
                kind="egress.active_moved",
                message=f"Gateway {gateway.name} is being drained: traffic now leaves from {other.address} "
                f"(already in your allow-list); {ip.address} stays reserved for this app.",
                actor=actor,
                app=ip.app,
                gateway=gateway,
            )
            result.moved_active += 1
        event_record(
            kind="gateway.drain_started",
            message=f"Gateway {gateway.name} draining ({'moving addresses away' if rehome else 'active roles only'}): "
            f"{result.moved_active} active role(s) moved"
            + (f"; kept on it for lack of a healthy alternative: {', '.join(result.kept_active)}" if result.kept_active else "")
            + ".",
            actor=actor,
            gateway=gateway,
            data={"rehome": rehome, "moved_active": result.moved_active, "kept_active": result.kept_active},
        )
        reconcile_request(nodes=nodes)
    if rehome:
        drain_progress(region_id=gateway.region_id)
    return result


def drain_progress(*, region_id: int | None = None) -> int:
    """Move (or withdraw) standby addresses off draining gateways once no node
    owes their app a reconcile. Idempotent; called after node reconciles and
    by the sweep. Returns how many addresses moved."""
    draining = Gateway.objects.filter(draining=True, drain_rehome=True)
    if region_id is not None:
        draining = draining.filter(region_id=region_id)
    moved = 0
    for gateway in draining:
        ips = EgressIP.objects.filter(
            gateway=gateway, status=EgressIPStatus.ASSIGNED, role=EgressIPRole.STANDBY
        ).exclude(app__host_syncs__node__isnull=False)
        for ip in ips.select_related("app"):
            moved += _rehome_one(ip, gateway)
    return moved


def _rehome_one(ip: EgressIP, drained: Gateway) -> int:
    with transaction.atomic():
        # App row first, as everywhere else (no deadlock with a toggle).
        App.objects.select_for_update().filter(pk=ip.app_id).values_list("pk", flat=True).first()
        ip = EgressIP.objects.select_for_update(of=("self",)).select_related("app").get(pk=ip.pk)
        if ip.gateway_id != drained.pk or ip.role != EgressIPRole.STANDBY:
            return 0
        app = ip.app
        holding = set(EgressIP.objects.filter(app=app).exclude(pk=ip.pk).values_list("gateway_id", flat=True))
        target = (
            Gateway.objects.filter(region_id=drained.region_id, enabled=True, draining=False)
            .exclude(pk__in=holding | {drained.pk})
            .exclude(health=HealthStatus.UNHEALTHY)
            .annotate(load=Count("egress_ips", filter=Q(egress_ips__status=EgressIPStatus.ASSIGNED)))
            .order_by("load", "slot")
            .first()
        )
        nodes = _region_nodes(app.region_id)
        if target is not None:
            EgressIP.objects.filter(pk=ip.pk).update(gateway=target, programmed=False)
            app_hosts_mark_pending(app, gateways=[target.pk, drained.pk], nodes=nodes)
            event_record(
                kind="egress.address_moved",
                message=f"{ip.address} moved from gateway {drained.name} (drained) to {target.name}; "
                "your allow-list does not change.",
                actor="worker",
                app=app,
                gateway=target,
            )
            reconcile_request(gateways=[target.pk, drained.pk], nodes=nodes)
            return 1
        # No gateway can take it: withdraw it, reserved for this app (quarantine).
        EgressIP.objects.filter(pk=ip.pk).update(
            status=EgressIPStatus.QUARANTINED,
            released_at=timezone.now(),
            last_app=app,
            last_owner=app.owner_id,
            app=None,
            gateway=None,
            role="",
            programmed=False,
        )
        app_hosts_mark_pending(app, gateways=[drained.pk], nodes=nodes)
        event_record(
            kind="egress.address_withdrawn",
            message=f"{ip.address} was withdrawn while gateway {drained.name} is drained (no other gateway can "
            "hold it): redundancy is reduced. The address stays reserved for this app and comes back when the "
            "gateway returns; keep it in your allow-list.",
            actor="worker",
            app=app,
            gateway=drained,
        )
        reconcile_request(gateways=[drained.pk], nodes=nodes)
        return 1


def gateway_undrain(*, gateway: Gateway, actor: Any = None) -> int:
    """Put a gateway back into service and give apps back the redundancy (and
    the very addresses) they lost while it was drained. Returns apps topped up."""
    topped = 0
    with transaction.atomic():
        Gateway.objects.filter(pk=gateway.pk).update(draining=False, drain_rehome=True)
        event_record(kind="gateway.drain_ended", message=f"Gateway {gateway.name} is back in service.",
                     actor=actor, gateway=gateway)
    short = (
        App.objects.filter(region_id=gateway.region_id, egress_type=EgressType.DEDICATED)
        .annotate(n=Count("egress_ips", filter=Q(egress_ips__status=EgressIPStatus.ASSIGNED)))
        .filter(n__lt=settings.EGRESS_IPS_PER_APP)
    )
    for app in short:
        with transaction.atomic():
            App.objects.select_for_update().filter(pk=app.pk).values_list("pk", flat=True).first()
            before = set(EgressIP.objects.filter(app=app).values_list("pk", flat=True))
            ips = egress_ips_allocate(app=app)
            new = [ip for ip in ips if ip.pk not in before]
            if not new:
                continue
            app_hosts_mark_pending(app, gateways=[ip.gateway_id for ip in new], nodes=_region_nodes(app.region_id))
            event_record(
                kind="egress.address_restored",
                message="Redundancy restored: " + ", ".join(f"{ip.address} on {ip.gateway.name}" for ip in new) + ".",
                actor=actor,
                app=app,
            )
            reconcile_request(gateways=[ip.gateway_id for ip in new])
            topped += 1
    return topped


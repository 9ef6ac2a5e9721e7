"""Reads: what the portal, the API and the admin show. Tenant scoping lives here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from .models import (
    App,
    EgressIP,
    EgressIPRole,
    EgressIPStatus,
    EgressStatus,
    EgressType,
    Event,
    Gateway,
    HealthStatus,
    HostSync,
    IPFamily,
    IPPool,
    Node,
    Placement,
)
from .rules.desired import SteerIP, steering_choice
from .services.events import SYSTEM, WORKER

__all__ = [
    "PoolUtilization",
    "app_list",
    "app_get",
    "app_egress_get",
    "app_events",
    "app_next_attempt_at",
    "reserved_by_app",
    "apps_with_pending_work",
    "HOST_DETAIL_KINDS",
    "pool_list",
    "pool_utilization",
    "egress_summary",
    "app_has_ipv6",
    "event_actor_label",
    "node_placements",
    "app_placements",
    "AddressRow",
    "ADDRESS_STATES",
    "reserved_until",
    "app_reserved_addresses",
    "app_address_rows",
    "address_rows_for",
    "gateway_affected_apps",
]

# What a tenant is told about who did something that was not them: never another user's name.
STAFF_ACTOR_LABEL = "platform staff"
_MACHINE_ACTORS = {WORKER, SYSTEM}


def event_actor_label(event: Event, *, viewer: Any) -> str:
    """Who did it, as ``viewer`` may know it: staff see the user name; anyone else sees their own name,
    'worker' or 'system', and "platform staff" for every other person (a tenant learns no one's name)."""
    if getattr(viewer, "is_staff", False):
        return event.actor_name
    if event.actor_id is None:  # the workers, the system, or a person whose account is gone
        return event.actor_name if event.actor_name in _MACHINE_ACTORS else STAFF_ACTOR_LABEL
    if event.actor_id == getattr(viewer, "pk", None):
        return event.actor_name
    return STAFF_ACTOR_LABEL


def _apps_for(user: Any) -> QuerySet[App]:
    """Their own apps for everyone but staff (the platform too: it creates apps for owners and reports
    placements by the ids it got back); staff see all."""
    qs = App.objects.all()
    if not (user and user.is_authenticated):
        return qs.none()
    if not user.is_staff:
        qs = qs.filter(owner=user)
    return qs


def _region_ipv6() -> Exists:
    return Exists(IPPool.objects.filter(region=OuterRef("region"), family=IPFamily.IPV6))


def _assigned_ips() -> Prefetch:
    return Prefetch(
        "egress_ips", queryset=EgressIP.objects.filter(status=EgressIPStatus.ASSIGNED).select_related("gateway")
    )


def app_list(
    *,
    user: Any,
    search: str | None = None,
    region: str | None = None,
    status: str | None = None,
) -> QuerySet[App]:
    """The apps ``user`` may see (their own; staff see all), with everything a
    list shows loaded in a constant number of queries."""
    qs = _apps_for(user).select_related("region", "owner").annotate(region_ipv6=_region_ipv6()).prefetch_related(
        Prefetch("placements", queryset=Placement.objects.select_related("node")), _assigned_ips()
    )
    if search:
        qs = qs.filter(Q(name__icontains=search))
    if region:
        qs = qs.filter(region__slug=region)
    if status:
        qs = qs.filter(egress_status=status)
    return qs.order_by("name", "id")


def app_get(*, user: Any, pk: Any) -> App:
    """One app, or App.DoesNotExist when it does not exist *or belongs to
    someone else* (the two are indistinguishable on purpose)."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise App.DoesNotExist from None
    return app_list(user=user).get(pk=pk)


def app_egress_get(*, user: Any, pk: Any, addresses: bool = True) -> App:
    """One app as ``egress_summary`` needs it, and nothing more (the egress GET, polled while a toggle
    settles, and the PUT): the app row with ``region_ipv6``, and with ``addresses`` its assigned addresses
    and their gateways (two queries; ``app_get`` also joins the region and owner and reads the placements).
    Someone else's app is App.DoesNotExist, as in ``app_get``."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise App.DoesNotExist from None
    qs = _apps_for(user).annotate(region_ipv6=_region_ipv6())
    if addresses:
        qs = qs.prefetch_related(_assigned_ips())
    return qs.get(pk=pk)


# Per-host steps of a toggle ("Node node2 configured."): staff follow them; the
# owner's timeline tells the app's story (requested, live, with its duration).
HOST_DETAIL_KINDS = ("egress.gateway_configured", "egress.node_configured")


def app_events(*, app: App, limit: int | None = None, host_detail: bool = True) -> QuerySet[Event]:
    qs = Event.objects.filter(app=app).select_related("gateway", "node").order_by("-created_at", "-id")
    if not host_detail:
        qs = qs.exclude(kind__in=HOST_DETAIL_KINDS)
    return qs[:limit] if limit else qs


def app_next_attempt_at(app: App) -> dt.datetime | None:
    """When the workers next try a host this app is waiting for (a retry after
    a failure), or None when no retry is scheduled."""
    syncs = HostSync.objects.filter(app=app)
    times = [
        t
        for t in (
            *Gateway.objects.filter(pk__in=syncs.exclude(gateway=None).values("gateway_id")).values_list(
                "reconcile_retry_at", flat=True
            ),
            *Node.objects.filter(pk__in=syncs.exclude(node=None).values("node_id")).values_list(
                "reconcile_retry_at", flat=True
            ),
        )
        if t is not None
    ]
    return min(times) if times else None


@dataclass(frozen=True)
class PoolUtilization:
    size: int
    assigned: int
    quarantined: int

    @property
    def free(self) -> int:
        return max(0, self.size - self.assigned - self.quarantined)

    @property
    def percent_used(self) -> float:
        return 100.0 * (self.assigned + self.quarantined) / self.size if self.size else 100.0


def pool_list() -> QuerySet[IPPool]:
    """Pools annotated with assigned/quarantined counts (one query)."""
    # An IPv4 pool's addresses are its rows, an IPv6 pool's the partners (addresses6) on rows of IPv4
    # pools; a pool has only one of the two, so the two joins never multiply each other's rows.
    return IPPool.objects.select_related("region").annotate(
        n_assigned=Count("addresses", filter=Q(addresses__status=EgressIPStatus.ASSIGNED))
        + Count("addresses6", filter=Q(addresses6__status=EgressIPStatus.ASSIGNED)),
        n_quarantined=Count("addresses", filter=Q(addresses__status=EgressIPStatus.QUARANTINED))
        + Count("addresses6", filter=Q(addresses6__status=EgressIPStatus.QUARANTINED)),
    )


def pool_utilization(pool: IPPool) -> PoolUtilization:
    assigned = getattr(pool, "n_assigned", None)
    quarantined = getattr(pool, "n_quarantined", None)
    if assigned is None or quarantined is None:
        counts = (pool.addresses6 if pool.is_ipv6 else pool.addresses).aggregate(
            a=Count("id", filter=Q(status=EgressIPStatus.ASSIGNED)),
            q=Count("id", filter=Q(status=EgressIPStatus.QUARANTINED)),
        )
        assigned, quarantined = counts["a"], counts["q"]
    return PoolUtilization(size=pool.size, assigned=assigned, quarantined=quarantined)


def app_has_ipv6(app: App) -> bool:
    """Whether the app's region has an IPv6 pool (its addresses come with IPv6 partners); app_list's
    annotation when present, so a page of apps asks no more queries."""
    annotated = getattr(app, "region_ipv6", None)
    if annotated is not None:
        return bool(annotated)
    return IPPool.objects.filter(region_id=app.region_id, family=IPFamily.IPV6).exists()


def egress_summary(app: App, *, ipv6_available: bool | None = None) -> dict[str, Any]:
    """The egress object of the API (docs/ARCHITECTURE.md; type, status, ips, message, updated_at).
    Uses prefetched egress_ips when present (app_list, app_egress_get, or the addresses an egress write
    left the app with: services.egress_set), and ``ipv6_available`` when the caller knows it already."""
    ips = [ip for ip in app.egress_ips.all() if ip.status == EgressIPStatus.ASSIGNED]
    ips.sort(key=lambda ip: (ip.role != "active", ip.address_int))
    carrying = _carrying_gateway(app, ips)
    return {
        "type": app.egress_type,
        "status": app.egress_status,
        "ipv6_available": app_has_ipv6(app) if ipv6_available is None else ipv6_available,
        "ips": [
            {
                "address": ip.address,
                "address6": ip.address6,
                "gateway": ip.gateway.name if ip.gateway else None,
                "role": ip.role,
                "status": "live" if ip.programmed else "pending",
                # Which address carries the traffic now, by the rule the nodes follow (the portal's tags).
                "state": _assigned_state(app, ip, carrying),
            }
            for ip in ips
        ],
        "message": app.egress_message,
        "updated_at": app.egress_updated_at,
    }



def node_placements(node: Node) -> list[dict[str, Any]]:
    """A node's stored placements in the shape the platform reports them:
    [{"app": id, "addresses": [cidr, ...]}, ...] by app id, addresses in order (one query)."""
    out: dict[int, list[str]] = {}
    rows = Placement.objects.filter(node=node).order_by("app_id", *Placement.ORDER)
    for app_id, cidr in rows.values_list("app_id", "cidr"):
        out.setdefault(app_id, []).append(cidr)
    return [{"app": app_id, "addresses": cidrs} for app_id, cidrs in out.items()]


def app_placements(app: App) -> list[dict[str, Any]]:
    """Where an app runs: [{"node": name, "addresses": [cidr, ...]}, ...]. Uses prefetched placements
    (with their nodes) when present."""
    out: dict[str, list[str]] = {}
    rows = sorted(app.placements.all(), key=lambda p: (p.node.name, p.sort_key))
    for placement in rows:
        out.setdefault(placement.node.name, []).append(placement.cidr)
    return [{"node": node, "addresses": cidrs} for node, cidrs in out.items()]


# Addresses reserved for apps: what an owner must keep in allow-lists.


@dataclass(frozen=True)
class AddressRow:
    """One address of an app as its owner sees it: assigned to the app now, or
    reserved for it (withdrawn during a drain, or released when the app went
    back to shared egress) until ``reserved_until``."""

    address: str
    app_id: int | None
    app_name: str
    region: str
    role: str  # active | standby | "" (reserved, on no gateway)
    state: str  # see ADDRESS_STATES
    gateway: str
    reserved_until: dt.datetime | None
    address6: str | None = None  # its IPv6 partner (same gateway, role and reservation), if any


ADDRESS_STATES = {
    "in_use": "Carrying traffic",
    "standby": "Ready for failover",
    "gateway_down": "Gateway down",
    "pending": "Being configured",
    "releasing": "Being released",
    "reserved": "Reserved",
}


def reserved_until(ip: EgressIP, *, app: App | None = None) -> dt.datetime | None:
    """Until when an address in quarantine is kept from other tenants. None when
    it is assigned, or when it was withdrawn (a drain) from an app that still
    wants dedicated egress: it stays that app's until the app lets go."""
    if ip.status != EgressIPStatus.QUARANTINED or ip.released_at is None:
        return None
    app = app if app is not None else ip.last_app
    if app is not None and app.is_dedicated:
        return None
    return ip.released_at + dt.timedelta(days=settings.EGRESS_QUARANTINE_DAYS)


def _reserved_filter(now: dt.datetime | None = None) -> Q:
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.EGRESS_QUARANTINE_DAYS)
    return Q(status=EgressIPStatus.QUARANTINED) & (
        Q(released_at__gte=cutoff) | Q(last_app__egress_type=EgressType.DEDICATED)
    )


def apps_with_pending_work(app_ids: Sequence[int]) -> set[int]:
    """Which of these apps hosts still owe a reconcile (one query): a failed one among them is retrying."""
    return set(HostSync.objects.filter(app_id__in=list(app_ids)).values_list("app_id", flat=True).distinct())


def reserved_by_app(app_ids: Sequence[int]) -> dict[int, list[EgressIP]]:
    """Reserved addresses of many apps in one query (the dashboard's page of apps)."""
    out: dict[int, list[EgressIP]] = {}
    for ip in EgressIP.objects.filter(_reserved_filter(), last_app_id__in=list(app_ids)).order_by("released_at"):
        out.setdefault(ip.last_app_id, []).append(ip)
    return out


def app_reserved_addresses(app: App) -> list[EgressIP]:
    """Addresses out of service but still reserved for ``app``, soonest expiry first."""
    return list(EgressIP.objects.filter(_reserved_filter(), last_app=app).order_by("released_at", "address_int"))


def app_address_rows(app: App, *, reserved: Sequence[EgressIP] | None = None) -> list[AddressRow]:
    """Every address of the app, assigned first (active, then standby), then reserved."""
    assigned = [ip for ip in app.egress_ips.all() if ip.status == EgressIPStatus.ASSIGNED]
    assigned.sort(key=lambda ip: (ip.role != EgressIPRole.ACTIVE, ip.address_int))
    carrying = _carrying_gateway(app, assigned)
    rows = [
        AddressRow(
            address=ip.address,
            app_id=app.pk,
            app_name=app.name,
            region=app.region.slug,
            role=ip.role,
            state=_assigned_state(app, ip, carrying),
            gateway=ip.gateway.name if ip.gateway else "",
            reserved_until=None,
            address6=ip.address6,
        )
        for ip in assigned
    ]
    for ip in app_reserved_addresses(app) if reserved is None else reserved:
        rows.append(
            AddressRow(
                address=ip.address, app_id=app.pk, app_name=app.name, region=app.region.slug, role="",
                state="reserved", gateway="", reserved_until=reserved_until(ip, app=app), address6=ip.address6,
            )
        )
    return rows


def _carrying_gateway(app: App, assigned: Sequence[EgressIP]) -> str | None:
    """The gateway the nodes steer this app to right now (the same rule the nodes follow)."""
    if not app.is_dedicated or app.egress_status not in (EgressStatus.ASSIGNED, EgressStatus.DEGRADED):
        return None
    choice = steering_choice(
        SteerIP(
            ip.role == EgressIPRole.ACTIVE, ip.programmed, ip.gateway.health == HealthStatus.UNHEALTHY,
            ip.gateway.slot, ip.gateway.name,
        )
        for ip in assigned
        if ip.gateway
    )
    return choice[1] if choice else None


def _assigned_state(app: App, ip: EgressIP, carrying: str | None) -> str:
    if not app.is_dedicated:
        return "releasing"
    if ip.gateway and ip.gateway.health == HealthStatus.UNHEALTHY:
        return "gateway_down"  # before "being configured": it cannot be, while its gateway is down
    if not ip.programmed:
        return "pending"
    if carrying is not None and ip.gateway and ip.gateway.name == carrying:
        return "in_use"
    return "standby" if carrying is not None else "pending"


def address_rows_for(user: Any) -> list[AddressRow]:
    """Every address across the apps ``user`` may see (staff: all apps), assigned
    or still reserved, plus reserved addresses of their apps that are gone."""
    apps = list(app_list(user=user))
    reserved: dict[int, list[EgressIP]] = {app.pk: [] for app in apps}
    orphans: list[EgressIP] = []
    owner_q = Q() if user.is_staff else Q(last_owner=user)
    held = EgressIP.objects.filter(_reserved_filter()).filter(owner_q).select_related("pool__region")
    for ip in held.order_by("released_at", "address_int"):
        if ip.last_app_id in reserved:
            reserved[ip.last_app_id].append(ip)
        elif ip.last_app_id is None:
            orphans.append(ip)  # the app was deleted; the address is still held for its owner
    rows: list[AddressRow] = []
    for app in apps:
        rows.extend(app_address_rows(app, reserved=reserved[app.pk]))
    for ip in orphans:
        rows.append(
            AddressRow(address=ip.address, app_id=None, app_name="(deleted app)", region=ip.pool.region.slug,
                       role="", state="reserved", gateway="", reserved_until=reserved_until(ip),
                       address6=ip.address6)
        )
    return rows


def gateway_affected_apps(gateway: Gateway) -> list[EgressIP]:
    """The addresses (with their apps and owners) a drain of ``gateway`` moves."""
    return list(
        EgressIP.objects.filter(gateway=gateway, status=EgressIPStatus.ASSIGNED)
        .select_related("app", "app__owner")
        .order_by("role", "app__name")
    )


def app_waiting_hosts(*, app: App) -> list[Gateway | Node]:
    """The gateways and nodes that still owe ``app`` a reconcile (staff detail: their last errors)."""
    syncs = HostSync.objects.filter(app=app)
    return [
        *Gateway.objects.filter(pk__in=syncs.exclude(gateway=None).values("gateway_id")).order_by("name"),
        *Node.objects.filter(pk__in=syncs.exclude(node=None).values("node_id")).order_by("name"),
    ]

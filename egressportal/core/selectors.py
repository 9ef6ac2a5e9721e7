"""Reads: what the portal, the API and the admin show. Tenant scoping lives here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet

from .models import App, EgressIP, EgressIPStatus, Event, Gateway, HealthStatus, IPPool, Node, Placement, Region
from .services.events import SYSTEM, WORKER

__all__ = [
    "PoolUtilization",
    "app_list",
    "app_get",
    "app_events",
    "pool_list",
    "pool_utilization",
    "region_capacity",
    "egress_summary",
    "event_actor_label",
    "node_placements",
    "app_placements",
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
    qs = App.objects.all()
    if not (user and user.is_authenticated):
        return qs.none()
    if not user.is_staff:
        qs = qs.filter(owner=user)
    return qs


def app_list(
    *,
    user: Any,
    search: str | None = None,
    region: str | None = None,
    status: str | None = None,
) -> QuerySet[App]:
    """The apps ``user`` may see (their own; staff see all), with everything a
    list shows loaded in a constant number of queries."""
    qs = _apps_for(user).select_related("region", "owner").prefetch_related(
        "source_cidrs",
        Prefetch(
            "egress_ips",
            queryset=EgressIP.objects.filter(status=EgressIPStatus.ASSIGNED).select_related("gateway"),
        ),
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


def app_events(*, app: App, limit: int | None = None) -> QuerySet[Event]:
    qs = Event.objects.filter(app=app).select_related("gateway", "node").order_by("-created_at", "-id")
    return qs[:limit] if limit else qs


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
    return IPPool.objects.select_related("region").annotate(
        n_assigned=Count("addresses", filter=Q(addresses__status=EgressIPStatus.ASSIGNED)),
        n_quarantined=Count("addresses", filter=Q(addresses__status=EgressIPStatus.QUARANTINED)),
    )


def pool_utilization(pool: IPPool) -> PoolUtilization:
    assigned = getattr(pool, "n_assigned", None)
    quarantined = getattr(pool, "n_quarantined", None)
    if assigned is None or quarantined is None:
        counts = pool.addresses.aggregate(
            a=Count("id", filter=Q(status=EgressIPStatus.ASSIGNED)),
            q=Count("id", filter=Q(status=EgressIPStatus.QUARANTINED)),
        )
        assigned, quarantined = counts["a"], counts["q"]
    return PoolUtilization(size=pool.size, assigned=assigned, quarantined=quarantined)


@dataclass(frozen=True)
class RegionCapacity:
    gateways: int
    healthy_gateways: int
    free_addresses: int

    def problem(self, needed: int = 1) -> str | None:
        """What would stop an enable right now, in words a user can act on."""
        if self.gateways == 0:
            return "This region has no egress gateway yet; dedicated egress cannot be enabled."
        if self.free_addresses < needed:
            return "This region has run out of dedicated egress addresses; a platform admin must add a pool."
        return None


def region_capacity(region: Region) -> RegionCapacity:
    gateways = Gateway.objects.filter(region=region, enabled=True, draining=False)
    free = sum(pool_utilization(p).free for p in pool_list().filter(region=region))
    return RegionCapacity(
        gateways=gateways.count(),
        healthy_gateways=gateways.filter(health=HealthStatus.HEALTHY).count(),
        free_addresses=free,
    )


def egress_summary(app: App) -> dict[str, Any]:
    """The egress object of DESIGN.md (type, status, ips, message, updated_at).
    Uses prefetched egress_ips when present."""
    ips = [ip for ip in app.egress_ips.all() if ip.status == EgressIPStatus.ASSIGNED]
    ips.sort(key=lambda ip: (ip.role != "active", ip.address_int))
    return {
        "type": app.egress_type,
        "status": app.egress_status,
        "ips": [
            {
                "address": ip.address,
                "gateway": ip.gateway.name if ip.gateway else None,
                "role": ip.role,
                "status": "live" if ip.programmed else "pending",
            }
            for ip in ips
        ],
        "message": app.egress_message,
        "updated_at": app.egress_updated_at,
    }


def hosts_in_region(region: Region) -> tuple[QuerySet[Gateway], QuerySet[Node]]:
    return (
        Gateway.objects.filter(region=region, enabled=True),
        Node.objects.filter(region=region, enabled=True),
    )


def node_placements(node: Node) -> list[dict[str, Any]]:
    """A node's stored placements in the shape the platform reports them:
    [{"app": id, "addresses": [cidr, ...]}, ...] by app id, addresses in order (one query)."""
    out: dict[int, list[str]] = {}
    for app_id, cidr in Placement.objects.filter(node=node).order_by("app_id", "first_int").values_list("app_id", "cidr"):
        out.setdefault(app_id, []).append(cidr)
    return [{"app": app_id, "addresses": cidrs} for app_id, cidrs in out.items()]


def app_placements(app: App) -> list[dict[str, Any]]:
    """Where an app runs: [{"node": name, "addresses": [cidr, ...]}, ...]. Uses prefetched placements
    (with their nodes) when present."""
    out: dict[str, list[str]] = {}
    rows = sorted(app.placements.all(), key=lambda p: (p.node.name, p.first_int))
    for placement in rows:
        out.setdefault(placement.node.name, []).append(placement.cidr)
    return [{"node": node, "addresses": cidrs} for node, cidrs in out.items()]

"""The one place that decides desired state: the queries that load a snapshot of what a gateway or a
node must hold, handed to the pure rules in ``rules/desired.py``.

Read the pending syncs first, then the rest: under READ COMMITTED every sync read is reflected in the
state read after it, so settling exactly those rows after the apply is safe (a later request owes the
host a new row, never the one read here: services/apps.py, ``host_syncs_renew``).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable

from django.db.models import Q

from . import ipam, ipam6
from .models import (
    App,
    EgressIP,
    EgressIPRole,
    EgressIPStatus,
    EgressType,
    Gateway,
    HealthStatus,
    HostSync,
    IPFamily,
    IPPool,
    Node,
    Placement,
)
from .rules.desired import (
    GatewayIP,
    GatewayPlan,
    GatewaySnapshot,
    NodePlan,
    NodeSnapshot,
    SteerIP,
    gateway_plan,
    node_plan,
)

__all__ = [
    "GatewayPlan",
    "NodePlan",
    "gateway_desired",
    "gateway_snapshot",
    "node_desired",
    "node_snapshot",
]


def _by_app(rows: Iterable[tuple[int, str]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for app_id, cidr in rows:
        out[app_id].append(cidr)
    return out


# Pools change seldom and a gateway's snapshot is read on every reconcile: each pool's prefixes are
# computed once per process (per CIDR and exclusion list, so an edited pool is computed afresh). Bounded:
# a region has a handful of pools, the whole fleet a few hundred at most.
@functools.lru_cache(maxsize=1024)
def _usable_prefixes(cidr: str, excluded: tuple[str, ...]) -> tuple[str, ...]:
    if ipam6.is_ipv6_text(cidr):
        net6 = ipam6.parse_network6(cidr)
        return tuple(str(n) for n in ipam6.usable_prefixes6(net6, map(ipam6.parse_address6, excluded)))
    return tuple(str(n) for n in ipam.usable_prefixes(ipam.parse_network(cidr), map(ipam.parse_address, excluded)))


def gateway_snapshot(gateway: Gateway) -> GatewaySnapshot:
    pending = list(HostSync.objects.filter(gateway=gateway).values_list("id", "app_id"))
    held_here = EgressIP.objects.filter(gateway=gateway, status=EgressIPStatus.ASSIGNED)
    ips = [
        GatewayIP(ip_id, address, app_id, egress_type == EgressType.DEDICATED, address6)
        for ip_id, address, app_id, egress_type, address6 in held_here.values_list(
            "id", "address", "app_id", "app__egress_type", "address6"
        )
    ]
    # Every pool of the region, both families, held as anyIP whatever the gateway holds (one query).
    pool_prefixes: dict[str, tuple[str, ...]] = {}
    pool6_prefixes: dict[str, tuple[str, ...]] = {}
    for cidr, excluded, family in IPPool.objects.filter(region_id=gateway.region_id).order_by().values_list(
        "cidr", "excluded", "family"
    ):
        prefixes = pool6_prefixes if family == IPFamily.IPV6 else pool_prefixes
        prefixes[cidr] = _usable_prefixes(cidr, tuple(excluded or ()))
    # A subquery, not the list of app ids: 10,000 parameters cost more than the join.
    on_nodes = frozenset(
        HostSync.objects.filter(app_id__in=held_here.values("app_id"), node__isnull=False).values_list(
            "app_id", flat=True
        )
    )
    nodes = list(
        Node.objects.filter(region_id=gateway.region_id, enabled=True).values_list(
            "transit_address", "pod_cidrs", "transit_address6"
        )
    )
    region_nodes = [(transit, list(pods or [])) for transit, pods, _ in nodes]
    return GatewaySnapshot(
        public_interface=gateway.public_interface,
        pending=pending,
        ips=ips,
        apps_pending_on_nodes=on_nodes,
        # The placed addresses (on any node) of the apps holding an address here, each placement once.
        # A join, not "app_id IN (subquery)": on tables bulk-loaded since PostgreSQL last analyzed them, the
        # subquery's plan went through the wrong index of placements (0.15 ms per app: 150 ms at 1,000).
        app_cidrs=_by_app(
            Placement.objects.filter(app__egress_ips__gateway=gateway, app__egress_ips__status=EgressIPStatus.ASSIGNED)
            .order_by()
            .values_list("app_id", "cidr")
        ),
        region_nodes=region_nodes,
        draining=gateway.draining,
        node_transits6={transit: transit6 for transit, _, transit6 in nodes if transit6},
        pool_prefixes=pool_prefixes,
        pool6_prefixes=pool6_prefixes,
        transit6=bool(gateway.transit_address6),
    )


def node_snapshot(node: Node) -> NodeSnapshot:
    pending = list(HostSync.objects.filter(node=node).values_list("id", "app_id"))
    # The region's hosts, each read once: enabled gateways steer and carry the addresses read below; the
    # transit addresses of all (enabled or not) and the pods of enabled nodes are never steered.
    region_gateways = list(
        Gateway.objects.filter(region_id=node.region_id).values_list(
            "pk", "enabled", "slot", "transit_address", "transit_address6", "health", "name"
        )
    )
    region_nodes = list(
        Node.objects.filter(region_id=node.region_id).values_list("enabled", "pod_cidrs", "transit_address", "transit_address6")
    )
    enabled = {pk: (slot, name, health == HealthStatus.UNHEALTHY) for pk, on, slot, _, _, health, name in region_gateways if on}
    # Only what runs here, plus the apps this node owes a reconcile (one that moved away settles by being
    # steered no more): the snapshot, and so the reconcile, does not grow with apps on other nodes.
    placed = _by_app(Placement.objects.filter(node=node).order_by().values_list("app_id", "cidr"))
    rows = EgressIP.objects.filter(
        Q(app_id__in=Placement.objects.filter(node=node).values("app_id")) | Q(app_id__in={a for _, a in pending}),
        status=EgressIPStatus.ASSIGNED,
        app__egress_type=EgressType.DEDICATED,
        # A join on the enabled gateways, not their ids: with the ids the plan walked every assigned address
        # of the region, so a node's snapshot grew with the apps of other nodes (bench/node_scope.py).
        gateway__enabled=True,
    ).values_list("app_id", "role", "programmed", "gateway_id", "address6", "programmed6")
    # Thousands of rows, a few dozen distinct addresses as a node sees them (role, live, gateway, partner
    # state): one SteerIP each, shared by the apps.
    seen: dict[tuple[str, bool, int, bool, bool], SteerIP] = {}
    app_ips: dict[int, list[SteerIP]] = defaultdict(list)
    for app_id, role, programmed, gateway_id, address6, programmed6 in rows:
        key = (role, programmed, gateway_id, address6 is not None, programmed6)
        steer = seen.get(key)
        if steer is None:
            slot, name, unhealthy = enabled[gateway_id]
            has6 = address6 is not None
            steer = seen[key] = SteerIP(
                role == EgressIPRole.ACTIVE, programmed, unhealthy, slot, name, has6, has6 and not programmed6
            )
        app_ips[app_id].append(steer)
    transits = [
        address
        for hosts in ([g[3:5] for g in region_gateways], [n[2:4] for n in region_nodes])
        for pair in hosts
        for address in pair
        if address
    ]
    pending_apps = {app_id for _, app_id in pending}
    dedicated = App.objects.filter(pk__in=pending_apps, egress_type=EgressType.DEDICATED).values_list("pk", flat=True)
    return NodeSnapshot(
        pending=pending,
        pending_dedicated=frozenset(dedicated),
        gateways={slot: transit for _, on, slot, transit, _, _, _ in region_gateways if on},
        app_ips=app_ips,
        app_cidrs=placed,
        region_pod_cidrs=[cidr for on, pods, _, _ in region_nodes if on for cidr in pods or []],
        region_transit_addresses=transits,
        gateways6={slot: transit6 for _, on, slot, _, transit6, _, _ in region_gateways if on and transit6},
    )


def gateway_desired(gateway: Gateway) -> GatewayPlan:
    """What ``gateway`` must hold now, and which pending syncs that settles."""
    return gateway_plan(gateway_snapshot(gateway))


def node_desired(node: Node) -> NodePlan:
    """What ``node`` must hold now, and which pending syncs that settles."""
    return node_plan(node_snapshot(node))

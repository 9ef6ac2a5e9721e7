"""The one place that decides desired state: what each gateway and node must
hold, computed from the database, plus which pending app syncs a successful
apply of that state settles.

The rules (DESIGN.md, make before break):
- A gateway holds every address assigned to it whose app wants dedicated
  egress, and keeps the addresses of a disabling app until no node steers
  that app any more.
- A node steers an app only once one of its addresses is live on a gateway
  (programmed), towards the active gateway while it is healthy, else towards
  a healthy standby. Apps without dedicated egress are never steered.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_address, ip_network

from workers.dataplane import GatewayState, NodeState

from .models import (
    App,
    AppSourceCIDR,
    EgressIP,
    EgressIPRole,
    EgressIPStatus,
    EgressType,
    Gateway,
    HealthStatus,
    HostSync,
    Node,
)

__all__ = ["GatewayPlan", "NodePlan", "gateway_desired", "node_desired", "steering_choice"]


@dataclass
class GatewayPlan:
    state: GatewayState
    # Sync rows (ids) this state settles once applied.
    settles: list[int] = field(default_factory=list)
    # Addresses the state holds (ids), to mark programmed after the apply.
    live_ip_ids: list[int] = field(default_factory=list)
    # Addresses of this gateway the state no longer holds.
    removed_ip_ids: list[int] = field(default_factory=list)
    apps: set[int] = field(default_factory=set)


@dataclass
class NodePlan:
    state: NodeState
    settles: list[int] = field(default_factory=list)
    # app id -> gateway name it is steered to (for events)
    steered: dict[int, str] = field(default_factory=dict)
    apps: set[int] = field(default_factory=set)


def _cidrs_by_app(app_ids: set[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for app_id, cidr in AppSourceCIDR.objects.filter(app_id__in=app_ids).values_list("app_id", "cidr"):
        out[app_id].append(cidr)
    return out


def _region_pod_cidrs(region_id: int) -> list[str]:
    cidrs: list[str] = []
    for pods in Node.objects.filter(region_id=region_id, enabled=True).values_list("pod_cidrs", flat=True):
        cidrs.extend(pods or [])
    return cidrs


def gateway_desired(gateway: Gateway) -> GatewayPlan:
    """Read the pending syncs first, then the desired state: under READ
    COMMITTED every sync we read is reflected in the state read after it, so
    settling exactly those rows is safe."""
    pending = list(HostSync.objects.filter(gateway=gateway).values_list("id", "app_id"))
    ips = list(
        EgressIP.objects.filter(gateway=gateway, status=EgressIPStatus.ASSIGNED).values_list(
            "id", "address", "app_id", "app__egress_type"
        )
    )
    app_ids = {app_id for _, _, app_id, _ in ips}
    # Apps that some node still steers (or may): their addresses stay until the nodes are done.
    nodes_pending = set(
        HostSync.objects.filter(app_id__in=app_ids, node__isnull=False).values_list("app_id", flat=True)
    )
    cidrs = _cidrs_by_app(app_ids)
    addresses, snat, live, removed, held_apps = [], {}, [], [], set()
    for ip_id, address, app_id, egress_type in ips:
        if egress_type == EgressType.DEDICATED or app_id in nodes_pending:
            addresses.append(address)
            live.append(ip_id)
            held_apps.add(app_id)
            for cidr in cidrs.get(app_id, []):
                snat[cidr] = address
        else:
            removed.append(ip_id)
    routes: dict[str, str] = {}
    for transit, pods in Node.objects.filter(region_id=gateway.region_id, enabled=True).values_list(
        "transit_address", "pod_cidrs"
    ):
        for pod in pods or []:
            routes[pod] = transit
    # The region's pod CIDRs are exactly the routes' keys: no second query.
    guarded = list(routes) + list(snat)
    state = GatewayState.build(
        public_interface=gateway.public_interface,
        addresses=addresses,
        snat=snat,
        return_routes=routes,
        guarded_sources=guarded,
    )
    # A dedicated app's row settles when its address is held; a disabling app's
    # row settles only once its addresses are gone (nodes done).
    dedicated = {app_id for _, _, app_id, t in ips if t == EgressType.DEDICATED}
    settles = [
        sync_id
        for sync_id, app_id in pending
        if app_id in dedicated or app_id not in held_apps
    ]
    return GatewayPlan(
        state=state,
        settles=settles,
        live_ip_ids=live,
        removed_ip_ids=removed,
        apps={app_id for _, app_id in pending} | app_ids,
    )


def steering_choice(ips: list[tuple[str, bool, str, int, str]]) -> tuple[int, str] | None:
    """Pick the gateway slot for an app from its addresses
    [(role, programmed, gateway health, slot, gateway name)]: the active one
    while its gateway is not unhealthy, else a healthy standby, else the
    active one anyway (failing over to a dead gateway helps nobody)."""
    live = [ip for ip in ips if ip[1]]
    if not live:
        return None
    live.sort(key=lambda ip: (ip[0] != EgressIPRole.ACTIVE, ip[3]))
    for _role, _, health, slot, name in live:
        if health != HealthStatus.UNHEALTHY:
            return slot, name
    return live[0][3], live[0][4]


def node_desired(node: Node) -> NodePlan:
    pending = list(HostSync.objects.filter(node=node).values_list("id", "app_id"))
    gateways = list(
        Gateway.objects.filter(region_id=node.region_id, enabled=True).values_list("slot", "transit_address")
    )
    rows = EgressIP.objects.filter(
        status=EgressIPStatus.ASSIGNED,
        app__region_id=node.region_id,
        app__egress_type=EgressType.DEDICATED,
        gateway__enabled=True,
    ).values_list("app_id", "role", "programmed", "gateway__health", "gateway__slot", "gateway__name")
    per_app: dict[int, list[tuple[str, bool, str, int, str]]] = defaultdict(list)
    for app_id, role, programmed, health, slot, name in rows:
        per_app[app_id].append((role, programmed, health, slot, name))
    cidrs = _cidrs_by_app(set(per_app))
    steering: dict[str, int] = {}
    steered: dict[int, str] = {}
    for app_id, ips in per_app.items():
        choice = steering_choice(ips)
        if choice is None:
            continue
        slot, name = choice
        # While the preferred gateway is still being configured, traffic may
        # already use another live address of the app, but the node still
        # owes the app a reconcile (towards the preferred one).
        if choice == steering_choice([(r, True, h, s, n) for r, _, h, s, n in ips]):
            steered[app_id] = name
        for cidr in cidrs.get(app_id, []):
            steering[cidr] = slot
    internal: list[IPv4Network] = [ip_network(c) for c in _region_pod_cidrs(node.region_id)]
    for (transit,) in list(Gateway.objects.filter(region_id=node.region_id).values_list("transit_address")) + list(
        Node.objects.filter(region_id=node.region_id).values_list("transit_address")
    ):
        internal.append(ip_network(f"{ip_address(transit)}/32"))
    state = NodeState.build(steering=steering, gateways=dict(gateways), internal=internal)
    pending_apps = {app_id for _, app_id in pending}
    dedicated = set(
        App.objects.filter(pk__in=pending_apps, egress_type=EgressType.DEDICATED).values_list("pk", flat=True)
    )
    settles = [
        sync_id
        for sync_id, app_id in pending
        if (app_id in dedicated and app_id in steered) or (app_id not in dedicated)
    ]
    return NodePlan(state=state, settles=settles, steered=steered, apps=pending_apps)

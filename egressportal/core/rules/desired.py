"""Desired state of gateways and nodes as a pure function of a snapshot.

``egressportal.core.desired`` loads a snapshot from the database (plain values, nothing lazy);
``gateway_plan`` and ``node_plan`` decide from it what the host must hold and which pending app
syncs a successful apply of that state settles. No database, no Django: every rule here is
unit-tested on plain values (tests/unit/test_desired_rules.py).

The rules (docs/ARCHITECTURE.md, "Make before break"):
- A gateway holds every address assigned to it whose app wants dedicated egress, and keeps the
  addresses of a disabling app until no node steers that app any more.
- A gateway SNATs the placed addresses (on any node) of the apps holding an address on it, and
  nothing else; a node steers only the addresses placed on it (placements: reported by the platform,
  never by tenants). A pod placed for no app is never steered.
- A node steers an app only once one of its addresses is live on a gateway (programmed), towards the
  active gateway while it is not unhealthy, else towards a healthy standby, else the active one.
  Apps without dedicated egress are never steered.
- IPv6 rides along (issue 20): an app's address on a gateway may have an IPv6 partner. The gateway holds
  it beside the IPv4 one and SNATs the app's IPv6 placements to it; a node steers the app's IPv6
  placements to the very gateway it steers the IPv4 ones to (same slot, failover included), through that
  gateway's IPv6 transit address, and only when that gateway holds the app's IPv6 address (a partner given
  to a live address counts once that gateway's reconcile applied it: ``v6_pending``). IPv6 pod
  CIDRs route back through the nodes' IPv6 transit addresses; without one they are guarded (dropped),
  never leaked. An IPv6 placement without an IPv6 egress address is not steered: it leaves from the node.
- A gateway holds the pools of its region as anyIP (docs/ARCHITECTURE.md, "The gateway's address plan"),
  whatever addresses it holds, so the routes do not change with the number of apps: every IPv4 pool, and
  every IPv6 pool when it carries IPv6 (it has an IPv6 transit address, or holds an IPv6 partner); a
  gateway with neither holds no IPv6 pool. An address outside its pool's usable prefixes is held as its
  own /32 or /128.
- A drained gateway that holds no address any more is decommissioned: nothing of ours stays on it, not
  even its pools.
- A dedicated app's gateway sync settles once the gateway holds its address; a disabling app's
  gateway sync only once its addresses are gone. A dedicated app's node sync settles once the node
  steers it towards the gateway it prefers; a disabling app's node sync as soon as the node no longer
  steers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, collapse_addresses, ip_network
from typing import NamedTuple

from ...dataplane import GatewayState, NodeState, ipv4_address, uncovered
from ...dataplane import ip_address as valid_address

IPAddress = IPv4Address | IPv6Address

__all__ = [
    "GatewayIP",
    "GatewayPlan",
    "GatewaySnapshot",
    "NodePlan",
    "NodeSnapshot",
    "SteerIP",
    "gateway_plan",
    "node_plan",
    "steering_choice",
]


class GatewayIP(NamedTuple):
    """An address assigned to the gateway."""

    ip_id: int
    address: str
    app_id: int
    dedicated: bool  # the app wants dedicated egress (else it is disabling)
    address6: str | None = None  # its IPv6 partner, if any


class SteerIP(NamedTuple):
    """One assigned address of a dedicated app, as a node sees it."""

    active: bool  # role active (else standby)
    programmed: bool  # live on its gateway
    gateway_unhealthy: bool
    slot: int  # the gateway's routing slot
    gateway: str  # the gateway's name (for events)
    has_v6: bool = False  # the address has an IPv6 partner (live together with it)
    # The partner was added to an address that is live already (an IPv6 backfill) and its gateway does not
    # hold it yet: no IPv6 steered there, and the node still owes the app a reconcile.
    v6_pending: bool = False


@dataclass(frozen=True)
class GatewaySnapshot:
    public_interface: str
    # Pending sync rows of this gateway: (sync id, app id), read BEFORE the rest (see desired.py).
    pending: Sequence[tuple[int, int]]
    ips: Sequence[GatewayIP]
    # Apps that some node still owes a reconcile: a node may still steer them here.
    apps_pending_on_nodes: frozenset[int]
    # app id -> its placed addresses on every node (what the platform reported): the SNAT sources
    app_cidrs: Mapping[int, Sequence[str]]
    # Enabled nodes of the region: (transit address, pod CIDRs)
    region_nodes: Sequence[tuple[str, Sequence[str]]]
    # Drained for maintenance (no new addresses; its own move away).
    draining: bool = False
    # A node's IPv4 transit address -> its IPv6 one (nodes that have one): where IPv6 pods route back.
    node_transits6: Mapping[str, str] = field(default_factory=dict)
    # The region's IPv4 pools: CIDR -> the CIDRs covering the addresses it can hand out
    # (ipam.usable_prefixes), all held as anyIP.
    pool_prefixes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # The region's IPv6 pools: CIDR -> the CIDRs covering the addresses it can hand out
    # (ipam6.usable_prefixes6), all held as anyIP when the gateway carries IPv6.
    pool6_prefixes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # The gateway has an IPv6 transit address: it carries IPv6 (nodes steer IPv6 to it) even while it
    # holds no IPv6 address.
    transit6: bool = False


@dataclass(frozen=True)
class NodeSnapshot:
    pending: Sequence[tuple[int, int]]
    # Of the pending apps, those that want dedicated egress.
    pending_dedicated: frozenset[int]
    # Enabled gateways of the region: slot -> transit address
    gateways: Mapping[int, str]
    # Dedicated apps placed on this node (and those it owes a reconcile) -> their assigned addresses on
    # enabled gateways
    app_ips: Mapping[int, Sequence[SteerIP]]
    # app id -> its addresses placed on THIS node: the node steers these and nothing else
    app_cidrs: Mapping[int, Sequence[str]]
    # Pod CIDRs of the region's enabled nodes, and the transit addresses of all its hosts: traffic to
    # them stays inside the platform and is never steered.
    region_pod_cidrs: Sequence[str]
    region_transit_addresses: Sequence[str]
    # Enabled gateways of the region with an IPv6 transit address: slot -> that address
    gateways6: Mapping[int, str] = field(default_factory=dict)


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
    # A drained gateway that holds no address keeps nothing of ours (table, addresses, routes).
    decommission: bool = False


@dataclass
class NodePlan:
    state: NodeState
    settles: list[int] = field(default_factory=list)
    # app id -> gateway name it is steered to (for events)
    steered: dict[int, str] = field(default_factory=dict)
    apps: set[int] = field(default_factory=set)


def _is6(cidr: str) -> bool:
    return ":" in cidr


def gateway_plan(snap: GatewaySnapshot) -> GatewayPlan:
    # The addresses go to the state as the dataplane's validators return them (cached per text): typed
    # values, which the state takes as they are, instead of 10,000 texts it would look up again.
    held4: list[IPv4Address] = []
    held6: list[IPAddress] = []
    snat: dict[str, IPAddress] = {}
    live: list[int] = []
    removed: list[int] = []
    held_apps: set[int] = set()
    for ip in snap.ips:
        # Make before break, disabling side: the address stays while a node may still steer to it.
        if ip.dedicated or ip.app_id in snap.apps_pending_on_nodes:
            address = ipv4_address(ip.address)
            held4.append(address)
            address6 = valid_address(ip.address6) if ip.address6 else None
            if address6 is not None:
                held6.append(address6)
            live.append(ip.ip_id)
            held_apps.add(ip.app_id)
            for cidr in snap.app_cidrs.get(ip.app_id, ()):
                if not _is6(cidr):
                    snat[cidr] = address
                elif address6 is not None:
                    snat[cidr] = address6
        else:
            removed.append(ip.ip_id)
    addresses = [*held4, *held6]
    routes: dict[str, str] = {}
    pods_all: list[str] = []
    for transit, pods in snap.region_nodes:
        for pod in pods:
            pods_all.append(pod)
            via = snap.node_transits6.get(transit) if _is6(pod) else transit
            if via:
                routes[pod] = via
    # A drained gateway that holds no address keeps nothing of ours, its pools neither.
    decommission = snap.draining and not addresses
    state = GatewayState.build(
        public_interface=snap.public_interface,
        addresses=addresses,
        snat=snat,
        return_routes=routes,
        # Every pod CIDR of the region, routed back or not (an IPv6 one of a node without IPv6 transit).
        guarded_sources=pods_all + list(snat),
        pools=set() if decommission else _anyip_pools(snap, held4, held6),
    )
    dedicated = {ip.app_id for ip in snap.ips if ip.dedicated}
    settles = [sync_id for sync_id, app_id in snap.pending if app_id in dedicated or app_id not in held_apps]
    return GatewayPlan(
        state=state,
        settles=settles,
        live_ip_ids=live,
        removed_ip_ids=removed,
        apps={app_id for _, app_id in snap.pending} | {ip.app_id for ip in snap.ips},
        decommission=decommission,
    )


def _anyip_pools(
    snap: GatewaySnapshot, held4: Sequence[IPv4Address], held6: Sequence[IPAddress]
) -> set[IPv4Network | IPv6Network]:
    """The prefixes a gateway holds as anyIP: every pool of its region, whatever it holds (a toggle never
    adds or removes a pool route; the ARP guard keeps it to its own IPv4 addresses, proxy NDP entries to
    its own IPv6 ones), the IPv6 pools only when it carries IPv6 (an IPv6 transit address, or an IPv6
    partner held here). An address no pool covers (excluded since it was handed out, or its pool gone) is
    held as its own /32 or /128 prefix."""
    pools: set[IPv4Network | IPv6Network] = {ip_network(p) for prefixes in snap.pool_prefixes.values() for p in prefixes}
    # A bisection over the pools' bounds (10,000 addresses against dozens of pools).
    for address in uncovered(held4, collapse_addresses(pools)):
        pools.add(ip_network(f"{address}/32"))
    if held6 or snap.transit6:
        pools6 = {ip_network(p) for prefixes in snap.pool6_prefixes.values() for p in prefixes}
        for address6 in uncovered(held6, collapse_addresses(pools6), 6):
            pools6.add(ip_network(f"{address6}/128"))
        pools |= pools6
    return pools


def _preference(ip: SteerIP) -> tuple[bool, int]:
    return not ip.active, ip.slot


def _first_usable(ordered: Sequence[SteerIP]) -> tuple[int, str] | None:
    # ``ordered`` by preference: the first whose gateway is not unhealthy, else the first anyway.
    for ip in ordered:
        if not ip.gateway_unhealthy:
            return ip.slot, ip.gateway
    return (ordered[0].slot, ordered[0].gateway) if ordered else None


def steering_choice(ips: Iterable[SteerIP]) -> tuple[int, str] | None:
    """The gateway (slot, name) an app's traffic goes to: the active address's gateway while it is not
    unhealthy, else a healthy standby's, else the active one anyway (failing over to a dead gateway
    helps nobody). Only programmed (live) addresses count: a node never steers to an address its
    gateway does not hold yet."""
    return _first_usable(sorted((ip for ip in ips if ip.programmed), key=_preference))


def node_plan(snap: NodeSnapshot) -> NodePlan:
    steering: dict[str, int] = {}
    steered: dict[int, str] = {}
    for app_id, ips in snap.app_ips.items():
        # Sorted once: the choice among the live addresses and the one the app will get once all are live
        # (a stable sort, so filtering the sorted list is sorting the filtered one).
        ordered = sorted(ips, key=_preference)
        choice = _first_usable([ip for ip in ordered if ip.programmed])
        if choice is None:
            continue
        # While the preferred gateway is still being configured, traffic may already use another live
        # address of the app, but the node still owes the app a reconcile (towards the preferred one).
        # IPv6 goes the same way as IPv4, when the chosen gateway holds the app's IPv6 address too.
        carries6 = choice[0] in snap.gateways6
        there = [ip for ip in ips if ip.has_v6 and ip.programmed and ip.slot == choice[0]]
        v6 = carries6 and any(not ip.v6_pending for ip in there)
        # A partner its gateway does not hold yet: the node owes the app its IPv6 steering still.
        owes6 = carries6 and any(ip.v6_pending for ip in there)
        if choice == _first_usable(ordered) and not owes6:
            steered[app_id] = choice[1]
        for cidr in snap.app_cidrs.get(app_id, ()):
            if v6 or not _is6(cidr):
                steering[cidr] = choice[0]
    internal = [ip_network(c) for c in snap.region_pod_cidrs]
    internal += [ip_network(t) for t in snap.region_transit_addresses]  # a bare address: its /32 or /128
    state = NodeState.build(
        steering=steering, gateways=dict(snap.gateways), internal=internal, gateways6=dict(snap.gateways6)
    )
    settles = [
        sync_id
        for sync_id, app_id in snap.pending
        if app_id not in snap.pending_dedicated or app_id in steered
    ]
    return NodePlan(state=state, settles=settles, steered=steered, apps={app_id for _, app_id in snap.pending})

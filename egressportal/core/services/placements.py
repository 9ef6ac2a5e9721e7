"""Placements: the platform reports, node by node, which addresses are whose.

Only the platform (egressportal/core/roles.py), which actually runs the pods, says where an app runs;
tenants never do. Even the platform is held to the truth: every address lies in one of the pod CIDRs of
the node it is reported on, is at most a /24 (IPv6: a /120), and belongs to one app at a time within the
region. Both families are reported alike, in one list.

A report is the complete set for one node: what it leaves out is removed. It is idempotent (the same
report twice changes nothing the second time) and all or nothing (one refused entry and nothing at all
changes). It reconciles only what it changed: the node itself and the gateways of the dedicated apps
whose placements on it changed; apps with shared egress need no host work at all.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .. import ipam, ipam6
from ..errors import ConflictError
from ..models import App, EgressIP, Event, EventLevel, HostSync, Node, Placement
from .apps import host_syncs_renew
from .events import actor_name_of, event_record
from .reconcile import reconcile_request

__all__ = ["PlacementReport", "node_placements_set", "placements_max_per_node"]


def placements_max_per_node() -> int:
    return int(settings.EGRESS_MAX_PLACEMENTS_PER_NODE)


@dataclass
class PlacementReport:
    """What a report did: the stored set afterwards and what changed."""

    node: Node
    placements: list[Placement]
    added: list[tuple[int, str]] = field(default_factory=list)  # (app id, cidr)
    removed: list[tuple[int, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True)
class _Entry:
    index: int  # position in the request, to name the entry in errors
    app_id: int
    nets: tuple[tuple[int, IPv4Network | IPv6Network], ...]  # (position in its addresses list, network)


def _key(index: int, sub: str) -> str:
    return f"placements[{index}].{sub}"


def _parse(report: object, *, node: Node) -> list[_Entry]:
    """The shape and the per-address rules that need no database: every problem, each naming its entry."""
    if not isinstance(report, (list, tuple)):
        raise ValidationError({"placements": 'Give the placements as a list: [{"app": <id>, "addresses": [...]}].'})
    limit = placements_max_per_node()
    pods = [ipam6.parse_network_any(p) for p in node.pod_cidrs or []]
    errors: dict[str, list[str]] = defaultdict(list)
    entries: list[_Entry] = []
    seen_apps: dict[int, int] = {}
    total = 0
    for i, raw in enumerate(report):
        if not isinstance(raw, Mapping) or set(raw) - {"app", "addresses"}:
            errors[_key(i, "app")].append('Each entry is {"app": <app id>, "addresses": ["198.18.64.17/32", ...]}.')
            continue
        app_id = raw.get("app")
        if isinstance(app_id, bool) or not isinstance(app_id, int) or app_id < 1:
            errors[_key(i, "app")].append("Give the app's id (a positive integer).")
            continue
        if app_id in seen_apps:
            errors[_key(i, "app")].append(
                f"App {app_id} is listed twice (entries {seen_apps[app_id]} and {i}); list all its addresses in one entry."
            )
            continue
        seen_apps[app_id] = i
        addresses = raw.get("addresses")
        if not isinstance(addresses, (list, tuple)) or not addresses:
            errors[_key(i, "addresses")].append("Give the app's addresses on this node as a non-empty list.")
            continue
        total += len(addresses)
        nets: list[tuple[int, IPv4Network | IPv6Network]] = []
        for j, value in enumerate(addresses):
            where = _key(i, f"addresses[{j}]")
            try:
                net = ipam6.parse_placement_any(value)
            except ipam.IPAMError as exc:
                errors[where].append(str(exc))
                continue
            if not any(net.version == pod.version and net.subnet_of(pod) for pod in pods):  # type: ignore[arg-type]
                inside = ", ".join(str(p) for p in pods) or "none"
                errors[where].append(f"{net} is not inside a pod CIDR of node {node.name} ({inside}).")
                continue
            nets.append((j, net))
        entries.append(_Entry(index=i, app_id=app_id, nets=tuple(nets)))
    if total > limit:
        errors["placements"].append(f"{total} addresses reported for one node; the limit is {limit}.")
    if errors:
        raise ValidationError(dict(errors))
    _refuse_overlaps_within(entries)
    return entries


def _refuse_overlaps_within(entries: list[_Entry]) -> None:
    """Within one report: no two entries share an address, and one entry has no duplicate or overlap.
    Both families in one sweep: every usable IPv6 address is above 2**120 (::/8 is refused), far above
    any IPv4 one."""
    flat = sorted(
        ((int(net.network_address), int(net.broadcast_address), e.index, j, net) for e in entries for j, net in e.nets),
        key=lambda r: (r[0], r[1]),
    )
    errors: dict[str, list[str]] = defaultdict(list)
    reach = None  # the row reaching furthest so far
    for row in flat:
        first, _last, index, j, net = row
        if reach is not None and first <= reach[1]:
            other = f"placements[{reach[2]}].addresses[{reach[3]}]"
            errors[_key(index, f"addresses[{j}]")].append(f"{net} overlaps {reach[4]} ({other}) in this report.")
        if reach is None or row[1] > reach[1]:
            reach = row
    if errors:
        raise ValidationError(dict(errors))


def _refuse_claimed(entries: list[_Entry], *, node: Node) -> None:
    """An address placed for another app of the region (on another node) is refused, never naming that
    app or its owner. Checked here on every database; on PostgreSQL the exclusion constraint is the
    last guard against a concurrent report."""
    errors: dict[str, list[str]] = defaultdict(list)
    for version in (4, 6):
        _refuse_claimed_family(entries, node=node, version=version, errors=errors)
    if errors:
        raise ConflictError(_conflict_message(errors), code="placement_conflict")


def _refuse_claimed_family(entries: list[_Entry], *, node: Node, version: int, errors: dict[str, list[str]]) -> None:
    wanted = [
        (int(n.network_address), int(n.broadcast_address), e, j, n)
        for e in entries
        for j, n in e.nets
        if n.version == version
    ]
    if not wanted:
        return
    lo, hi = min(w[0] for w in wanted), max(w[1] for w in wanted)
    region = Placement.objects.filter(region_id=node.region_id).exclude(node=node)
    if version == 4:
        width = 2 ** (32 - ipam.MIN_PLACEMENT_PREFIXLEN)
        others = sorted(
            region.filter(first_int__lte=hi, last_int__gte=lo - width).values_list("first_int", "last_int", "app_id")
        )
    else:
        width = 2 ** (128 - ipam6.MIN_PLACEMENT_PREFIXLEN6)
        others = sorted(
            (int(f, 16), int(t, 16), a)
            for f, t, a in region.filter(
                first_hex__lte=ipam6.hex_key(hi), last_hex__gte=ipam6.hex_key(max(0, lo - width))
            ).values_list("first_hex", "last_hex", "app_id")
        )
    firsts = [o[0] for o in others]
    for first, last, entry, j, net in wanted:
        # Placements are at most /24 wide, so anything overlapping starts at most that far before.
        start = bisect.bisect_left(firsts, first - width + 1)
        stop = bisect.bisect_right(firsts, last)
        if any(o_last >= first and o_app != entry.app_id for _, o_last, o_app in others[start:stop]):
            errors[_key(entry.index, f"addresses[{j}]")].append(
                f"{net} is already placed for another app in region {node.region.slug}; an address belongs to one "
                "app at a time. Report the node that no longer runs it first."
            )


def _conflict_message(errors: Mapping[str, list[str]]) -> str:
    where, messages = next(iter(errors.items()))
    more = sum(len(m) for m in errors.values()) - 1
    return f"{where}: {messages[0]}" + (f" (and {more} more)" if more > 0 else "")


def node_placements_set(*, node: Node, placements: object, actor: Any = None) -> PlacementReport:
    """Replace ``node``'s placements with ``placements`` ([{"app": id, "addresses": [...]}, ...]).

    Raises ValidationError (400) naming each bad entry, or ConflictError (409) for an address another
    app of the region holds; either way nothing changes."""
    with transaction.atomic():
        # One report per node at a time, checked against the node's pod CIDRs as they are now.
        node = Node.objects.select_for_update(of=("self",)).select_related("region").get(pk=node.pk)
        entries = _parse(placements, node=node)
        app_ids = {e.app_id for e in entries}
        known = set(App.objects.filter(pk__in=app_ids, region_id=node.region_id).values_list("pk", flat=True))
        missing = {e.index: e.app_id for e in entries if e.app_id not in known}
        if missing:
            raise ValidationError(
                {_key(i, "app"): [f"There is no app {a} in region {node.region.slug}."] for i, a in missing.items()}
            )
        _refuse_claimed(entries, node=node)
        current = {(p.app_id, p.cidr): p.pk for p in Placement.objects.filter(node=node)}
        desired = {(e.app_id, str(net)): net for e in entries for _, net in e.nets}
        removed = sorted(set(current) - set(desired))
        added = sorted(set(desired) - set(current))
        if removed or added:
            try:
                with transaction.atomic():
                    Placement.objects.filter(pk__in=[current[k] for k in removed]).delete()
                    rows = [Placement(region_id=node.region_id, node=node, app_id=a, cidr=c) for a, c in added]
                    for row in rows:
                        row.set_bounds(desired[(row.app_id, row.cidr)])
                    Placement.objects.bulk_create(rows, batch_size=1000)
            except IntegrityError:
                # A concurrent report on another node placed one of these addresses for another app.
                raise ConflictError(
                    "An address in this report was just placed for another app of the region by a concurrent "
                    "report; nothing was changed. Report again once the other node's report is in.",
                    code="placement_conflict",
                ) from None
            _record(node, added=added, removed=removed, actor=actor)
            _reconcile(node, app_ids={a for a, _ in added} | {a for a, _ in removed})
        stored = list(Placement.objects.filter(node=node).order_by("app_id", *Placement.ORDER))
    return PlacementReport(node=node, placements=stored, added=added, removed=removed)


def _record(node: Node, *, added: Sequence[tuple[int, str]], removed: Sequence[tuple[int, str]], actor: Any) -> None:
    """One audit event for the node, one timeline event per app whose placements changed (in bulk: a
    whole node's report may concern thousands of apps)."""
    limit = 100
    event_record(
        kind="node.placements_reported",
        message=f"Placements on {node.name}: {len(added)} added, {len(removed)} removed.",
        actor=actor,
        node=node,
        data={
            "added": [[a, c] for a, c in added[:limit]],
            "removed": [[a, c] for a, c in removed[:limit]],
            "counts": {"added": len(added), "removed": len(removed)},
        },
    )
    per_app: dict[int, dict[str, list[str]]] = defaultdict(lambda: {"added": [], "removed": []})
    for app_id, cidr in added:
        per_app[app_id]["added"].append(cidr)
    for app_id, cidr in removed:
        per_app[app_id]["removed"].append(cidr)
    user = actor if getattr(actor, "pk", None) is not None and hasattr(actor, "get_username") else None
    names = dict(App.objects.filter(pk__in=per_app).values_list("pk", "name"))
    events = []
    for app_id, change in sorted(per_app.items()):
        parts = []
        if change["added"]:
            parts.append(f"now runs on {node.name} at {', '.join(change['added'])}")
        if change["removed"]:
            parts.append(f"no longer at {', '.join(change['removed'])} on {node.name}")
        message = "The platform reports: " + "; ".join(parts) + "."
        events.append(
            Event(
                kind="app.placement_changed",
                level=EventLevel.INFO,
                message=message,
                actor=user,
                actor_name=actor_name_of(actor),
                app_id=app_id,
                node=node,
                subject=names.get(app_id, "")[:200],
                data={"node": node.name, **change},
            )
        )
    Event.objects.bulk_create(events, batch_size=1000)


def _reconcile(node: Node, *, app_ids: set[int]) -> None:
    """Only apps that hold addresses are steered; for them this node and their gateways owe a reconcile.
    Gateways go first (they must SNAT a new source before the node steers it to them); a gateway that
    settles an app asks the nodes the app still waits for (services/hostsync.py)."""
    rows = list(
        EgressIP.objects.filter(app_id__in=app_ids, gateway__isnull=False).values_list("app_id", "gateway_id")
    )
    if not rows:
        return
    gateways_by_app: dict[int, set[int]] = defaultdict(set)
    for app_id, gateway_id in rows:
        gateways_by_app[app_id].add(gateway_id)
    syncs = [HostSync(app_id=a, gateway_id=g) for a, gs in gateways_by_app.items() for g in sorted(gs)]
    syncs += [HostSync(app_id=a, node_id=node.pk) for a in gateways_by_app]
    host_syncs_renew(syncs)
    reconcile_request(gateways=sorted({g for gs in gateways_by_app.values() for g in gs}))

"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

import ipaddress

from egressportal.core import selectors, services
from egressportal.core.models import App, Node

__all__ = ["place", "place_many"]


def place(app: App, cidrs: list[str], node: Node | None = None) -> None:
    """What the platform does when it deploys ``app``: add ``cidrs`` to the complete set it reports for the
    node whose pods hold them (or ``node``)."""
    if node is None:
        net = ipaddress.ip_network(cidrs[0])
        node = next(
            n for n in Node.objects.filter(region_id=app.region_id).order_by("pk")
            if any(net.version == p.version and net.subnet_of(p) for p in map(ipaddress.ip_network, n.pod_cidrs))
        )
    entries = [e for e in selectors.node_placements(node) if e["app"] != app.pk]
    mine = next((e["addresses"] for e in selectors.node_placements(node) if e["app"] == app.pk), [])
    entries.append({"app": app.pk, "addresses": mine + list(cidrs)})
    services.node_placements_set(node=node, placements=entries)


def place_many(node: Node, placements: dict[App, list[str]]) -> None:
    """Add many apps' addresses to ``node``'s reported set in one report (bulk set-up of lab tests)."""
    entries = {e["app"]: e["addresses"] for e in selectors.node_placements(node)}
    for app, cidrs in placements.items():
        entries[app.pk] = entries.get(app.pk, []) + list(cidrs)
    services.node_placements_set(node=node, placements=[{"app": a, "addresses": c} for a, c in entries.items()])

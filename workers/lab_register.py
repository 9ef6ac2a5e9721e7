"""Registering the lab (workers/lab) in the database: region, pool, gateways, nodes and, for the demo,
users with apps whose source CIDRs are the lab apps' real /28s.

Idempotent: after a lab rebuild (new host keys, another management index) it updates what changed
instead of failing on what exists.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from egressportal.core.models import App, Gateway, IPPool, Node, Region
from egressportal.core.services import (
    app_create,
    app_update,
    gateway_create,
    host_update,
    node_create,
    pool_create,
    region_create,
)

from .lab import DEMO_APPS, EGRESS_POOL, Lab

__all__ = ["LAB_POOL_NAME", "lab_register"]

LAB_POOL_NAME = "lab-public"
GATEWAY_SLOTS = {"gw1": 1, "gw2": 2}


def _region(slug: str) -> Region:
    return Region.objects.filter(slug=slug).first() or region_create(
        slug=slug, name="Lab", description="Network-namespace lab on this machine (python manage.py lab up)."
    )


def _pool(region: Region) -> IPPool:
    pool = IPPool.objects.filter(cidr=str(EGRESS_POOL)).first()
    if pool is None:
        pool = pool_create(
            region=region, name=LAB_POOL_NAME, cidr=str(EGRESS_POOL), description="Egress addresses of the lab."
        )
    return pool


def _host_fields(host: Any) -> dict[str, Any]:
    return {
        "mgmt_address": host.mgmt_address,
        "ssh_port": host.ssh_port,
        "ssh_user": host.ssh_user,
        "host_key": host.host_key,
        "transit_address": host.transit_address,
    }


def _register_hosts(lab: Lab, region: Region) -> tuple[dict[str, Gateway], dict[str, Node]]:
    gateways: dict[str, Gateway] = {}
    nodes: dict[str, Node] = {}
    for name, host in lab.hosts.items():
        if not host.host_key:
            raise RuntimeError(f"lab host {name} has no host key yet: run the lab's up() first")
        fields = _host_fields(host)
        if host.role == "gateway":
            fields["public_interface"] = host.public_interface
            gw = Gateway.objects.filter(name=name).first()
            if gw is None:
                gw = gateway_create(region=region, name=name, slot=GATEWAY_SLOTS.get(name), **fields)
            else:
                gw = host_update(host=gw, **fields)
            gateways[name] = gw
        else:
            fields["pod_cidrs"] = [host.pod_cidr]
            node = Node.objects.filter(name=name).first()
            if node is None:
                node = node_create(region=region, name=name, **fields)
            else:
                node = host_update(host=node, **fields)
            nodes[name] = node
    return gateways, nodes


def _demo_users() -> tuple[dict[str, Any], dict[str, str]]:
    """alice and bob; a new user gets a random password, returned once (and never stored in clear)."""
    user_model = get_user_model()
    users: dict[str, Any] = {}
    new_passwords: dict[str, str] = {}
    for username in sorted({owner for owner, _, _ in DEMO_APPS}):
        user = user_model.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = user_model.objects.create_user(username=username, password=password)
            new_passwords[username] = password
        users[username] = user
    return users, new_passwords


def _demo_apps(lab: Lab, region: Region, users: dict[str, Any]) -> None:
    for owner, name, node in DEMO_APPS:
        lab_app = lab.add_app(name, node)  # kept if already there, moved back to its demo node otherwise
        app = App.objects.filter(owner=users[owner], name=name).first()
        if app is None:
            app_create(owner=users[owner], region=region, name=name, source_cidrs=[lab_app.cidr])
        elif sorted(app.source_cidrs.values_list("cidr", flat=True)) != [lab_app.cidr]:
            app_update(app=app, source_cidrs=[lab_app.cidr])


def _app_mapping(lab: Lab, region: Region) -> dict[str, dict[str, Any]]:
    """Lab app -> where it runs and which database app it is (by name, the one using its CIDR first)."""
    mapping: dict[str, dict[str, Any]] = {}
    for name, lab_app in lab.apps.items():
        candidates = list(App.objects.filter(region=region, name=name).prefetch_related("source_cidrs"))
        candidates.sort(key=lambda a: lab_app.cidr not in {c.cidr for c in a.source_cidrs.all()})
        mapping[name] = {
            "netns": lab_app.netns,
            "node": lab_app.node,
            "address": lab_app.address,
            "cidr": lab_app.cidr,
            "app_id": candidates[0].pk if candidates else None,
        }
    return mapping


def lab_register(lab: Lab, *, region_slug: str = "lab", demo: bool = True) -> dict[str, Any]:
    """Put the (running) lab into the database; with ``demo`` also alice, bob and their apps.

    Returns what was registered: region, pool, gateway and node ids, the lab apps with their namespaces
    (the portal's "check egress" runs curl in them), and the passwords of users created just now."""
    with transaction.atomic():
        region = _region(region_slug)
        pool = _pool(region)
        gateways, nodes = _register_hosts(lab, region)
        new_passwords: dict[str, str] = {}
        users: dict[str, Any] = {}
        if demo:
            users, new_passwords = _demo_users()
            _demo_apps(lab, region, users)
        return {
            "region": region.slug,
            "region_id": region.pk,
            "pool": pool.name,
            "pool_cidr": pool.cidr,
            "gateways": {name: gw.pk for name, gw in gateways.items()},
            "nodes": {name: node.pk for name, node in nodes.items()},
            "users": sorted(users),
            "new_passwords": new_passwords,
            "apps": _app_mapping(lab, region),
            "echo_url": lab.echo_url,
            "ssh_key_file": str(lab.config.ssh_key_file),
        }

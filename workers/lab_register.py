"""Registering the lab (workers/lab) in the database: region, pools, gateways, nodes and, for the demo,
users with apps; and the lab acting as the platform: it reports where each lab app runs (its /28 and its
IPv6 /120 on its node) through the same service a scheduler uses (node_placements_set), as the lab's
platform account.

Dual-stack like the lab: an IPv6 pool beside the IPv4 one (so every egress address gets its IPv6 partner),
the hosts' IPv6 transit addresses, the nodes' IPv6 pod /64s and the apps' IPv6 placements.

Idempotent: after a lab rebuild (new host keys, another management index) it updates what changed
instead of failing on what exists.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from egressportal.core.models import App, Gateway, IPPool, Node, Placement, Region
from egressportal.core.roles import PLATFORM_GROUP
from egressportal.core.services import (
    app_create,
    gateway_create,
    host_update,
    node_create,
    node_placements_set,
    pool_create,
    region_create,
)

from .lab import DEMO_APPS, EGRESS_POOL, Lab, LabApp
from .lab.plan import EGRESS_POOL6

__all__ = [
    "LAB_PLATFORM_USER",
    "LAB_POOL6_NAME",
    "LAB_POOL_NAME",
    "lab_app_owner",
    "lab_place",
    "lab_platform_account",
    "lab_register",
    "lab_report_placements",
]

LAB_POOL_NAME = "lab-public"
LAB_POOL6_NAME = "lab-public6"
LAB_PLATFORM_USER = "lab-platform"
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


def _pool6(region: Region) -> IPPool:
    pool = IPPool.objects.filter(cidr=str(EGRESS_POOL6)).first()
    if pool is None:
        pool = pool_create(
            region=region, name=LAB_POOL6_NAME, cidr=str(EGRESS_POOL6), description="IPv6 egress addresses of the lab."
        )
    return pool


def _host_fields(host: Any) -> dict[str, Any]:
    return {
        "mgmt_address": host.mgmt_address,
        "ssh_port": host.ssh_port,
        "ssh_user": host.ssh_user,
        "host_key": host.host_key,
        "transit_address": host.transit_address,
        "transit_address6": host.transit_address6 or None,
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
            own = [c for c in (host.pod_cidr, host.pod_cidr6) if c]
            node = Node.objects.filter(name=name).first()
            if node is None:
                node = node_create(region=region, name=name, pod_cidrs=own, **fields)
            else:
                # Pod CIDRs an admin added since (room for more apps) stay; the lab's own come first.
                extra = [c for c in node.pod_cidrs if c not in own]
                node = host_update(host=node, pod_cidrs=[*own, *extra], **fields)
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


def lab_platform_account() -> Any:
    """The lab's service account of the platform (no password: it acts only through this code)."""
    user, created = get_user_model().objects.get_or_create(username=LAB_PLATFORM_USER)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    user.groups.add(Group.objects.get(name=PLATFORM_GROUP))
    return user


def lab_app_owner(name: str, lab_app: LabApp, region: Region) -> App | None:
    """The database app a lab instance belongs to: the one already placed at its address, else the
    oldest app of that name in the region; None when no app has that name (a pod the platform runs for
    no app, e.g. another tenant's workload)."""
    placed = Placement.objects.filter(region=region, cidr=lab_app.cidr, app__name=name).values_list("app_id", flat=True)
    app_id = placed.first()
    if app_id is not None:
        return App.objects.get(pk=app_id)
    return App.objects.filter(region=region, name=name).order_by("pk").first()


def lab_report_placements(lab: Lab, *, region_slug: str = "lab") -> dict[str, Any]:
    """Report every lab node's complete set of placements, as a scheduler would after a deploy: each
    lab app instance's /28 and IPv6 /120 on its node, for its database app. Nodes whose set did not change are left
    alone (the report is idempotent); returns the reports by node name."""
    region = Region.objects.get(slug=region_slug)
    actor = lab_platform_account()
    per_node: dict[str, list[dict[str, Any]]] = {n: [] for n, h in lab.hosts.items() if h.role == "node"}
    for name, lab_app in sorted(lab.apps.items()):
        app = lab_app_owner(name, lab_app, region)
        if app is not None:
            per_node.setdefault(lab_app.node, []).append({"app": app.pk, "addresses": [lab_app.cidr, lab_app.cidr6]})
    reports = {}
    for node_name, entries in per_node.items():
        node = Node.objects.get(name=node_name, region=region)
        reports[node_name] = node_placements_set(node=node, placements=entries, actor=actor)
    return reports


def lab_place(lab: Lab, *, name: str, node: str, region_slug: str = "lab") -> LabApp:
    """(Re)deploy lab app ``name`` on ``node`` and report placements: what `manage.py lab place` and the
    tests do to move an app, exactly as the platform's scheduler would. Nobody touches the app itself."""
    lab_app = lab.add_app(name, node)
    lab_report_placements(lab, region_slug=region_slug)
    return lab_app


def _demo_apps(lab: Lab, region: Region, users: dict[str, Any]) -> None:
    for owner, name, node in DEMO_APPS:
        lab.add_app(name, node)  # kept if already there, moved back to its demo node otherwise
        if not App.objects.filter(owner=users[owner], name=name).exists():
            app_create(owner=users[owner], region=region, name=name)
    lab_report_placements(lab, region_slug=region.slug)


def _app_mapping(lab: Lab, region: Region) -> dict[str, dict[str, Any]]:
    """Lab app -> where it runs and which database app it is."""
    mapping: dict[str, dict[str, Any]] = {}
    for name, lab_app in lab.apps.items():
        app = lab_app_owner(name, lab_app, region)
        mapping[name] = {
            "netns": lab_app.netns,
            "node": lab_app.node,
            "address": lab_app.address,
            "cidr": lab_app.cidr,
            "address6": lab_app.address6,
            "cidr6": lab_app.cidr6,
            "app_id": app.pk if app else None,
        }
    return mapping


def lab_register(lab: Lab, *, region_slug: str = "lab", demo: bool = True) -> dict[str, Any]:
    """Put the (running) lab into the database; with ``demo`` also alice, bob and their apps.

    Returns what was registered: region, pool, gateway and node ids, the lab apps with their namespaces
    (the portal's "check egress" runs curl in them), and the passwords of users created just now."""
    with transaction.atomic():
        region = _region(region_slug)
        pool = _pool(region)
        pool6 = _pool6(region)
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
            "pool6": pool6.name,
            "pool6_cidr": pool6.cidr,
            "gateways": {name: gw.pk for name, gw in gateways.items()},
            "nodes": {name: node.pk for name, node in nodes.items()},
            "users": sorted(users),
            "new_passwords": new_passwords,
            "apps": _app_mapping(lab, region),
            "echo_url": lab.echo_url,
            "ssh_key_file": str(lab.config.ssh_key_file),
        }

"""Shared fixtures: users, a region with gateways, nodes and a pool, API clients."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from egressportal.core import services
from egressportal.core.models import Node, Region
from egressportal.core.roles import PLATFORM_GROUP
from egressportal.core.signals import egress_status_changed
from tests.helpers import place

pytest_plugins = ["tests.integration.worker_fixtures"] + (
    ["tests.integration.lab_fixtures"] if (Path(__file__).parent / "integration" / "lab_fixtures.py").exists() else []
)

# A syntactically valid ed25519 host key for rows that never meet a real sshd.
TEST_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

_counter = itertools.count(1)


def api_token_for(user, name: str | None = None, *, days: int = 30) -> str:
    """A new API token for ``user`` (the secret), made the way the service makes it but without an audit event.
    Marked as just used, so the once-a-minute "last used" write does not land in a test's query counts."""
    from django.utils import timezone

    from egressportal.tokens.models import ApiToken

    _, secret = ApiToken.objects.create(
        user=user, expiry=dt.timedelta(days=days), name=name or f"t{next(_counter)}", last_used_at=timezone.now()
    )
    return secret


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if connection.vendor != "postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL is not PostgreSQL)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def make_user(django_user_model):
    def make(username: str | None = None, *, staff: bool = False, password: str = "pw-for-tests-only"):
        username = username or f"user{next(_counter)}"
        user = django_user_model.objects.create_user(
            username=username, password=password, is_staff=staff, is_superuser=staff
        )
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def staff(make_user):
    return make_user("admin", staff=True)


@pytest.fixture
def platform_user(make_user):
    """A service account of the platform: a member of the group the migrations create."""
    user = make_user("scheduler")
    user.groups.add(Group.objects.get(name=PLATFORM_GROUP))
    return user


@pytest.fixture
def region(db) -> Region:
    return services.region_create(slug="test-1", name="Test 1")


@pytest.fixture
def make_gateway(region):
    def make(name: str | None = None, *, reg: Region | None = None, **kw):
        n = next(_counter)
        return services.gateway_create(
            region=reg or region,
            name=name or f"gw{n}",
            mgmt_address=f"198.18.250.{n % 250 + 1}",
            ssh_port=2000 + n,
            host_key=TEST_HOST_KEY,
            transit_address=f"198.18.251.{n % 250 + 1}",
            public_interface="eth0",
            **kw,
        )

    return make


@pytest.fixture
def make_node(region):
    def make(name: str | None = None, *, reg: Region | None = None, pod_cidrs=()):
        n = next(_counter)
        return services.node_create(
            region=reg or region,
            name=name or f"node{n}",
            mgmt_address=f"198.18.252.{n % 250 + 1}",
            ssh_port=3000 + n,
            host_key=TEST_HOST_KEY,
            transit_address=f"198.18.253.{n % 250 + 1}",
            pod_cidrs=list(pod_cidrs),
        )

    return make


@pytest.fixture
def infra(region, make_gateway, make_node):
    """A region with two gateways, two nodes and a /28 pool (14 usable addresses)."""
    gw1, gw2 = make_gateway("gw-a"), make_gateway("gw-b")
    # make_app places its apps in node-a's pods by default.
    node1, node2 = make_node("node-a", pod_cidrs=["198.18.128.0/18"]), make_node("node-b", pod_cidrs=["198.18.192.0/18"])
    pool = services.pool_create(region=region, name="pool-a", cidr="203.0.113.0/28")
    return {"region": region, "gateways": [gw1, gw2], "nodes": [node1, node2], "pool": pool}


@pytest.fixture
def make_app(region):
    """An app; placed (as the platform would report it) at ``cidrs`` or, by default, at a fresh /28 of the
    region's node whose pods hold it (infra's node-a), if there is one; ``cidrs=[]``: not placed."""

    def make(owner, name: str | None = None, *, cidrs=None, reg: Region | None = None):
        n = next(_counter)
        app = services.app_create(owner=owner, region=reg or region, name=name or f"app-{n}")
        if cidrs is None:
            slot = n % 1024  # a /28 of 198.18.128.0/18 (infra's node-a)
            default = f"198.18.{128 + slot // 16}.{(slot % 16) * 16}/28"
            net = ipaddress.IPv4Network(default)
            pods = Node.objects.filter(region=app.region).values_list("pod_cidrs", flat=True)
            pods4 = [ipaddress.ip_network(p) for ps in pods for p in ps if ":" not in p]
            cidrs = [default] if any(net.subnet_of(p) for p in pods4) else []
        if cidrs:
            place(app, cidrs)
        return app

    return make


@pytest.fixture
def heard():
    """The status changes announced by ``egress_status_changed``: one list of (app id, old, new) per signal
    sent (a bulk write sends one signal for all of its apps)."""
    sends: list[list[tuple[int, str, str]]] = []

    def listen(sender, *, changes, **_):
        sends.append([(c.app.pk, c.old_status, c.new_status) for c in changes])

    egress_status_changed.connect(listen, dispatch_uid="tests-heard")
    yield sends
    egress_status_changed.disconnect(dispatch_uid="tests-heard")

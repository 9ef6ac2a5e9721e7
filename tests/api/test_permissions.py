"""The staff API honours Django model permissions like the admin: a staff account with none gets 403
everywhere, with view permissions it reads and changes nothing, with full permissions it does everything;
actions that change a host need the change permission and the audit log needs view_event."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from egressportal.core.models import Gateway, IPPool, Node, Region
from tests.conftest import TEST_HOST_KEY

from .conftest import assert_error

MODELS = {"regions": "region", "pools": "ippool", "gateways": "gateway", "nodes": "node"}


def _grant(user, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="core", codename__in=codenames))


@pytest.fixture
def plain_staff(django_user_model):
    """Staff (may log in to the admin) but not a superuser: holds only what a test grants."""
    return django_user_model.objects.create_user(username="operator", password="pw-for-tests-only", is_staff=True)


def _detail(infra, resource: str) -> str:
    key = {
        "regions": infra["region"].slug,
        "pools": infra["pool"].pk,
        "gateways": infra["gateways"][0].pk,
        "nodes": infra["nodes"][0].pk,
    }[resource]
    return f"/api/v1/{resource}/{key}/"


def _writes(infra, resource: str) -> list[tuple[str, str, dict | None]]:
    detail = _detail(infra, resource)
    region = infra["region"].slug
    create = {
        "regions": {"slug": "new-region"},
        "pools": {"name": "pool-z", "region": region, "cidr": "203.0.113.128/29"},
        "gateways": {
            "name": "gw-z", "region": region, "mgmt_address": "198.18.9.1", "host_key": TEST_HOST_KEY,
            "transit_address": "198.18.9.2", "public_interface": "eth0",
        },
        "nodes": {
            "name": "node-z", "region": region, "mgmt_address": "198.18.9.3", "host_key": TEST_HOST_KEY,
            "transit_address": "198.18.9.4",
        },
    }[resource]
    change = {"regions": {"description": "x"}, "pools": {"description": "x"}}.get(resource, {"ssh_port": 2222})
    return [("post", f"/api/v1/{resource}/", create), ("patch", detail, change), ("delete", detail, None)]


@pytest.mark.parametrize("resource", MODELS)
def test_staff_without_permissions_gets_403_for_everything(api_as, plain_staff, infra, resource):
    api = api_as(plain_staff)
    error = assert_error(api.get(f"/api/v1/{resource}/"), 403, "permission_denied")
    assert f"core.view_{MODELS[resource]}" in error["message"]
    assert_error(api.get(_detail(infra, resource)), 403, "permission_denied")
    for method, url, body in _writes(infra, resource):
        response = getattr(api, method)(url, body) if body is not None else getattr(api, method)(url)
        assert_error(response, 403, "permission_denied")


@pytest.mark.parametrize("resource", MODELS)
def test_staff_with_view_permission_reads_but_changes_nothing(api_as, plain_staff, infra, resource):
    _grant(plain_staff, f"view_{MODELS[resource]}")
    api = api_as(plain_staff)
    assert api.get(f"/api/v1/{resource}/").status_code == 200
    assert api.get(_detail(infra, resource)).status_code == 200
    counts = (Region.objects.count(), IPPool.objects.count(), Gateway.objects.count(), Node.objects.count())
    for method, url, body in _writes(infra, resource):
        response = getattr(api, method)(url, body) if body is not None else getattr(api, method)(url)
        error = assert_error(response, 403, "permission_denied")
        assert f"_{MODELS[resource]}'" in error["message"]
    assert counts == (Region.objects.count(), IPPool.objects.count(), Gateway.objects.count(), Node.objects.count())
    # Another model's permission does not carry over.
    other = "nodes" if resource != "nodes" else "gateways"
    assert_error(api.get(f"/api/v1/{other}/"), 403, "permission_denied")


@pytest.mark.parametrize("resource", MODELS)
def test_staff_with_full_permissions_does_everything(api_as, plain_staff, infra, resource):
    model = MODELS[resource]
    _grant(plain_staff, *(f"{action}_{model}" for action in ("view", "add", "change", "delete")))
    api = api_as(plain_staff)
    assert api.get(f"/api/v1/{resource}/").status_code == 200
    post, patch, _ = _writes(infra, resource)
    created = api.post(post[1], post[2])
    assert created.status_code == 201, created.content
    assert api.patch(patch[1], patch[2]).status_code == 200
    new_detail = f"/api/v1/{resource}/{created.json().get('slug') or created.json()['id']}/"
    assert api.delete(new_detail).status_code == 204


def test_change_permission_alone_also_reads(api_as, plain_staff, infra):
    """As in the admin, whoever may change an object may see it."""
    _grant(plain_staff, "change_gateway")
    api = api_as(plain_staff)
    assert api.get("/api/v1/gateways/").status_code == 200
    assert api.patch(_detail(infra, "gateways"), {"ssh_port": 2200}).status_code == 200


@pytest.mark.parametrize("kind", ["gateways", "nodes"])
def test_host_actions_need_the_change_permission(api_as, plain_staff, infra, kind):
    host = infra[kind][0]
    model = kind.rstrip("s")
    actions = ["accept-host-key"] + (["drain", "undrain"] if kind == "gateways" else [])
    _grant(plain_staff, f"view_{model}", f"add_{model}")  # add is not change
    api = api_as(plain_staff)
    for action in actions:
        error = assert_error(api.post(f"/api/v1/{kind}/{host.pk}/{action}/", {}), 403, "permission_denied")
        assert f"core.change_{model}" in error["message"]
    assert not Gateway.objects.filter(draining=True).exists()
    _grant(plain_staff, f"change_{model}")
    api = api_as(plain_staff)
    # With the permission the action runs (accept-host-key then says there is no presented key: 400).
    assert_error(api.post(f"/api/v1/{kind}/{host.pk}/accept-host-key/"), 400)
    if kind == "gateways":
        assert api.post(f"/api/v1/gateways/{host.pk}/drain/", {}).status_code == 202
        assert api.post(f"/api/v1/gateways/{host.pk}/undrain/").status_code == 202


def test_audit_log_needs_view_event(api_as, plain_staff, infra):
    api = api_as(plain_staff)
    error = assert_error(api.get("/api/v1/audit/"), 403, "permission_denied")
    assert "core.view_event" in error["message"]
    _grant(plain_staff, "view_event")
    api = api_as(plain_staff)
    assert api.get("/api/v1/audit/").status_code == 200


def test_inactive_or_non_staff_accounts_get_nothing_even_with_permissions(api_as, make_user, infra):
    tenant = make_user("tenant-with-perms")
    _grant(tenant, "view_gateway", "change_gateway", "view_event")
    api = api_as(tenant)
    assert_error(api.get("/api/v1/gateways/"), 403, "permission_denied")
    assert_error(api.get("/api/v1/audit/"), 403, "permission_denied")


def test_admin_actions_that_change_things_need_the_change_permission(plain_staff, alice, make_app, infra):
    """Django offers an action to whoever may view the list unless the action asks for more."""
    from django.test import Client
    from django.utils import timezone

    from egressportal.core.models import App
    from tests.api.test_staff import OTHER_HOST_KEY

    gateway = infra["gateways"][0]
    Gateway.objects.filter(pk=gateway.pk).update(host_key_mismatch_at=timezone.now(), presented_host_key=OTHER_HOST_KEY)
    app = make_app(alice)
    _grant(plain_staff, "view_gateway", "view_app")
    client = Client()
    client.force_login(plain_staff)
    page = client.get("/admin/core/gateway/").content.decode()
    assert 'value="drain"' not in page and 'value="accept_presented_key"' not in page
    for action in ("drain", "drain_active_only", "undrain", "accept_presented_key", "resync"):
        client.post("/admin/core/gateway/", {"action": action, "_selected_action": [gateway.pk], "post": "yes"})
    gateway.refresh_from_db()
    assert not gateway.draining and gateway.presented_host_key and gateway.host_key == TEST_HOST_KEY
    client.post("/admin/core/app/", {"action": "enable_dedicated", "_selected_action": [app.pk]})
    assert App.objects.get(pk=app.pk).egress_type == "shared"
    # With the change permission the same actions run.
    _grant(plain_staff, "change_gateway", "change_app")
    client.force_login(plain_staff)
    client.post("/admin/core/gateway/", {"action": "accept_presented_key", "_selected_action": [gateway.pk]})
    gateway.refresh_from_db()
    assert gateway.host_key == OTHER_HOST_KEY.rsplit(" ", 1)[0]  # pinned without its comment
    client.post("/admin/core/app/", {"action": "enable_dedicated", "_selected_action": [app.pk]})
    assert App.objects.get(pk=app.pk).egress_type == "dedicated"

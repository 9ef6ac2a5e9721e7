"""Adding a host goes through one service (services.host_create) from the admin and from the API alike:
the same fields, the same order of steps, the same result."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from egressportal.core import services
from egressportal.core.models import Event, Gateway, Node
from egressportal.core.services.hosts import HOST_FIELDS, KIND_FIELDS, host_editable_fields
from tests.conftest import TEST_HOST_KEY

pytestmark = pytest.mark.django_db


def _gateway(region, name: str, n: int, **kw) -> dict:
    return {
        "name": name,
        "region": region.slug,
        "mgmt_address": f"198.18.240.{n}",
        "ssh_port": 22,
        "ssh_user": "root",
        "host_key": TEST_HOST_KEY,
        "transit_address": f"198.18.241.{n}",
        "public_interface": "eth1",
        **kw,
    }


def _admin_form(data: dict, region) -> dict:
    form = {k: v for k, v in data.items() if v is not False}
    form["region"] = region.pk
    for flag in ("enabled", "draining", "use_sudo"):
        if data.get(flag):
            form[flag] = "on"
    form.setdefault("slot", "3")  # the admin asks for the slot; the API chooses it
    return form


def test_api_and_admin_create_the_same_draining_disabled_gateway(staff_api, client, staff, region):
    via_api = staff_api.post("/api/v1/gateways/", _gateway(region, "gw-api", 1, draining=True, enabled=False))
    assert via_api.status_code == 201, via_api.content
    assert via_api.json()["draining"] is True  # was silently dropped before
    client.force_login(staff)
    data = _gateway(region, "gw-admin", 2, draining=True, enabled=False)
    response = client.post(reverse("admin:core_gateway_add"), _admin_form(data, region))
    errors = re.findall(r"errorlist[^>]*>(.*?)</ul>", response.content.decode(), re.S)
    assert response.status_code == 302, errors
    for name in ("gw-api", "gw-admin"):
        gw = Gateway.objects.get(name=name)
        assert (gw.draining, gw.enabled) == (True, False), name
        kinds = list(Event.objects.filter(gateway=gw).order_by("id").values_list("kind", flat=True))
        assert kinds[0] == "gateway.created" and "gateway.drain_started" in kinds and kinds[-1] == "gateway.updated"


def test_only_gateways_are_drained_and_nothing_is_half_created(region):
    with pytest.raises(ValidationError) as info:
        services.host_create(
            kind="node", region=region, name="n1", mgmt_address="198.18.240.9", host_key=TEST_HOST_KEY,
            transit_address="198.18.241.9", draining=True,
        )
    assert "draining" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        services.host_create(
            kind="gateway", region=region, name="g1", mgmt_address="198.18.240.8", host_key=TEST_HOST_KEY,
            transit_address="198.18.241.8", public_interface="eth1", ssh_private_key="not a key",
        )
    assert "ssh_private_key" in info.value.message_dict
    assert not Gateway.objects.exists() and not Node.objects.exists()


def test_field_lists_are_one_definition():
    assert host_editable_fields("gateway") == {
        "mgmt_address", "ssh_port", "ssh_user", "host_key", "use_sudo", "transit_address", "transit_address6",
        "enabled", "public_interface", "draining",
    }
    assert host_editable_fields("node") == {
        "mgmt_address", "ssh_port", "ssh_user", "host_key", "use_sudo", "transit_address", "transit_address6",
        "enabled", "pod_cidrs",
    }
    assert {"name", "region"} <= set(HOST_FIELDS) and set(KIND_FIELDS) == {"gateway", "node"}


@pytest.mark.parametrize("kind", ["gateway", "node"])
def test_the_admin_refuses_a_zone_index_like_the_api(staff_api, client, staff, region, kind):
    """Django's IP field would drop "%eth0" and store the address without it; the admin says why it refuses."""
    data = _gateway(region, f"{kind}-zone", 5, transit_address6="2001:db8:0:1::15%eth0")
    if kind == "node":
        data.pop("public_interface")
    inline = {"placements-TOTAL_FORMS": "0", "placements-INITIAL_FORMS": "0"} if kind == "node" else {}
    via_api = staff_api.post(f"/api/v1/{kind}s/", data)
    assert via_api.status_code == 400 and "zone index" in str(via_api.json()), via_api.content
    client.force_login(staff)
    response = client.post(reverse(f"admin:core_{kind}_add"), {**_admin_form(data, region), **inline})
    assert response.status_code == 200  # the form again, with the error at the field
    errors = " ".join(re.findall(r"errorlist[^>]*>(.*?)</ul>", response.content.decode(), re.S))
    assert "has a zone index (%...); an IPv6 address never does." in errors
    assert not Gateway.objects.filter(name=data["name"]).exists() and not Node.objects.filter(name=data["name"]).exists()
    # The same address without the zone is taken, and editing keeps refusing it.
    data["transit_address6"] = "2001:db8:0:1::15"
    response = client.post(reverse(f"admin:core_{kind}_add"), {**_admin_form(data, region), **inline})
    assert response.status_code == 302, re.findall(r"errorlist[^>]*>(.*?)</ul>", response.content.decode(), re.S)
    host = (Gateway if kind == "gateway" else Node).objects.get(name=data["name"])
    form = {**_admin_form(data, region), **inline, "transit_address6": "2001:db8:0:1::16%eth0"}
    response = client.post(reverse(f"admin:core_{kind}_change", args=[host.pk]), form)
    assert response.status_code == 200 and "zone index" in response.content.decode()
    host.refresh_from_db()
    assert host.transit_address6 == "2001:db8:0:1::15"

"""Against the real lab (real sshd per host): a changed host key is refused and raised as a visible alert in the
admin, the API, the portal and the event log; accepting the new key is an explicit, audited staff action, after
which the next reconcile succeeds. Per-host SSH credentials authenticate against a real sshd."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Event, Gateway
from egressportal.core.services.hosts import host_credential_set
from tests.conftest import api_token_for
from tests.integration.test_reconcile_lab import converge
from workers.reconcile import host_reconcile
from workers.ssh import HostKeyMismatch, SSHError, close_all_sessions, fingerprint, parse_host_key

from .conftest import new_private_key

pytestmark = [pytest.mark.lab]


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("sec-admin", password="pw-for-tests-only", is_staff=True,
                                                 is_superuser=True)


def test_changed_host_key_is_refused_alerted_and_accepted_by_staff_only(lab, lab_world, staff_user):
    gw = Gateway.objects.get(name="gw1")
    pinned = gw.host_key
    new_key = lab.regenerate_host_key("gw1")
    close_all_sessions()  # as after a worker restart: no connection made under the old key survives
    assert new_key != pinned

    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop)
    assert EgressIP.objects.filter(app=shop, gateway=gw).exists()  # gw1 owes shop-api a reconcile
    with pytest.raises(HostKeyMismatch) as info:
        host_reconcile(kind="gateway", pk=gw.pk)
    # The exception carries what was presented, as a line staff can pin, and both fingerprints.
    assert info.value.actual_key == new_key
    assert info.value.actual == fingerprint(parse_host_key(new_key))
    assert info.value.expected == fingerprint(parse_host_key(pinned))

    gw.refresh_from_db()
    assert gw.host_key == pinned  # nothing changes by itself
    assert gw.host_key_mismatch_at is not None and gw.presented_host_key == new_key
    mismatch = Event.objects.get(kind="host.key_mismatch", gateway=gw)
    assert mismatch.level == "error" and info.value.actual in mismatch.message

    # Visible: API, admin, portal.
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_for(staff_user)}")
    body = api.get(f"/api/v1/gateways/{gw.pk}/").json()
    assert body["host_key_mismatch_at"] and body["presented_host_key"] == new_key
    admin = Client()
    admin.force_login(staff_user)
    assert "host key mismatch" in admin.get(reverse("admin:core_gateway_changelist")).content.decode()
    owner = Client()
    owner.force_login(shop.owner)
    page = owner.get(reverse("portal:app_detail", args=[shop.pk])).content.decode()
    assert "failed a security check" in page and "a platform admin has been alerted" in page

    # Still refused on the next attempt: the alert does not wear off.
    with pytest.raises(HostKeyMismatch):
        host_reconcile(kind="gateway", pk=gw.pk)

    # Only staff can accept; the owner's token is refused.
    owner_api = APIClient()
    owner_api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_for(shop.owner)}")
    assert owner_api.post(f"/api/v1/gateways/{gw.pk}/accept-host-key/").status_code == 403

    response = api.post(f"/api/v1/gateways/{gw.pk}/accept-host-key/")
    assert response.status_code == 200, response.content
    assert response.json()["host_key"] == new_key and response.json()["host_key_mismatch_at"] is None
    accepted = Event.objects.get(kind="host.key_accepted", gateway=gw)
    assert accepted.actor_id == staff_user.pk
    assert accepted.data["after"]["fingerprint"] == info.value.actual

    converge()
    shop.refresh_from_db()
    assert shop.egress_status == "assigned", shop.egress_message
    active = EgressIP.objects.get(app=shop, role="active")
    assert lab.seen_ip("shop-api") == active.address


def test_admin_action_accepts_the_presented_key_end_to_end(lab, lab_world, staff_user):
    gw = Gateway.objects.get(name="gw2")
    new_key = lab.regenerate_host_key("gw2")
    close_all_sessions()
    with pytest.raises(HostKeyMismatch):
        host_reconcile(kind="gateway", pk=gw.pk)
    admin = Client()
    admin.force_login(staff_user)
    response = admin.post(
        reverse("admin:core_gateway_changelist"),
        {"action": "accept_presented_key", "_selected_action": [gw.pk]},
    )
    assert response.status_code == 302
    gw.refresh_from_db()
    assert gw.host_key == new_key and gw.host_key_mismatch_at is None
    assert Event.objects.filter(kind="host.key_accepted", gateway=gw, actor=staff_user).exists()
    assert host_reconcile(kind="gateway", pk=gw.pk) is not None


def test_per_host_private_key_authenticates_against_real_sshd(lab, lab_world, settings, tmp_path, fernet_keys):
    # The global key file now holds a key no host trusts: only gw1's own stored key can get in.
    stranger = tmp_path / "id_stranger"
    stranger.write_text(new_private_key())
    stranger.chmod(0o600)
    settings.EGRESS_SSH_KEY_FILE = str(stranger)
    close_all_sessions()
    gw = Gateway.objects.get(name="gw1")
    with pytest.raises(SSHError) as info:
        host_reconcile(kind="gateway", pk=gw.pk)
    assert info.value.kind == "auth"

    host_credential_set(host=gw, private_key=lab.config.ssh_key_file.read_text())
    result = host_reconcile(kind="gateway", pk=gw.pk)
    assert result is not None  # connected, read, applied as that key

    host_credential_set(host=Gateway.objects.get(pk=gw.pk), private_key="")
    close_all_sessions()
    with pytest.raises(SSHError) as info:
        host_reconcile(kind="gateway", pk=gw.pk)
    assert info.value.kind == "auth"

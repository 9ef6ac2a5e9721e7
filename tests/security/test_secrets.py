"""Per-host SSH credentials: encrypted at rest, write-only in the API and the admin, rotated by one command,
never in the audit log."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.urls import reverse

from egressportal.core import secrets
from egressportal.core.models import Event, Gateway, Node
from egressportal.core.services.hosts import host_credential_set
from tests.conftest import TEST_HOST_KEY
from workers.reconcile import host_session

from .conftest import new_private_key

pytestmark = pytest.mark.django_db


def test_round_trip_and_ciphertext_holds_no_plaintext(fernet_keys):
    key = new_private_key()
    token = secrets.encrypt(key)
    assert "PRIVATE KEY" not in token and key not in token
    assert secrets.decrypt(token) == key


def test_missing_keys_are_a_clear_error(settings):
    settings.EGRESS_FERNET_KEYS = []
    with pytest.raises(secrets.SecretsError, match="EGRESS_FERNET_KEYS is not set.*generate_key"):
        secrets.encrypt("x")


def test_malformed_key_is_named_by_position_not_echoed(settings):
    settings.EGRESS_FERNET_KEYS = [Fernet.generate_key().decode(), "not-a-key-s3cr3t"]
    with pytest.raises(secrets.SecretsError) as info:
        secrets.fernet()
    assert "entry 2" in str(info.value) and "s3cr3t" not in str(info.value)


def test_decrypt_with_unknown_key_is_a_clear_error(settings, fernet_keys):
    token = secrets.encrypt("secret")
    settings.EGRESS_FERNET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(secrets.SecretsError, match="cannot be decrypted"):
        secrets.decrypt(token)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "not a private key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----", "cannot be read"),
        ("", "not a private key"),
    ],
)
def test_load_private_key_refuses_what_is_not_a_key(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        secrets.load_private_key(text)


def test_passphrase_protected_key_is_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    text = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"pass"),
    ).decode()
    with pytest.raises(ValueError, match="passphrase"):
        secrets.load_private_key(text)


def test_rotate_secrets_re_encrypts_every_field_with_the_current_key(settings, fernet_keys, make_gateway, make_node):
    old = fernet_keys[0]
    gw, node = make_gateway(), make_node()
    gw_key, node_key = new_private_key(), new_private_key()
    host_credential_set(host=gw, private_key=gw_key)
    host_credential_set(host=node, private_key=node_key)
    make_gateway()  # a host without a credential is left alone
    new = Fernet.generate_key().decode()
    settings.EGRESS_FERNET_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "core.Gateway.ssh_private_key_encrypted: 1 re-encrypted" in out.getvalue()
    assert "core.Node.ssh_private_key_encrypted: 1 re-encrypted" in out.getvalue()
    assert "Re-encrypted 2 secret(s)" in out.getvalue()
    # The old key can go now: everything reads with the new one alone.
    settings.EGRESS_FERNET_KEYS = [new]
    assert secrets.decrypt(Gateway.objects.get(pk=gw.pk).ssh_private_key_encrypted).strip() == gw_key.strip()
    assert secrets.decrypt(Node.objects.get(pk=node.pk).ssh_private_key_encrypted).strip() == node_key.strip()


def test_rotate_secrets_reports_unreadable_rows_and_fails(settings, fernet_keys, make_gateway):
    host_credential_set(host=make_gateway(), private_key=new_private_key())
    settings.EGRESS_FERNET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="1 secret"):
        call_command("rotate_secrets", stdout=io.StringIO(), stderr=io.StringIO())


def test_rotate_secrets_without_keys_says_how_to_make_one(settings):
    settings.EGRESS_FERNET_KEYS = []
    with pytest.raises(CommandError, match="generate_key"):
        call_command("rotate_secrets", stdout=io.StringIO())


def test_host_session_uses_the_hosts_own_key_else_the_key_file(fernet_keys, make_gateway, settings):
    gw = make_gateway()
    session = host_session(gw)
    assert session._pkey is None and session._key_filename == settings.EGRESS_SSH_KEY_FILE
    key = new_private_key()
    host_credential_set(host=gw, private_key=key)
    gw = Gateway.objects.get(pk=gw.pk)
    session = host_session(gw)
    assert session._key_filename is None
    assert session._pkey.fingerprint == secrets.load_private_key(key).fingerprint
    assert host_session(gw) is session  # one pooled connection per host, not one per call


def test_host_session_with_an_unreadable_key_is_an_auth_error_without_the_key(settings, fernet_keys, make_gateway):
    from workers.ssh import SSHError

    gw = make_gateway()
    host_credential_set(host=gw, private_key=new_private_key())
    settings.EGRESS_FERNET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SSHError) as info:
        host_session(Gateway.objects.get(pk=gw.pk))
    assert info.value.kind == "auth" and "PRIVATE KEY" not in str(info.value)


# API ------------------------------------------------------------------------------------------------------------


def _gateway_body(**extra):
    return {
        "name": "gw-secret",
        "region": "test-1",
        "mgmt_address": "198.18.240.1",
        "host_key": TEST_HOST_KEY,
        "transit_address": "198.18.241.1",
        "public_interface": "eth0",
        **extra,
    }


def test_api_accepts_the_key_encrypts_it_and_never_returns_it(staff_api, region, fernet_keys):
    key = new_private_key()
    response = staff_api.post("/api/v1/gateways/", _gateway_body(ssh_private_key=key))
    assert response.status_code == 201, response.content
    body = response.json()
    assert "ssh_private_key" not in body and "ssh_private_key_encrypted" not in body
    assert body["has_ssh_private_key"] is True
    gw = Gateway.objects.get(name="gw-secret")
    assert gw.ssh_private_key_encrypted and "PRIVATE KEY" not in gw.ssh_private_key_encrypted
    assert secrets.decrypt(gw.ssh_private_key_encrypted).strip() == key.strip()
    for url in ("/api/v1/gateways/", f"/api/v1/gateways/{gw.pk}/", "/api/v1/audit/"):
        text = staff_api.get(url).content.decode()
        assert "PRIVATE KEY" not in text and gw.ssh_private_key_encrypted not in text
    # The audit log says the credential changed, with no key material.
    event = Event.objects.get(kind="gateway.credential_changed", gateway=gw)
    assert event.actor_name == "admin"
    assert "PRIVATE KEY" not in str(event.data) and gw.ssh_private_key_encrypted not in str(event.data)


def test_api_refuses_what_is_not_a_private_key(staff_api, region, fernet_keys):
    response = staff_api.post("/api/v1/gateways/", _gateway_body(ssh_private_key=TEST_HOST_KEY))
    assert response.status_code == 400
    assert "ssh_private_key" in response.json()["error"]["fields"]
    assert not Gateway.objects.filter(name="gw-secret").exists()


def test_api_refuses_a_key_when_the_server_cannot_encrypt(staff_api, region, settings):
    settings.EGRESS_FERNET_KEYS = []
    response = staff_api.post("/api/v1/gateways/", _gateway_body(ssh_private_key=new_private_key()))
    assert response.status_code == 400 and "EGRESS_FERNET_KEYS" in response.json()["error"]["message"]


def test_api_patch_replaces_and_blank_removes_the_key(staff_api, make_node, fernet_keys):
    node = make_node()
    first = new_private_key()
    assert staff_api.patch(f"/api/v1/nodes/{node.pk}/", {"ssh_private_key": first}).json()["has_ssh_private_key"]
    stored = Node.objects.get(pk=node.pk).ssh_private_key_encrypted
    second = new_private_key()
    staff_api.patch(f"/api/v1/nodes/{node.pk}/", {"ssh_private_key": second})
    assert secrets.decrypt(Node.objects.get(pk=node.pk).ssh_private_key_encrypted).strip() == second.strip()
    assert Node.objects.get(pk=node.pk).ssh_private_key_encrypted != stored
    body = staff_api.patch(f"/api/v1/nodes/{node.pk}/", {"ssh_private_key": ""}).json()
    assert body["has_ssh_private_key"] is False and Node.objects.get(pk=node.pk).ssh_private_key_encrypted == ""
    kinds = list(Event.objects.filter(node=node, kind="node.credential_changed").values_list("message", flat=True))
    assert len(kinds) == 3 and "removed" in kinds[0]


def test_non_staff_cannot_set_a_credential(alice_api, make_gateway, fernet_keys):
    gw = make_gateway()
    response = alice_api.patch(f"/api/v1/gateways/{gw.pk}/", {"ssh_private_key": new_private_key()})
    assert response.status_code == 403
    assert Gateway.objects.get(pk=gw.pk).ssh_private_key_encrypted == ""


# Admin ----------------------------------------------------------------------------------------------------------


def test_admin_shows_only_set_or_not_set_and_stores_encrypted(client, staff, make_gateway, fernet_keys):
    gw = make_gateway()
    client.force_login(staff)
    url = reverse("admin:core_gateway_change", args=[gw.pk])
    page = client.get(url).content.decode()
    assert "not set (workers&#x27; default key)" in page or "not set (workers' default key)" in page
    key = new_private_key()
    form = {
        "mgmt_address": gw.mgmt_address, "ssh_port": gw.ssh_port, "ssh_user": gw.ssh_user,
        "host_key": gw.host_key, "transit_address": gw.transit_address, "enabled": "on",
        "public_interface": gw.public_interface, "ssh_private_key": key,
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    gw = Gateway.objects.get(pk=gw.pk)
    assert secrets.decrypt(gw.ssh_private_key_encrypted).strip() == key.strip()
    page = client.get(url).content.decode()
    assert ">set<" in page.replace("\n", "").replace(" ", "") or "<div class=\"readonly\">set</div>" in page
    assert "PRIVATE KEY" not in page and gw.ssh_private_key_encrypted not in page
    assert Event.objects.filter(kind="gateway.credential_changed", actor=staff).exists()


def test_admin_form_error_never_echoes_the_key(client, staff, make_gateway, fernet_keys):
    gw = make_gateway()
    client.force_login(staff)
    key = new_private_key()
    url = reverse("admin:core_gateway_change", args=[gw.pk])
    response = client.post(url, {"mgmt_address": "not-an-ip", "ssh_port": gw.ssh_port, "ssh_user": gw.ssh_user,
                                 "host_key": gw.host_key, "transit_address": gw.transit_address,
                                 "public_interface": gw.public_interface, "ssh_private_key": key})
    assert response.status_code == 200  # the form again, with errors
    assert "PRIVATE KEY" not in response.content.decode()

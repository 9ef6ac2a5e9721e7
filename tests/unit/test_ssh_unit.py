"""Unit tests of workers.ssh that need no server: host key parsing, fingerprints, argv handling."""

from __future__ import annotations

import base64
import hashlib

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from workers.ssh import (
    CommandFailed,
    HostKeyMismatch,
    HostTarget,
    SSHError,
    SSHSession,
    close_all_sessions,
    fingerprint,
    get_session,
    parse_host_key,
)


def _line(private) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


ED25519 = _line(ed25519.Ed25519PrivateKey.generate())
RSA = _line(rsa.generate_private_key(public_exponent=65537, key_size=2048))
ECDSA = _line(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("line", [ED25519, RSA, ECDSA, ED25519 + " root@gw1", "  " + RSA + " a comment with spaces "])
def test_parse_valid_keys(line):
    key = parse_host_key(line)
    assert key.get_name() == line.split()[0]


def test_fingerprint_matches_openssh_format():
    key = parse_host_key(ED25519)
    blob = base64.b64decode(ED25519.split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint(key) == expected


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!!",
        "ssh-ed25519 AAAA",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "ssh-foo " + ED25519.split()[1],
        "ssh-rsa " + ED25519.split()[1],  # blob of another type
        ED25519 + "\nssh-rsa AAAA",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "AAAAC3NzaC1lZDI1NTE5AAAAI",
    ],
)
def test_parse_malformed_keys(line):
    with pytest.raises(ValueError):
        parse_host_key(line)


def test_parse_non_string():
    with pytest.raises(ValueError):
        parse_host_key(None)  # type: ignore[arg-type]


def test_error_kinds():
    assert SSHError("x", kind="auth").kind == "auth"
    err = HostKeyMismatch("198.18.20.1", 22, "SHA256:a", "SHA256:b")
    assert err.kind == "host_key_mismatch" and err.expected == "SHA256:a" and err.actual == "SHA256:b"
    failed = CommandFailed(["nft", "-f", "-"], 1, "E" * 10000)
    assert failed.kind == "command_failed" and failed.exit_status == 1
    assert len(failed.stderr) < 5000 and "nft -f -" in str(failed)


def test_session_rejects_bad_host_key_and_bad_argv():
    with pytest.raises(ValueError):
        SSHSession(HostTarget("127.0.0.1", 22, "root", "ssh-ed25519 garbage"))
    session = SSHSession(HostTarget("127.0.0.1", 22, "root", ED25519))
    with pytest.raises(TypeError):
        session.run("echo hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        session.run([])
    with pytest.raises(ValueError):
        session.run(["echo", "a\x00b"])


def test_unreachable_is_classified():
    # Port 9 on loopback: nothing listens, connection refused.
    session = SSHSession(HostTarget("127.0.0.1", 9, "root", ED25519), connect_timeout=2)
    with pytest.raises(SSHError) as info:
        session.run(["true"])
    assert info.value.kind == "unreachable"


def test_pool_is_keyed_by_whole_target():
    close_all_sessions()
    a = HostTarget("127.0.0.1", 2222, "root", ED25519)
    assert get_session(a) is get_session(HostTarget("127.0.0.1", 2222, "root", ED25519))
    assert get_session(a) is not get_session(HostTarget("127.0.0.1", 2222, "root", RSA))
    assert isinstance(get_session(a), SSHSession)


def test_close_all_sessions_empties_the_pool():
    close_all_sessions()
    a, b = HostTarget("127.0.0.1", 2222, "root", ED25519), HostTarget("127.0.0.1", 2223, "root", ED25519)
    before = {a: get_session(a), b: get_session(b)}
    close_all_sessions()
    # Every target gets a fresh session afterwards (closing the old connections is checked against a real
    # sshd in tests/integration/test_ssh_real.py).
    for target, old in before.items():
        fresh = get_session(target)
        assert fresh is not old
        assert get_session(target) is fresh
    close_all_sessions()


def test_paramiko_is_the_expected_major():
    assert int(paramiko.__version__.split(".")[0]) >= 3  # PKey.from_type_string

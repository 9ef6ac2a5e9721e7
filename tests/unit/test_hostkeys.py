"""The host-key parser staff pin keys with and workers verify hosts against: every refusal, word for word."""

from __future__ import annotations

import base64
import hashlib

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from egressportal.dataplane.hostkeys import SUPPORTED_KEY_TYPES, fingerprint, openssh_line, parse_host_key


def _openssh(private) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@pytest.fixture(scope="module")
def ed25519_line() -> str:
    return _openssh(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def nistp384_line() -> str:
    return _openssh(ec.generate_private_key(ec.SECP384R1()))


def _refused(line: object) -> str:
    with pytest.raises(ValueError) as exc:
        parse_host_key(line)  # type: ignore[arg-type]
    return str(exc.value)


def test_a_valid_line_parses_with_or_without_comment_and_trailing_newline(ed25519_line):
    key = parse_host_key(ed25519_line)
    assert openssh_line(key) == ed25519_line
    assert openssh_line(parse_host_key(f"  {ed25519_line} root@gw1\n")) == ed25519_line


def test_fingerprint_is_what_ssh_keygen_prints(ed25519_line):
    blob = base64.b64decode(ed25519_line.split()[1])
    want = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint(parse_host_key(ed25519_line)) == want


def test_not_text():
    assert _refused(b"ssh-ed25519 AAAA") == "host key must be text"


@pytest.mark.parametrize("glue", ["\n", "\r", "\x00"])
def test_one_line_only(ed25519_line, glue):
    # Two keys pasted at once, or a control character smuggled in: never "the first one wins".
    assert _refused(f"{ed25519_line}{glue}{ed25519_line}") == "host key must be a single line"


def test_a_carriage_return_alone_is_refused_too(ed25519_line):
    assert _refused(ed25519_line + "\r") == "host key must be a single line"


@pytest.mark.parametrize("line", ["", "ssh-ed25519", "   "])
def test_type_and_data_are_both_needed(line):
    assert _refused(line) == 'host key must look like "ssh-ed25519 AAAA... [comment]"'


def test_unsupported_type_is_named_truncated_and_the_supported_ones_listed():
    long_type = "x" * 60
    message = _refused(f"{long_type} AAAA")
    assert message == (
        f"unsupported host key type {'x' * 40!r}; expected one of {', '.join(sorted(SUPPORTED_KEY_TYPES))}"
    )
    assert _refused("ssh-dss AAAA").startswith("unsupported host key type 'ssh-dss'; expected one of ecdsa-sha2-")


def test_data_must_be_strict_base64(ed25519_line):
    key_type, blob = ed25519_line.split()
    # Lenient decoding would drop the "$" and read another key than the one shown to staff.
    assert _refused(f"{key_type} {blob[:20]}$${blob[20:]}") == "host key data is not valid base64"


def test_data_that_is_no_key_of_its_type(ed25519_line):
    garbage = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x03abc").decode()
    assert _refused(f"ssh-ed25519 {garbage}").startswith("host key data is not a valid ssh-ed25519 key: ")
    rsa_blob = ed25519_line.split()[1]
    assert _refused(f"ssh-rsa {rsa_blob}").startswith("host key data is not a valid ssh-rsa key: ")


def test_a_key_of_another_curve_under_the_wrong_name(nistp384_line):
    blob = nistp384_line.split()[1]
    assert _refused(f"ecdsa-sha2-nistp256 {blob}") == (
        "host key data is a ecdsa-sha2-nistp384 key, not ecdsa-sha2-nistp256"
    )
    assert parse_host_key(nistp384_line).get_name() == "ecdsa-sha2-nistp384"


def test_rsa_keys_parse():
    key = paramiko.RSAKey.generate(1024)
    assert parse_host_key(openssh_line(key)).get_name() == "ssh-rsa"

"""SSH host keys as the product stores them: one OpenSSH public key line, parsed and fingerprinted.

Pure (paramiko's key types only): the portal validates what staff pin, the workers pin what they connect to,
with the same parser.
"""

from __future__ import annotations

import base64
import binascii

import paramiko

__all__ = ["SUPPORTED_KEY_TYPES", "fingerprint", "openssh_line", "parse_host_key"]

SUPPORTED_KEY_TYPES = frozenset(
    {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"}
)


def openssh_line(key: paramiko.PKey) -> str:
    """The public key as an OpenSSH line ("ssh-ed25519 AAAA..."), as host_key stores it."""
    return f"{key.get_name()} {key.get_base64()}"


def parse_host_key(line: str) -> paramiko.PKey:
    """Parse one OpenSSH public key line; ValueError with a readable message if it is not one."""
    if not isinstance(line, str):
        raise ValueError("host key must be text")
    if "\n" in line.strip() or "\r" in line or "\x00" in line:
        raise ValueError("host key must be a single line")
    fields = line.strip().split()
    if len(fields) < 2:
        raise ValueError('host key must look like "ssh-ed25519 AAAA... [comment]"')
    key_type, blob_b64 = fields[0], fields[1]
    if key_type not in SUPPORTED_KEY_TYPES:
        raise ValueError(
            f"unsupported host key type {key_type[:40]!r}; expected one of {', '.join(sorted(SUPPORTED_KEY_TYPES))}"
        )
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("host key data is not valid base64") from None
    try:
        key = paramiko.PKey.from_type_string(key_type, blob)
    except Exception as exc:  # paramiko raises a zoo of types for malformed blobs
        raise ValueError(f"host key data is not a valid {key_type} key: {exc}") from None
    # The blob names its own type and paramiko's ECDSA class reads every curve: "ecdsa-sha2-nistp256 <a nistp384
    # blob>" is a copy-paste error, not a key. (Other mismatches are refused by paramiko above.)
    if key.get_name() != key_type:
        raise ValueError(f"host key data is a {key.get_name()} key, not {key_type}")
    return key


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint, as ``ssh-keygen -lf`` prints it."""
    return key.fingerprint

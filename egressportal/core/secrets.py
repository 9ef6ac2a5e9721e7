"""Secrets at rest: per-host SSH private keys, encrypted with Fernet.

Keys come from ``EGRESS_FERNET_KEYS`` (comma-separated; the first encrypts,
all of them decrypt), so a key can be rotated without downtime: put a new key
first, run ``manage.py rotate_secrets``, then drop the old key. Generate a key
with ``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.

Every encrypted field is listed in ``ENCRYPTED_FIELDS`` so the rotation command
knows all of them; nothing else in the product decrypts.
"""

from __future__ import annotations

import io

import paramiko
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = [
    "ENCRYPTED_FIELDS",
    "SecretsError",
    "decrypt",
    "encrypt",
    "fernet",
    "load_private_key",
    "private_key_check",
    "rotate",
]

# (app_label.ModelName, field): every column that holds Fernet ciphertext.
ENCRYPTED_FIELDS: tuple[tuple[str, str], ...] = (
    ("core.Gateway", "ssh_private_key_encrypted"),
    ("core.Node", "ssh_private_key_encrypted"),
)


class SecretsError(Exception):
    """A secret cannot be stored or read; the message says what to do about it (and never holds the secret)."""


def _configured_keys() -> list[str]:
    raw = settings.EGRESS_FERNET_KEYS
    if isinstance(raw, str):
        raw = raw.split(",")
    return [k.strip() for k in raw if k and k.strip()]


def fernet() -> MultiFernet:
    """The MultiFernet built from EGRESS_FERNET_KEYS (first key encrypts)."""
    keys = _configured_keys()
    if not keys:
        raise SecretsError(
            "EGRESS_FERNET_KEYS is not set: per-host SSH keys cannot be encrypted or read. "
            "Generate a key with: python -c \"from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())\" and set EGRESS_FERNET_KEYS to it."
        )
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Never echo the key itself: it is a secret even when malformed.
            raise SecretsError(
                f"EGRESS_FERNET_KEYS entry {position} is not a valid Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
    return MultiFernet(fernets)


def encrypt(plaintext: str) -> str:
    """Ciphertext (text, safe for a TextField) of ``plaintext`` under the current key."""
    return fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise SecretsError(
            "A stored secret cannot be decrypted with any key in EGRESS_FERNET_KEYS "
            "(was the key it was encrypted with removed before running rotate_secrets?)."
        ) from None


def rotate(ciphertext: str) -> str:
    """The same secret re-encrypted under the current (first) key."""
    try:
        return fernet().rotate(ciphertext.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise SecretsError("A stored secret cannot be decrypted with any key in EGRESS_FERNET_KEYS.") from None


_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


def load_private_key(text: str) -> paramiko.PKey:
    """Parse an unencrypted private key (OpenSSH or PEM text); ValueError with a message safe to show.

    Passphrase-protected keys are refused: the workers run unattended, and the
    database copy is already encrypted at rest.
    """
    if not isinstance(text, str) or "PRIVATE KEY-----" not in text:
        raise ValueError("This is not a private key: paste the whole file, from '-----BEGIN' to '-----END ... KEY-----'.")
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text.strip() + "\n"))
        except paramiko.PasswordRequiredException:
            raise ValueError("This private key is protected by a passphrase; store a key without one.") from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError, AssertionError):
            continue
    raise ValueError("This private key cannot be read; use an ed25519, ECDSA or RSA key in OpenSSH or PEM format.")


def private_key_check(text: str) -> paramiko.PKey:
    """Everything storing a per-host private key needs, checked before anything is written: the key
    parses (load_private_key) and the server can encrypt it (EGRESS_FERNET_KEYS). ValueError or
    SecretsError with a message safe to show; the admin form, the API and the service all call this."""
    pkey = load_private_key(text)
    fernet()
    return pkey

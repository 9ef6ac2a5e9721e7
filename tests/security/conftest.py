"""Security test helpers: Fernet keys and SSH private keys made on the spot (nothing secret is checked in)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.cache import cache

# The API tests' callers (a user, a token, the header), shared rather than copied.
from tests.api.conftest import alice_api, anon, api_as, bob_api, staff_api  # noqa: F401


def new_private_key() -> str:
    """A fresh ed25519 private key in OpenSSH format, as `ssh-keygen -t ed25519` writes it."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def fernet_keys(settings) -> list[str]:
    keys = [Fernet.generate_key().decode()]
    settings.EGRESS_FERNET_KEYS = keys
    return keys


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()

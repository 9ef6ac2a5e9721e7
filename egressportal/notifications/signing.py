"""Signing webhook bodies (pure; no Django models).

Every request carries ``X-Egress-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<t>." + body)``. A receiver recomputes it over the
raw body it got, compares in constant time, and refuses timestamps older than
a few minutes (replays). The secret is ``whsec_`` + 43 url-safe characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["SIGNATURE_HEADER", "derive_secret", "sign", "signature_header", "verify"]

SIGNATURE_HEADER = "X-Egress-Signature"
DEFAULT_TOLERANCE = 300


def derive_secret(server_key: str, salt: str) -> str:
    digest = hmac.new(server_key.encode(), f"egressportal.webhook:{salt}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """What a receiver does: True only for a fresh timestamp and a matching signature."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(given, sign(secret, timestamp, body))

"""The client's address: the one rule the API throttles and the log-in limits (django-axes) both use.

X-Forwarded-For is whatever the client wrote, plus one entry per proxy it passed. Only the entries added by
proxies we run can be trusted, so the client is the entry that the outermost of ``TRUSTED_PROXIES`` proxies
added: with N trusted proxies, the N-th address from the right of X-Forwarded-For. With none (the
default), the header is ignored and the address is REMOTE_ADDR. Anything the client prepends is never read.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings

__all__ = ["client_address", "client_address_from"]


def client_address_from(remote_addr: str, forwarded_for: str | None, trusted_proxies: int) -> str:
    """Pure rule: REMOTE_ADDR with no trusted proxies; else the address the outermost trusted proxy saw.
    A malformed entry where the trusted one should be falls back to REMOTE_ADDR (that proxy's address),
    so a misconfigured chain costs precision, never safety."""
    if trusted_proxies <= 0 or not forwarded_for:
        return remote_addr
    entries = [part.strip() for part in forwarded_for.split(",") if part.strip()]
    if not entries:
        return remote_addr
    candidate = entries[-min(trusted_proxies, len(entries))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote_addr


def client_address(request: Any) -> str:
    """The client address of a Django (or DRF) request under the TRUSTED_PROXIES setting."""
    meta = request.META
    return client_address_from(
        meta.get("REMOTE_ADDR", "") or "",
        meta.get("HTTP_X_FORWARDED_FOR"),
        settings.TRUSTED_PROXIES,
    )

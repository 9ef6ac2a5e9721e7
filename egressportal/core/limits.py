"""How much a user may send in one request: one place for every cap, so the API refuses an oversized
request with a clear 4xx before any work (4,000 ranges in one request once took 6.5 s)."""

from __future__ import annotations

from django.conf import settings

__all__ = [
    "MAX_BULK_EGRESS_ITEMS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_EXCLUDED_ADDRESSES",
    "MAX_HOST_KEY_CHARS",
    "MAX_POD_CIDRS",
    "MAX_QUERY_VALUE_CHARS",
    "max_body_bytes",
]

MAX_POD_CIDRS = 64  # per node
MAX_BULK_EGRESS_ITEMS = 1000  # apps whose egress one bulk request sets
MAX_EXCLUDED_ADDRESSES = 1024  # per pool
MAX_DESCRIPTION_CHARS = 2000
MAX_HOST_KEY_CHARS = 8192  # an OpenSSH public key line (RSA 16384 bits is ~2,800 characters)
MAX_QUERY_VALUE_CHARS = 256  # any one query-string value (search, filters, ordering)


def max_body_bytes() -> int:
    """The largest request body (DATA_UPLOAD_MAX_MEMORY_SIZE, set from API_MAX_BODY_BYTES)."""
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)

"""Domain errors. Views and the API turn them into responses: input problems
(django.core.exceptions.ValidationError) into 400, conflicts into 409."""

from __future__ import annotations

__all__ = ["DomainError", "ConflictError", "PoolExhausted", "NoGatewaysAvailable", "QuotaExceeded"]


class DomainError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class ConflictError(DomainError):
    """The request is valid but the current state does not allow it (HTTP 409)."""

    status_code = 409
    code = "conflict"


class PoolExhausted(ConflictError):
    code = "pool_exhausted"


class NoGatewaysAvailable(ConflictError):
    code = "no_gateways"


class QuotaExceeded(ConflictError):
    """The tenant is at its quota (apps or dedicated addresses); nothing was created or allocated."""

    code = "quota_exceeded"

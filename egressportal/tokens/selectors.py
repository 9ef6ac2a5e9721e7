"""Reads of API tokens: a user's own tokens only, expired ones never."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import ApiToken

__all__ = ["api_token_get", "api_token_list"]


def api_token_list(*, user: Any) -> QuerySet[ApiToken]:
    """``user``'s tokens that still work, newest first (staff too see only their own: tokens are personal)."""
    if not (user and user.is_authenticated):
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user).filter(Q(expiry__isnull=True) | Q(expiry__gt=timezone.now()))


def api_token_get(*, user: Any, pk: Any) -> ApiToken:
    """One of ``user``'s tokens, or ApiToken.DoesNotExist (someone else's is the same as none)."""
    return api_token_list(user=user).get(pk=pk)

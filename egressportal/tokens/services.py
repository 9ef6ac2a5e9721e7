"""Writes of API tokens: make one (its secret is returned once and never stored), revoke one. Both audited."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from egressportal.core.services.events import event_record

from .models import ApiToken
from .selectors import api_token_list

__all__ = ["TOKEN_LIFETIME_CHOICES", "api_token_create", "api_token_revoke"]

# What the portal offers; the API and services accept any number of days up to the maximum.
TOKEN_LIFETIME_CHOICES = (7, 30, 90, 365)


def _max_days() -> int:
    return int(settings.EGRESS_API_TOKEN_MAX_DAYS)


def api_token_create(*, user: Any, name: str, days: int) -> tuple[ApiToken, str]:
    """A new token for ``user`` valid for ``days``: (row, the token). The token is in no row, log or event."""
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["Give the token a name that says what it is for, e.g. 'terraform'."]
    elif len(name) > 64:
        errors["name"] = ["At most 64 characters."]
    if not isinstance(days, int) or not 1 <= days <= _max_days():
        errors["days"] = [f"A token lives from 1 to {_max_days()} days."]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        mine = api_token_list(user=user)
        if mine.filter(name=name).exists():
            raise ValidationError({"name": [f"You already have a token named '{name}'; revoke it or pick another name."]})
        # Expired tokens are gone for good (their names are free again).
        ApiToken.objects.filter(user=user, expiry__lte=timezone.now()).delete()
        limit = int(settings.EGRESS_API_TOKENS_PER_USER)
        if mine.count() >= limit:
            raise ValidationError({"name": [f"You have {limit} tokens, the most allowed; revoke one you no longer use."]})
        token, secret = ApiToken.objects.create(user=user, expiry=dt.timedelta(days=days), name=name)
        event_record(
            kind="token.created",
            message=f"API token '{name}' created, valid until {token.expiry:%Y-%m-%d %H:%M} UTC.",
            actor=user,
            subject=f"{user.get_username()}: {name}"[:200],
            data={"name": name, "days": days, "expiry": token.expiry.isoformat()},
        )
    return token, secret


def api_token_revoke(*, token: ApiToken, actor: Any) -> None:
    """The token stops working at once."""
    owner, name = token.user, token.name
    with transaction.atomic():
        token.delete()
        event_record(
            kind="token.revoked",
            message=f"API token '{name}' of {owner.get_username()} revoked.",
            actor=actor,
            subject=f"{owner.get_username()}: {name}"[:200],
            data={"name": name, "revoked_at": timezone.now().isoformat()},
        )

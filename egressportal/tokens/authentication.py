"""Token authentication: knox's (hashed, expiring tokens) under the same header as before,
``Authorization: Token <token>``, plus two things of ours: a token of the retired kind gets a 401 saying what
to do, and each token records when it was last used (at most once a minute, so reads stay reads)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.settings import knox_settings
from rest_framework import exceptions

from .models import ApiToken

__all__ = ["RETIRED_TOKEN_MESSAGE", "TokenAuthentication"]

# DRF's old tokens: 40 hex digits, stored in clear (and readable by staff). They were retired, not migrated.
_RETIRED_SHAPE = re.compile(r"^[0-9a-f]{40}$")
RETIRED_TOKEN_MESSAGE = (
    "This API token is of the old kind, which was retired: tokens are now stored hashed and expire. "  # noqa: S105 - a message, not a secret
    "Create a new one in the portal under 'API tokens' (/tokens/) and use it in the same header."
)
_LAST_USED_EVERY = dt.timedelta(minutes=1)


class TokenAuthentication(KnoxTokenAuthentication):
    def authenticate_credentials(self, token: bytes) -> tuple[Any, ApiToken]:
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None  # knox would let it become a 500
        if not text.startswith(knox_settings.TOKEN_PREFIX) and _RETIRED_SHAPE.match(text):
            raise exceptions.AuthenticationFailed(RETIRED_TOKEN_MESSAGE)
        user, auth_token = super().authenticate_credentials(token)
        now = timezone.now()
        if auth_token.last_used_at is None or now - auth_token.last_used_at > _LAST_USED_EVERY:
            ApiToken.objects.filter(pk=auth_token.pk).update(last_used_at=now)
        return user, auth_token

    def _cleanup_token(self, auth_token: ApiToken) -> bool:
        # knox also sweeps the user's other expired tokens here, one more query on every request; ours are
        # purged when the user makes a token (services.api_token_create) and never listed once expired.
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            auth_token.delete()
            return True
        return False

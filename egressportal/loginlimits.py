"""Log-in limits (django-axes) per username *and* address, and per address alone.

django-axes counts failures per lockout parameter but compares them all to one limit. Password spraying
(a few guesses for each of many users from one address) never reaches the per-(username, address) limit,
so the address has a limit of its own, AXES_IP_FAILURE_LIMIT (larger: many people may share an address).
This handler reports the failures that count as the larger of the pair's count and the address's count in
units of the pair's limit, so axes' single comparison applies both limits exactly. A successful log-in
clears only that user's own failures from that address: logging in to an account one owns must not wipe
the address's record of guesses at other accounts.
"""

from __future__ import annotations

from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import QuerySet, Sum

__all__ = ["LoginLimitHandler", "failures_that_count"]


def failures_that_count(*, pair_failures: int, address_failures: int, pair_limit: int, address_limit: int) -> int:
    """The count axes compares with ``pair_limit``: reaching it means either limit is reached.
    (address_failures * pair_limit // address_limit >= pair_limit exactly when address_failures >= address_limit.)"""
    return max(pair_failures, address_failures * pair_limit // max(1, address_limit))


class LoginLimitHandler(AxesDatabaseHandler):
    def _recent(self, request: Any) -> QuerySet[AccessAttempt]:
        qs = AccessAttempt.objects.filter(ip_address=request.axes_ip_address)
        if settings.AXES_COOLOFF_TIME is not None:
            qs = qs.filter(attempt_time__gte=get_cool_off_threshold(request))
        return qs

    def get_failures(self, request: Any, credentials: dict | None = None) -> int:
        address = self._recent(request)
        username = get_client_username(request, credentials)
        total = lambda qs: qs.aggregate(n=Sum("failures_since_start"))["n"] or 0  # noqa: E731
        return failures_that_count(
            pair_failures=total(address.filter(username=username)),
            address_failures=total(address),
            pair_limit=get_failure_limit(request, credentials),
            address_limit=int(settings.AXES_IP_FAILURE_LIMIT),
        )

    def reset_user_attempts(self, request: Any, credentials: dict | None = None) -> int:
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(ip_address=request.axes_ip_address, username=username).delete()
        return count

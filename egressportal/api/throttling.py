"""Throttles whose rates are read from settings at request time, keyed on the trusted client address, with
a constant cost per request whatever the rate.

DRF's stock throttles copy DEFAULT_THROTTLE_RATES into a class attribute at import, so a changed setting
(an operator's environment, a test) would be ignored; these read the current value each time. They also
keep, per client, the list of every request time in the window and read and write it whole on each
request: at the default 6,000/min a busy automation client's list holds thousands of floats, so each of
its requests moved tens of kilobytes through the cache. These count instead: a sliding window estimated
from two fixed windows (the current one's count plus the previous one's, weighted by how much of it still
overlaps the sliding window), a few bytes per client and three small cache operations per request.
"""

from typing import Any

from django.core.cache import cache as default_cache
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from egressportal.clientaddr import client_address

__all__ = ["AnonThrottle", "UserThrottle", "sliding_count"]


def sliding_count(previous: int, current: int, elapsed_fraction: float) -> float:
    """Requests in the sliding window that ends now, estimated from the previous fixed window's count and
    the current one's (``elapsed_fraction``: how far into the current window we are, 0 to 1)."""
    return previous * (1.0 - elapsed_fraction) + current


class _RateFromSettings:
    scope: str
    cache = default_cache

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident(self, request: Any) -> str:
        # DRF's own reads X-Forwarded-For when NUM_PROXIES is unset: any client could pick its bucket.
        return client_address(request)

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:  # type: ignore[attr-defined]
            return True
        self.key = self.get_cache_key(request, view)  # type: ignore[attr-defined]
        if self.key is None:
            return True
        limit, duration = self.num_requests, self.duration  # type: ignore[attr-defined]
        now = self.timer()  # type: ignore[attr-defined]
        window = int(now // duration)
        current_key, previous_key = f"{self.key}:{window}", f"{self.key}:{window - 1}"
        # Kept for two windows: the next window still weighs this one.
        self.cache.add(current_key, 0, 2 * duration)
        try:
            current = self.cache.incr(current_key)
        except ValueError:  # expired between add and incr
            self.cache.set(current_key, 1, 2 * duration)
            current = 1
        previous = self.cache.get(previous_key, 0)
        self.elapsed = (now - window * duration) / duration
        self.estimate = sliding_count(previous, current, self.elapsed)
        if self.estimate <= limit:
            return True
        # A refused request does not count against the client (as with DRF's own throttles).
        self.cache.decr(current_key)
        return False

    def wait(self) -> float | None:
        """Seconds until the estimate is back under the limit: the previous window's weight fades linearly
        over the current window, so at worst the end of the current window."""
        return max(1.0, (1.0 - self.elapsed) * self.duration)  # type: ignore[attr-defined]


class AnonThrottle(_RateFromSettings, AnonRateThrottle):
    pass


class UserThrottle(_RateFromSettings, UserRateThrottle):
    pass

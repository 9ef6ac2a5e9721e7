"""Throttles whose rates are read from settings at request time, keyed on the trusted client address.

DRF's stock throttles copy DEFAULT_THROTTLE_RATES into a class attribute at
import, so a changed setting (an operator's environment, a test) would be
ignored; these read the current value each time.
"""

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from egressportal.clientaddr import client_address

__all__ = ["AnonThrottle", "UserThrottle"]


class _RateFromSettings:
    scope: str

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident(self, request: Any) -> str:
        # DRF's own reads X-Forwarded-For when NUM_PROXIES is unset: any client could pick its bucket.
        return client_address(request)


class AnonThrottle(_RateFromSettings, AnonRateThrottle):
    pass


class UserThrottle(_RateFromSettings, UserRateThrottle):
    pass

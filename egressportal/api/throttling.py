"""Throttles whose rates are read from settings at request time.

DRF's stock throttles copy DEFAULT_THROTTLE_RATES into a class attribute at
import, so a changed setting (an operator's environment, a test) would be
ignored; these read the current value each time.
"""

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

__all__ = ["AnonThrottle", "UserThrottle"]


class _RateFromSettings:
    scope: str

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(_RateFromSettings, AnonRateThrottle):
    pass


class UserThrottle(_RateFromSettings, UserRateThrottle):
    pass

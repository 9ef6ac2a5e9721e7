"""'Which address does the internet see for this app?' for apps that live in
the lab: curl from the app's namespace to the lab's echo server. Only
available where the portal runs next to a lab (EGRESS_LAB_PREFIX, as root).

The lab is worker-side tooling (workers/lab) and the portal never imports the
workers: the workers' Django app registers how to find a lab
(``lab_locator_set``, from workers/apps.py) when Django starts."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from .models import App
from .selectors import app_address_rows

__all__ = ["EgressCheck", "LabView", "lab_for_portal", "lab_app_available", "lab_locator_set", "egress_check"]


class LabView(Protocol):
    """What the check needs of a lab (workers.lab.Lab is one)."""

    @property
    def apps(self) -> Mapping[str, Any]: ...

    def seen_ip(self, name: str, *, timeout: float) -> str | None: ...

    # Optional: the same over IPv6 (None when the app has no IPv6 in the lab); a lab without it is IPv4 only.
    # def seen_ip6(self, name: str, *, timeout: float) -> str | None: ...


_locator: Callable[[str], LabView | None] | None = None


def lab_locator_set(locator: Callable[[str], LabView | None] | None) -> None:
    """Register how to find the running lab of a prefix (None: there is no lab tooling)."""
    global _locator
    _locator = locator


@dataclass(frozen=True)
class EgressCheck:
    seen: str | None
    active: str | None
    dedicated: bool
    error: str = ""
    # IPv6: what the echo server saw over IPv6 (None: not checked, or the app has no IPv6 there) and the
    # app's IPv6 address that should carry it (the partner of ``active``).
    seen6: str | None = None
    active6: str | None = None

    @property
    def matches(self) -> bool:
        return bool(self.seen and self.active and self.seen == self.active)

    @property
    def matches6(self) -> bool:
        return bool(self.seen6 and self.active6 and self.seen6 == self.active6)

    @property
    def all_match(self) -> bool:
        """Every family checked sees the dedicated address."""
        return self.matches and (self.seen6 is None or self.matches6)

    @property
    def summary(self) -> str:
        if self.error:
            return f"Could not check: {self.error}"
        return " ".join(s for s in (self._summary4(), self._summary6()) if s)

    def _summary4(self) -> str:
        if not self.dedicated:
            return f"The internet sees {self.seen}: the shared address of the node running the app."
        if self.matches:
            return f"The internet sees {self.seen}: this app's dedicated address."
        return f"The internet sees {self.seen}, not the dedicated address {self.active} that should carry its traffic (yet)."

    def _summary6(self) -> str:
        if self.seen6 is None:
            return ""
        if not self.dedicated or not self.active6:
            return f"Over IPv6 it sees {self.seen6}: the node's shared IPv6 address."
        if self.matches6:
            return f"Over IPv6 it sees {self.seen6}: this app's dedicated IPv6 address."
        return f"Over IPv6 it sees {self.seen6}, not the dedicated IPv6 address {self.active6} (yet)."


def lab_for_portal() -> LabView | None:
    prefix = settings.EGRESS_LAB_PREFIX
    if not prefix or os.geteuid() != 0 or _locator is None:
        return None
    return _locator(prefix)


def lab_app_available(app: App) -> bool:
    lab = lab_for_portal()
    return bool(lab and app.name in lab.apps)


def egress_check(app: App) -> EgressCheck:
    rows = [r for r in app_address_rows(app) if r.state != "reserved"]
    row = next((r for r in rows if r.state == "in_use"), None) or next((r for r in rows if r.role == "active"), None)
    active, active6 = (row.address, row.address6) if row else (None, None)
    lab = lab_for_portal()
    if lab is None or app.name not in lab.apps:
        return EgressCheck(None, active, app.is_dedicated, "this app does not run in the lab", active6=active6)
    try:
        seen = lab.seen_ip(app.name, timeout=3.0)
        # Both families where the lab speaks IPv6 (workers/lab: seen_ip6); else IPv4 alone.
        seen_ip6 = getattr(lab, "seen_ip6", None)
        seen6 = seen_ip6(app.name, timeout=3.0) if seen_ip6 is not None else None
    except Exception as exc:  # the check is informative; its failure is reported, not raised
        return EgressCheck(None, active, app.is_dedicated, str(exc)[:200], active6=active6)
    return EgressCheck(seen, active, app.is_dedicated, seen6=seen6, active6=active6)

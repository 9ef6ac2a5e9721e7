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

    @property
    def matches(self) -> bool:
        return bool(self.seen and self.active and self.seen == self.active)

    @property
    def summary(self) -> str:
        if self.error:
            return f"Could not check: {self.error}"
        if not self.dedicated:
            return f"The internet sees {self.seen}: the shared address of the node running the app."
        if self.matches:
            return f"The internet sees {self.seen}: this app's dedicated address."
        return f"The internet sees {self.seen}, not the dedicated address {self.active} that should carry its traffic (yet)."


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
    carrying = next((r.address for r in rows if r.state == "in_use"), None)
    active = carrying or next((r.address for r in rows if r.role == "active"), None)
    lab = lab_for_portal()
    if lab is None or app.name not in lab.apps:
        return EgressCheck(None, active, app.is_dedicated, "this app does not run in the lab")
    try:
        seen = lab.seen_ip(app.name, timeout=3.0)
    except Exception as exc:  # the check is informative; its failure is reported, not raised
        return EgressCheck(None, active, app.is_dedicated, str(exc)[:200])
    return EgressCheck(seen, active, app.is_dedicated)

"""Signals the domain sends for other parts of the product to act on, without
the domain knowing them (the notifications app listens to these)."""

from __future__ import annotations

from typing import Any, NamedTuple

from django.dispatch import Signal

__all__ = ["StatusChange", "egress_status_changed"]


class StatusChange(NamedTuple):
    """One app's egress status changed from ``old_status`` to ``new_status`` (with ``message``)."""

    app: Any  # models.App (the row as just written)
    old_status: str
    new_status: str
    message: str = ""


# Sent inside the transaction that writes apps' new egress statuses, once per write (of one app or of
# many at once), with the apps whose status itself changed: kwargs ``changes``, a list of StatusChange,
# each app once. Never sent with an empty list.
egress_status_changed = Signal()

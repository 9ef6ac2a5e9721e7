"""Signals the domain sends for other parts of the product to act on, without
the domain knowing them (the notifications app listens to these)."""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["egress_status_changed"]

# Sent inside the transaction that writes an app's new egress status, only when
# the status itself changes: kwargs app, old_status, new_status, message.
egress_status_changed = Signal()

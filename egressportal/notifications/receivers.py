"""The domain's signals, turned into notifications."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction

from egressportal.core.signals import StatusChange

from .services import notifications_apps_status_changed

logger = logging.getLogger(__name__)


def on_egress_status_changed(sender: Any, *, changes: Sequence[StatusChange], **_: Any) -> None:
    try:
        # A savepoint: a failure here rolls back only the notification rows, never the status changes.
        with transaction.atomic():
            notifications_apps_status_changed(changes=changes)
    except Exception:  # a notification never undoes a status change; the failure is logged
        logger.exception("could not queue notifications for apps %s", [c.app.pk for c in changes][:20])
